"""Timing pieces and what the machine is: run timing, the memory floor, CPU and BLAS."""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ... import _core
from ...core.kernel import (
    available_cores,
    kernel_info,
)
from ...core.version import __version__


# ---------------------------------------------------------------------- timing pieces
def time_runs(fn: Callable[[], object], repeat: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``fn`` (wall clock) after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def memory_floor(
    outs: Sequence[np.ndarray], threads: int | None, repeat: int, warmup: int = 1
) -> list[float]:
    """Seconds per run to zero every array of ``outs`` with the kernel's threaded memset.

    The memory-bound floor of gridding into those same preallocated float32 buffers:
    a kernel cannot write its output faster than this.
    """
    n = 0 if threads is None else int(threads)

    def zero() -> None:
        for out in outs:
            _core.zero_fill(out, n)

    return time_runs(zero, repeat, warmup)


# ---------------------------------------------------------------------- machine
def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, else :mod:`platform`)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_header(implementations: Sequence[str] = ()) -> dict[str, Any]:
    """CPU, cores, ISA detected and used, compiler + flags, versions, date, load."""
    info = kernel_info()
    header: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": available_cores(),
        "isa_detected": info["best_isa"],
        "isa_available": info["available_isas"],
        "isa_default": info["isa"],
        "implementations": list(implementations),
        "compiler": info["compiler"],
        "flags": info["flags"].strip(),
        "pgrid_version": __version__,
        "numpy_version": np.__version__,
        "blas": _blas(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if hasattr(os, "getloadavg"):
        header["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return header


def _blas() -> str:
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{cfg.get('name', '?')} {cfg.get('version', '')}".strip()
    except Exception:  # the layout of numpy's build report is not a stable API
        return "unknown"
