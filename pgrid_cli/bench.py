"""Benchmark: how fast pgrid grids on this machine, and whether the fast paths are right.

:func:`run_sweep` (what ``pgrid bench`` runs) grids real structures for every combination
of grid size × σ × channel set × thread count, with every implementation side by side:
the native kernel on each instruction-set path the CPU has (``avx512``, ``avx2``,
``scalar``, forced through :func:`~pgrid_cli.render_batch`'s ``isa``) and the float64
NumPy reference (:func:`~pgrid_cli.reference.reference_grid`).

What one *cell* (implementation, threads, grid size n, σ, channels) measures
---------------------------------------------------------------------------
* The structures are gridded in batches into one preallocated (B, C, n, n, n) float32
  buffer of at most ``batch_mb`` MiB (as a data loader or ``pgrid grid`` would do); one
  *run* grids every structure once. After one warm-up run, ``repeat`` runs are timed
  in-process with :func:`time.perf_counter`: the cell reports the median and the min–max.
* ``structures_per_s`` (molecules/s), ``ns_per_voxel`` = run time / (structures · C · n³).
* ``nonzero_fraction``: the fraction of output voxels that are not exactly 0 (counted
  on the warm-up run).
* ``floor_ratio``: run time / the time to zero the very same buffers with the kernel's
  threaded memset (:func:`memory_floor`, same thread count): the memory-bound floor, 1.0
  being as fast as writing the output can be.
* ``speedup_vs_scalar`` (same threads), ``speedup_vs_numpy`` and ``speedup_vs_1_thread``
  (same implementation): ratios of median times per structure measured in the same run.

The NumPy reference is timed on a subset of the structures spread evenly over the input:
a first pass grids them one by one, in :func:`spread_order`, until it has spent one run's
share of ``numpy_budget`` (budget / repeat); then that subset gets a warm-up run and
``repeat`` timed runs, so the timed runs take about ``numpy_budget`` seconds. Where one
structure alone would exceed that share, or the time scaled from the largest grid measured
so far would, the cell is skipped and :attr:`BenchResult.skipped` says why. The whole sweep
holds NumPy's BLAS to one thread (threadpoolctl): OpenBLAS threads otherwise keep spinning
on the cores after each call and halve the kernel's two-thread rates measured after them.
NumPy cells are therefore single-threaded (``threads = 1``).

Verification before timing
--------------------------
For every grid size × σ × channels, a few structures (``verify``, evenly spread) are
gridded by every native implementation at every thread count and compared with the
float64 reference: SPEC §3 allows 1e-6 absolute for orthogonal boxes and 1e-4 · max for
triclinic cells. Any larger error raises :class:`VerificationError` before anything is
timed: a fast wrong answer is not a result. The NumPy implementation *is* the reference.

``end_to_end`` also times ``pgrid grid``'s whole pipeline (:func:`run_end_to_end`):
file → shards, with its CPU time split into parse / grid / compress / write.

Results are a :class:`BenchResult` (JSON: :meth:`BenchResult.to_json`, schema
``pgrid-bench`` version 1; CSV: :meth:`BenchResult.write_csv`; figure: :func:`plot_result`).
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from . import __version__, _core
from .box import normalize_shape
from .channels import ChannelSpec, UnknownElementError
from .grid import ISA_NAMES, Batch, available_isas, kernel_info, render_batch
from .io import OUTSIDE_BOX, UNKNOWN_ELEMENT, Rejection, Structure, expand_inputs, iter_records
from .preprocess import GridOptions, available_cores, grid_files
from .reference import reference_structure
from .shards import write_json

SCHEMA = "pgrid-bench"
SCHEMA_VERSION = 1
#: Name of the NumPy (float64 reference) implementation.
NUMPY = "numpy"
#: SPEC §3 accuracy: absolute for orthogonal boxes, relative to the grid's max otherwise.
ORTHOGONAL_TOLERANCE = 1e-6
TRICLINIC_TOLERANCE = 1e-4
#: The default input, looked up in ./sample_data and in pgrid's source tree.
DEFAULT_SAMPLE = Path("sample_data") / "drugs.sdf"
#: End-to-end runs use the σ of the sweep closest to ``pgrid grid``'s default.
END_TO_END_SIGMA = 0.5

#: ``render(batch, out, threads)`` fills ``out`` (B, C, n, n, n) float32.
Render = Callable[[Batch, np.ndarray, "int | None"], None]
#: ``progress(done, total, what)`` is called as the sweep advances.
ProgressFn = Callable[[int, int, str], None]


class VerificationError(ValueError):
    """An implementation disagrees with the float64 reference beyond SPEC §3's tolerance."""


# ---------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class BenchConfig:
    """What :func:`run_sweep` measures. Empty tuples mean "the default" (see resolved()).

    Attributes
    ----------
    inputs : files / directories / globs any ``pgrid grid`` input form; default
        ``sample_data/drugs.sdf`` (126 drug-like molecules with hydrogens)
    grid_sizes : voxels per axis n (grids are n³)
    sigmas : Gaussian standard deviations, Å
    channels : channel sets (``single``, ``elements`` or a list such as ``C,H,N,O,*``)
    threads : kernel thread counts; default (1, every available core)
    box : molecule box, ``fit``, ``tight`` or ``cube:L`` (L in Å); crystals use their cell
    padding : Å, for ``fit`` and ``tight``
    implementations : any of ``avx512``, ``avx2``, ``scalar``, ``numpy``; default every
        instruction-set path this CPU runs, and NumPy
    repeat : timed runs per cell (after one warm-up run)
    limit : use only the first ``limit`` structures of the input
    verify : structures per setting checked against the reference before timing
    numpy_budget : seconds the timed NumPy runs may take per cell (0 skips NumPy); the
        pass that picks its subset and its warm-up run take about 2 / repeat of that more
    batch_mb : largest output buffer, MiB (structures are gridded in batches that fit)
    format : read every input as ``xyz``, ``sdf`` or ``cif`` (default: by extension)
    end_to_end : also time ``pgrid grid`` file → shards (see :func:`run_end_to_end`)
    scratch : directory for the end-to-end shards (default: the system's temp dir)
    """

    inputs: tuple[str, ...] = ()
    grid_sizes: tuple[int, ...] = (16, 32, 64, 128)
    sigmas: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    channels: tuple[str, ...] = ("single", "elements")
    threads: tuple[int, ...] = ()
    box: str = "fit"
    padding: float = 2.0
    implementations: tuple[str, ...] = ()
    repeat: int = 5
    limit: int | None = None
    verify: int = 3
    numpy_budget: float = 3.0
    batch_mb: float = 256.0
    format: str | None = None
    end_to_end: bool = False
    scratch: str | None = None

    @classmethod
    def quick(cls, **changes: Any) -> BenchConfig:
        """A small sweep for a first look (about 30 s on a loaded 2-core machine)."""
        base = cls(
            grid_sizes=(16, 32, 64),
            sigmas=(0.5,),
            limit=32,
            repeat=3,
            numpy_budget=1.0,
        )
        return replace(base, **changes)

    def resolved(self) -> BenchConfig:
        """Validated, with every default filled in; ValueError with a specific message."""
        grid_sizes = _unique(_positive_int(n, "grid size") for n in self.grid_sizes)
        for n in grid_sizes:
            normalize_shape(n)
        sigmas = _unique(_positive_float(s, "sigma (Å)") for s in self.sigmas)
        specs: dict[tuple[str, ...], str] = {}
        for text in self.channels:
            names = ChannelSpec.parse(text).names
            specs.setdefault(names, text.strip())
        threads = self.threads or (1, available_cores())
        threads = _unique(_positive_int(t, "thread count") for t in threads)
        # box, padding and format mean what they mean for pgrid grid: same checks
        grid = GridOptions(box=self.box, padding=self.padding, format=self.format).resolve()
        impls = _implementation_names(self.implementations)
        if int(self.repeat) < 1:
            raise ValueError(f"repeat must be at least 1, got {self.repeat}")
        if int(self.verify) < 1:
            raise ValueError(
                f"verify must be at least 1 (every implementation is checked before it is "
                f"timed), got {self.verify}"
            )
        if self.limit is not None and int(self.limit) < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        if not (math.isfinite(self.numpy_budget) and self.numpy_budget >= 0):
            raise ValueError(f"numpy budget must be 0 or more seconds, got {self.numpy_budget}")
        if not (math.isfinite(self.batch_mb) and self.batch_mb > 0):
            raise ValueError(f"batch size must be a positive number of MiB, got {self.batch_mb}")
        if self.scratch is not None and not Path(self.scratch).is_dir():
            raise ValueError(f"scratch directory {self.scratch} does not exist")
        inputs = tuple(str(i) for i in self.inputs) or (str(default_input()),)
        return replace(
            self,
            inputs=inputs,
            grid_sizes=grid_sizes,
            sigmas=sigmas,
            channels=tuple(specs.values()),
            threads=threads,
            box=grid.box,
            padding=grid.padding,
            format=grid.format,
            implementations=impls,
            repeat=int(self.repeat),
            verify=int(self.verify),
            limit=None if self.limit is None else int(self.limit),
            numpy_budget=float(self.numpy_budget),
            batch_mb=float(self.batch_mb),
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _unique(values: Iterable[Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    if not out:
        raise ValueError("every sweep list needs at least one value")
    return tuple(out)


def _positive_int(value: Any, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a whole number, got {value!r}") from None
    if n != value and not (isinstance(value, str) and value.strip() == str(n)):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    if n < 1:
        raise ValueError(f"{what} must be at least 1, got {n}")
    return n


def _positive_float(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{what} must be positive, got {value!r}")
    return x


def _implementation_names(names: Sequence[str]) -> tuple[str, ...]:
    """Fastest first: the native paths (best ISA first), then NumPy."""
    supported = available_isas()
    if not names:
        return (*reversed(supported), NUMPY)
    wanted = []
    for raw in names:
        name = raw.strip().lower()
        if name == NUMPY:
            wanted.append(name)
            continue
        if name not in ISA_NAMES:
            raise ValueError(
                f"unknown implementation {raw!r}: use {', '.join(ISA_NAMES)} or {NUMPY}"
            )
        if name not in supported:
            raise ValueError(
                f"this CPU cannot run the {name} path (it supports {', '.join(supported)})"
            )
        wanted.append(name)
    order = [*reversed(ISA_NAMES), NUMPY]
    return tuple(sorted(set(wanted), key=order.index))


def default_input() -> Path:
    """``sample_data/drugs.sdf`` here, or in the source tree pgrid was installed from."""
    if DEFAULT_SAMPLE.is_file():
        return DEFAULT_SAMPLE
    source_tree = Path(__file__).resolve().parents[1] / DEFAULT_SAMPLE
    if source_tree.is_file():
        return source_tree
    raise ValueError(
        f"no input given and {DEFAULT_SAMPLE} was not found (it ships with pgrid's source "
        f"tree): pass a molecule file, e.g. pgrid bench molecules.xyz"
    )


# ---------------------------------------------------------------------- results
@dataclass
class Cell:
    """One measured setting. Times are seconds per run (every structure gridded once).

    ``floor_times`` are the runs of :func:`memory_floor` on the buffers of
    ``floor_structures`` structures (all of them for native cells; NumPy, timed on a
    subset, compares per structure).
    """

    implementation: str
    threads: int | None  #: threads used (NumPy: 1, its BLAS held to one thread)
    grid_size: int
    sigma: float  #: Å
    channels: str
    n_channels: int
    structures: int
    atoms: int
    times: list[float]
    floor_times: list[float]
    floor_structures: int
    nonzero_fraction: float
    speedup_vs_scalar: float | None = None
    speedup_vs_numpy: float | None = None
    speedup_vs_1_thread: float | None = None

    @property
    def key(self) -> tuple[str, int | None, int, float, str]:
        return (self.implementation, self.threads, self.grid_size, self.sigma, self.channels)

    @property
    def voxels(self) -> int:
        """Voxels written per run: structures · C · n³."""
        return self.structures * self.n_channels * self.grid_size**3

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    @property
    def seconds_per_structure(self) -> float:
        return self.median_s / self.structures

    @property
    def structures_per_s(self) -> float:
        """Median throughput, structures (molecules) per second."""
        return self.structures / self.median_s

    @property
    def structures_per_s_range(self) -> tuple[float, float]:
        """(min, max) throughput over the timed runs."""
        return self.structures / max(self.times), self.structures / min(self.times)

    @property
    def ns_per_voxel(self) -> float:
        return self.median_s / self.voxels * 1e9

    @property
    def floor_s_per_structure(self) -> float:
        return statistics.median(self.floor_times) / self.floor_structures

    @property
    def floor_ratio(self) -> float:
        """Time / the time to zero the same output (1 = as fast as memset)."""
        return self.seconds_per_structure / self.floor_s_per_structure

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        lo, hi = self.structures_per_s_range
        d.update(
            structures_per_s=self.structures_per_s,
            structures_per_s_min=lo,
            structures_per_s_max=hi,
            median_s=self.median_s,
            ns_per_voxel=self.ns_per_voxel,
            floor_ratio=self.floor_ratio,
        )
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass
class Skip:
    """A cell that was not measured, and why."""

    implementation: str
    threads: int | None
    grid_size: int
    sigma: float
    channels: str
    reason: str


@dataclass
class Check:
    """Verification of one implementation against the float64 reference (one setting).

    ``worst_ratio`` is the largest error / tolerance over the structures checked (≤ 1
    passes); ``max_abs_error`` the largest absolute error.
    """

    implementation: str
    threads: int
    grid_size: int
    sigma: float
    channels: str
    structures: list[str]
    max_abs_error: float
    worst_ratio: float


@dataclass
class EndToEnd:
    """One ``pgrid grid`` run: file → shards. ``stages`` are CPU seconds summed over the
    worker processes (parse = cut records + parse, grid, compress = round + encode,
    write), ``seconds`` the wall time of the whole run."""

    grid_size: int
    sigma: float
    channels: str
    structures: int
    rejected: int
    seconds: float
    stages: dict[str, float]
    bytes_per_structure: float
    workers: int
    threads: int

    @property
    def structures_per_s(self) -> float:
        return self.structures / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "structures_per_s": self.structures_per_s}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EndToEnd:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass
class BenchResult:
    """Everything a sweep measured, with the machine and the input it ran on."""

    header: dict[str, Any]
    config: dict[str, Any]
    input: dict[str, Any]
    cells: list[Cell] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    end_to_end: list[EndToEnd] = field(default_factory=list)
    command: str = ""
    seconds: float = 0.0

    def cell(
        self, implementation: str, threads: int | None, grid_size: int, sigma: float, channels: str
    ) -> Cell | None:
        key = (implementation, threads, grid_size, sigma, channels)
        return next((c for c in self.cells if c.key == key), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "seconds": self.seconds,
            "header": self.header,
            "config": self.config,
            "input": self.input,
            "cells": [c.to_json() for c in self.cells],
            "skipped": [asdict(s) for s in self.skipped],
            "checks": [asdict(c) for c in self.checks],
            "end_to_end": [e.to_json() for e in self.end_to_end],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BenchResult:
        if d.get("schema") != SCHEMA or d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"not a {SCHEMA} version {SCHEMA_VERSION} result "
                f"(schema {d.get('schema')!r}, version {d.get('schema_version')!r})"
            )
        return cls(
            header=d["header"],
            config=d["config"],
            input=d["input"],
            cells=[Cell.from_json(c) for c in d["cells"]],
            skipped=[Skip(**s) for s in d["skipped"]],
            checks=[Check(**c) for c in d["checks"]],
            end_to_end=[EndToEnd.from_json(e) for e in d["end_to_end"]],
            command=d.get("command", ""),
            seconds=float(d.get("seconds", 0.0)),
        )

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` atomically; returns the path."""
        out = Path(path)
        write_json(out, self.to_json())
        return out

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """One row per cell (measured or skipped), the columns of :data:`CSV_COLUMNS`."""
        out = Path(path)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            w.writeheader()
            for c in self.cells:
                d = c.to_json()
                w.writerow({k: _csv_value(d.get(k)) for k in CSV_COLUMNS})
            for s in self.skipped:
                w.writerow({k: _csv_value(v) for k, v in asdict(s).items() if k in CSV_COLUMNS})
        os.replace(tmp, out)
        return out


CSV_COLUMNS = [
    "implementation",
    "threads",
    "grid_size",
    "sigma",
    "channels",
    "n_channels",
    "structures",
    "structures_per_s",
    "structures_per_s_min",
    "structures_per_s_max",
    "median_s",
    "ns_per_voxel",
    "nonzero_fraction",
    "floor_ratio",
    "speedup_vs_scalar",
    "speedup_vs_numpy",
    "speedup_vs_1_thread",
    "reason",
]


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


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


# ---------------------------------------------------------------------- input
def load_structures(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    channels: Sequence[str] = ("single",),
    box: str = "fit",
    padding: float = 2.0,
    format: str | None = None,
    limit: int | None = None,
) -> tuple[list[Structure], list[Rejection]]:
    """Read structures as ``pgrid grid`` does; those it cannot bench are rejections.

    A record is rejected when the reader rejects it, when one of ``channels`` has no
    channel for one of its elements, or when no ``box`` can be built around it. Reading
    stops after ``limit`` structures.
    """
    specs = [ChannelSpec.parse(c) for c in channels]
    kept: list[Structure] = []
    rejected: list[Rejection] = []
    for path in expand_inputs(inputs):
        for item in iter_records(path, format):
            why = item if isinstance(item, Rejection) else _unbenchable(item, specs, box, padding)
            if why is not None:
                rejected.append(why)
                continue
            kept.append(item)  # type: ignore[arg-type]
            if limit is not None and len(kept) >= limit:
                return kept, rejected
    return kept, rejected


def _unbenchable(
    s: Structure, specs: Sequence[ChannelSpec], box: str, padding: float
) -> Rejection | None:
    for spec in specs:
        try:
            spec.assign(s.numbers)
        except UnknownElementError as exc:
            return Rejection(s.source, s.record, s.name, str(exc), UNKNOWN_ELEMENT)
    try:
        s.box(box, 2, padding)
    except ValueError as exc:
        return Rejection(s.source, s.record, s.name, f"no {box} box: {exc}", OUTSIDE_BOX)
    return None


class Prepared:
    """Structures ready to grid at one grid size n and channel set: their boxes (built
    once, Å) and per-atom channels; :meth:`batch` makes kernel batches at any σ."""

    def __init__(
        self, structures: Sequence[Structure], n: int, spec: ChannelSpec, box: str, padding: float
    ) -> None:
        self.structures = structures
        self.n = n
        self.n_channels = spec.n_channels
        self.boxes = [s.box(box, n, padding) for s in structures]
        self.chans = [spec.assign(s.numbers) for s in structures]
        self.weighted = any(s.weights is not None for s in structures)

    def batch(self, index: Sequence[int] | slice, sigma: float) -> Batch:
        """The structures ``index`` (indices or a slice) at width ``sigma`` (Å)."""
        idx = range(len(self.structures))[index] if isinstance(index, slice) else index
        ss = [self.structures[i] for i in idx]
        return Batch.from_structures(
            [s.positions for s in ss],
            [self.boxes[i] for i in idx],
            sigma,
            channels=[self.chans[i] for i in idx],
            n_channels=self.n_channels,
            weights=[s.weights if s.weights is not None else np.ones(len(s)) for s in ss]
            if self.weighted
            else None,
        )


def spread_order(n: int) -> Iterator[int]:
    """Every index of ``range(n)`` once, in an order whose every prefix is spread evenly
    over the range (the van der Corput sequence): a sample that can stop at any point."""
    seen: set[int] = set()
    i = 0
    while len(seen) < n:
        x, f, k = 0.0, 0.5, i
        while k:
            x += f * (k & 1)
            k >>= 1
            f /= 2
        j = int(x * n)
        if j not in seen:
            seen.add(j)
            yield j
        i += 1


def spread(n: int, k: int) -> list[int]:
    """``k`` indices evenly spread over ``range(n)`` (all of them when k ≥ n)."""
    if k >= n:
        return list(range(n))
    return sorted({round(x) for x in np.linspace(0, n - 1, k)})


# ---------------------------------------------------------------------- implementations
def native(isa: str) -> Render:
    """The kernel forced onto one instruction-set path."""

    def run(batch: Batch, out: np.ndarray, threads: int | None) -> None:
        render_batch(batch, out, threads=threads, isa=isa)  # looked up at call time

    return run


def numpy_render(batch: Batch, out: np.ndarray, threads: int | None = None) -> None:
    """The NumPy implementation: the float64 reference, stored as float32."""
    for s in range(batch.n_structures):
        out[s] = reference_structure(batch, s)


def implementation(name: str) -> Render:
    return numpy_render if name == NUMPY else native(name)


def verify(
    name: str,
    render: Render,
    batch: Batch,
    references: Sequence[np.ndarray],
    threads: int,
    labels: Sequence[str],
) -> tuple[float, float]:
    """Grid ``batch`` with ``render`` and compare with ``references`` (SPEC §3).

    Returns (max absolute error, worst error / tolerance); raises
    :class:`VerificationError` when any structure is off by more than its tolerance.
    """
    out = np.empty(batch.grid_shape, dtype=np.float32)
    render(batch, out, threads)
    worst_err, worst_ratio = 0.0, 0.0
    for s, ref in enumerate(references):
        err = float(np.max(np.abs(out[s] - ref))) if ref.size else 0.0
        if batch.box(s).is_orthogonal:
            tol, what = ORTHOGONAL_TOLERANCE, f"{ORTHOGONAL_TOLERANCE:g} absolute"
        else:
            peak = float(np.max(ref)) if ref.size else 0.0
            tol = TRICLINIC_TOLERANCE * peak
            what = f"{TRICLINIC_TOLERANCE:g} × max = {tol:.2g}"
        ratio = err / tol if tol > 0 else (0.0 if err == 0 else math.inf)
        if not ratio <= 1.0:  # also catches NaN
            raise VerificationError(
                f"{name} ({threads} thread{'s' if threads != 1 else ''}) disagrees with the "
                f"float64 reference for {labels[s]} at {batch.shape[0]}³, σ = "
                f"{float(batch.sigmas[0]):g} Å, {batch.n_channels} channel(s): max |error| "
                f"{err:.3g} > tolerance {what} (SPEC §3); a fast wrong answer is not a "
                f"result, so nothing was timed"
            )
        worst_err, worst_ratio = max(worst_err, err), max(worst_ratio, ratio)
    return worst_err, worst_ratio


def _label(s: Structure) -> str:
    name = f"{s.name!r} " if s.name else ""
    return f"{name}({Path(s.source).name} record {s.record})"


# ---------------------------------------------------------------------- the sweep
def run_sweep(
    config: BenchConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    command: str = "",
) -> BenchResult:
    """Measure every cell of ``config`` (see the module docstring); returns the results.

    Raises ValueError for bad options or when no input structure can be benchmarked, and
    :class:`VerificationError` when an implementation is wrong.
    """
    started = time.perf_counter()
    cfg = (config or BenchConfig()).resolved()
    structures, rejected = load_structures(
        cfg.inputs,
        channels=cfg.channels,
        box=cfg.box,
        padding=cfg.padding,
        format=cfg.format,
        limit=cfg.limit,
    )
    if not structures:
        first = f" (first: {rejected[0].reason})" if rejected else ""
        raise ValueError(
            f"no structure to benchmark in {', '.join(cfg.inputs)}: "
            f"{len(rejected)} record(s) rejected{first}"
        )
    result = BenchResult(
        header=machine_header(cfg.implementations),
        config=cfg.to_json(),
        input={
            "files": [str(p) for p in expand_inputs(cfg.inputs)],
            "structures": len(structures),
            "atoms": int(sum(len(s) for s in structures)),
            "periodic": int(sum(s.periodic for s in structures)),
            "rejected": [r.to_json() for r in rejected],
        },
        command=command,
    )
    with threadpool_limits(limits=1, user_api="blas"):
        _Sweep(cfg, structures, result, progress).run()
    _speedups(result.cells)
    if cfg.end_to_end:
        result.end_to_end = _end_to_end_runs(cfg)
    result.seconds = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        result.header["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


class _Sweep:
    """The loops of :func:`run_sweep`: grid size → channels → σ → implementation → threads."""

    def __init__(
        self,
        cfg: BenchConfig,
        structures: list[Structure],
        result: BenchResult,
        progress: ProgressFn | None,
    ) -> None:
        self.cfg = cfg
        self.structures = structures
        self.result = result
        self.progress = progress
        self.natives = [i for i in cfg.implementations if i != NUMPY]
        self.with_numpy = NUMPY in cfg.implementations
        per_setting = 1 + len(self.natives) * len(cfg.threads) + int(self.with_numpy)
        self.total = len(cfg.grid_sizes) * len(cfg.channels) * len(cfg.sigmas) * per_setting
        self.done = 0
        #: seconds per structure of the NumPy cells measured so far, per channel set
        self.numpy_seen: dict[str, list[tuple[int, float]]] = {}

    def step(self, what: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, what)

    def prepared(self) -> Iterator[tuple[int, str, Prepared]]:
        for n in self.cfg.grid_sizes:
            for ch in self.cfg.channels:
                spec = ChannelSpec.parse(ch)
                yield n, ch, Prepared(self.structures, n, spec, self.cfg.box, self.cfg.padding)

    def run(self) -> None:
        # Every setting is verified before anything is timed, so a wrong implementation
        # stops the bench within seconds rather than after minutes of timing.
        for n, ch, prep in self.prepared():
            for sigma in self.cfg.sigmas:
                self.verify_all(prep, n, ch, sigma)
        for n, ch, prep in self.prepared():
            per_structure = prep.n_channels * n**3 * 4
            total = len(self.structures)
            size = int(min(total, max(1, self.cfg.batch_mb * 2**20 // per_structure)))
            buffer = np.empty((size, prep.n_channels, n, n, n), dtype=np.float32)
            ranges = [slice(a, min(a + size, total)) for a in range(0, total, size)]
            views = [buffer[: r.stop - r.start] for r in ranges]
            floors = {t: memory_floor(views, t, self.cfg.repeat) for t in self.cfg.threads}
            for sigma in self.cfg.sigmas:
                chunks = [(prep.batch(r, sigma), v) for r, v in zip(ranges, views, strict=True)]
                for name in self.natives:
                    for t in self.cfg.threads:
                        self.time_native(name, t, n, ch, sigma, chunks, floors[t])
                if self.with_numpy:
                    self.time_numpy(prep, n, ch, sigma, per_structure, floors)
            del buffer, views

    def verify_all(self, prep: Prepared, n: int, ch: str, sigma: float) -> None:
        if not self.natives:  # NumPy alone: it is the reference
            self.step(f"nothing to verify at {n}³ σ={sigma:g} {ch}")
            return
        idx = spread(len(self.structures), self.cfg.verify)
        batch = prep.batch(idx, sigma)
        refs = [reference_structure(batch, s) for s in range(len(idx))]
        labels = [_label(self.structures[i]) for i in idx]
        for name in self.natives:
            for t in self.cfg.threads:
                err, ratio = verify(name, implementation(name), batch, refs, t, labels)
                self.result.checks.append(Check(name, t, n, sigma, ch, labels, err, ratio))
        self.step(f"verified {n}³ σ={sigma:g} {ch}")

    def time_native(
        self,
        name: str,
        threads: int,
        n: int,
        ch: str,
        sigma: float,
        chunks: list[tuple[Batch, np.ndarray]],
        floor: list[float],
    ) -> None:
        render = implementation(name)
        nonzero = 0
        for batch, view in chunks:  # the warm-up run, which also counts non-zero voxels
            render(batch, view, threads)
            nonzero += int(np.count_nonzero(view))

        def run() -> None:
            for batch, view in chunks:
                render(batch, view, threads)

        times = time_runs(run, self.cfg.repeat, warmup=0)
        n_struct = len(self.structures)
        spec_c = chunks[0][0].n_channels
        self.result.cells.append(
            Cell(
                implementation=name,
                threads=threads,
                grid_size=n,
                sigma=sigma,
                channels=ch,
                n_channels=spec_c,
                structures=n_struct,
                atoms=int(sum(b.n_atoms for b, _ in chunks)),
                times=times,
                floor_times=floor,
                floor_structures=n_struct,
                nonzero_fraction=nonzero / (n_struct * spec_c * n**3),
            )
        )
        self.step(f"{name} ×{threads} {n}³ σ={sigma:g} {ch}")

    def time_numpy(
        self,
        prep: Prepared,
        n: int,
        ch: str,
        sigma: float,
        per_structure: int,
        floors: dict[int, list[float]],
    ) -> None:
        cfg = self.cfg
        total = len(self.structures)
        where = f"{n}³, σ = {sigma:g} Å, {ch}"
        budget = cfg.numpy_budget
        reason = None
        if budget <= 0:
            reason = "the NumPy reference is off (numpy budget 0 s)"
        else:
            # Scale from the largest grid measured so far: on small grids the reference's
            # per-atom overhead dominates, so n³ scaling from those overestimates.
            seen = self.numpy_seen.get(ch, [])
            largest = max((m for m, _ in seen), default=0)
            estimate = max((t * (n / m) ** 3 for m, t in seen if m == largest), default=0.0)
            if estimate * cfg.repeat > budget:
                reason = (
                    f"NumPy skipped at {where}: about {estimate:.2g} s per structure "
                    f"(scaled from {largest}³), so {cfg.repeat} runs would exceed the "
                    f"{budget:g} s budget"
                )
        idx: list[int] = []
        if reason is None:
            # The warm-up run picks the subset: structures in an evenly spreading order
            # until one run's worth of the budget is spent (or the buffer is full).
            per_run = budget / cfg.repeat
            room = max(1, int(cfg.batch_mb * 2**20 // per_structure))
            spent = 0.0
            for i in spread_order(total):
                one = prep.batch([i], sigma)
                t0 = time.perf_counter()
                reference_structure(one, 0)
                took = time.perf_counter() - t0
                if not idx and took > per_run:
                    reason = (
                        f"NumPy skipped at {where}: one structure took {took:.2g} s, so "
                        f"{cfg.repeat} runs would exceed the {budget:g} s budget"
                    )
                    break
                idx.append(i)
                spent += took
                if spent >= per_run or len(idx) >= room:
                    break
        if reason is not None:
            self.result.skipped.append(Skip(NUMPY, 1, n, sigma, ch, reason))
            self.step(f"numpy {n}³ σ={sigma:g} {ch} (skipped)")
            return
        idx.sort()
        batch = prep.batch(idx, sigma)
        out = np.empty(batch.grid_shape, dtype=np.float32)
        times = time_runs(lambda: numpy_render(batch, out), cfg.repeat, warmup=1)
        floor_threads = 1 if 1 in floors else min(floors)
        cell = Cell(
            implementation=NUMPY,
            threads=1,
            grid_size=n,
            sigma=sigma,
            channels=ch,
            n_channels=batch.n_channels,
            structures=len(idx),
            atoms=batch.n_atoms,
            times=times,
            floor_times=floors[floor_threads],
            floor_structures=total,
            nonzero_fraction=float(np.count_nonzero(out)) / out.size,
        )
        self.result.cells.append(cell)
        self.numpy_seen.setdefault(ch, []).append((n, cell.seconds_per_structure))
        self.step(f"numpy {n}³ σ={sigma:g} {ch}")


def _speedups(cells: list[Cell]) -> None:
    """Fill the speedup fields from the median time per structure of matching cells."""
    by_key = {c.key: c for c in cells}
    for c in cells:
        _, threads, n, sigma, ch = c.key
        scalar = by_key.get(("scalar", threads, n, sigma, ch))
        ref = by_key.get((NUMPY, 1, n, sigma, ch))
        one = by_key.get((c.implementation, 1, n, sigma, ch))
        t = c.seconds_per_structure
        c.speedup_vs_scalar = scalar.seconds_per_structure / t if scalar else None
        c.speedup_vs_numpy = ref.seconds_per_structure / t if ref else None
        c.speedup_vs_1_thread = (
            one.seconds_per_structure / t if one and c.threads is not None else None
        )


# ---------------------------------------------------------------------- end to end
def run_end_to_end(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    grid_size: int = 32,
    sigma: float = 0.5,
    channels: str = "elements",
    box: str = "fit",
    padding: float = 2.0,
    format: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    scratch: str | os.PathLike[str] | None = None,
) -> EndToEnd:
    """Time ``pgrid grid`` (:func:`~pgrid_cli.preprocess.grid_files`) on whole input files.

    The shards go to a temporary directory (under ``scratch``), deleted afterwards.
    ``workers``/``threads`` as for ``pgrid grid`` (default: one per core). The stage
    split is the CPU time :class:`~pgrid_cli.preprocess.RunSummary` reports per stage.
    """
    options = GridOptions(
        grid_size=grid_size,
        sigma=sigma,
        channels=channels,
        box=box,
        padding=padding,
        format=format,
    )
    with tempfile.TemporaryDirectory(prefix="pgrid-bench-", dir=scratch) as tmp:
        summary = grid_files(
            list(inputs),
            Path(tmp) / "shards",
            options,
            workers=workers,
            threads=threads,
            command="pgrid bench --end-to-end",
        )
    t = summary.timings
    return EndToEnd(
        grid_size=grid_size,
        sigma=sigma,
        channels=channels,
        structures=summary.gridded,
        rejected=summary.rejected,
        seconds=summary.seconds,
        stages={
            "parse": t.get("read", 0.0) + t.get("parse", 0.0),
            "grid": t.get("grid", 0.0),
            "compress": t.get("encode", 0.0),
            "write": t.get("write", 0.0),
        },
        bytes_per_structure=summary.bytes_per_structure,
        workers=available_cores() if workers is None else int(workers),
        threads=available_cores() if threads is None else int(threads),
    )


def _end_to_end_runs(cfg: BenchConfig) -> list[EndToEnd]:
    sigma = min(cfg.sigmas, key=lambda s: (abs(s - END_TO_END_SIGMA), s))
    return [
        run_end_to_end(
            cfg.inputs,
            grid_size=n,
            sigma=sigma,
            channels=ch,
            box=cfg.box,
            padding=cfg.padding,
            format=cfg.format,
            threads=max(cfg.threads),
            scratch=cfg.scratch,
        )
        for n in cfg.grid_sizes
        for ch in cfg.channels
    ]


# ---------------------------------------------------------------------- the figure
def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if matplotlib can write its format (from the suffix), else ValueError."""
    from matplotlib.backend_bases import FigureCanvasBase

    out = Path(path)
    kinds = FigureCanvasBase.get_supported_filetypes()
    if out.suffix.lstrip(".").lower() not in kinds:
        raise ValueError(
            f"cannot draw {out}: the file name must end in an image format matplotlib "
            f"writes, such as .png, .svg or .pdf"
        )
    return out


def plot_result(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    """Draw the sweep as a PNG (or any format matplotlib infers from the suffix).

    One column per channel set; rows: throughput against grid size (log scale, one line
    per σ and implementation, as the ParticleGrid paper's Fig. 5); speedup over scalar
    per grid size (each native path and thread count, geometric mean over σ, its
    Fig. 3); speedup over NumPy per grid size and σ (the best path, 1 thread, its Fig. 4).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    out = check_plot_path(path)
    cells = result.cells
    channels = list(dict.fromkeys(c.channels for c in cells))
    if not channels:
        raise ValueError("nothing to plot: the result has no measured cell")
    sigmas = sorted({c.sigma for c in cells})
    sizes = sorted({c.grid_size for c in cells})
    impls = list(dict.fromkeys(c.implementation for c in cells))
    threads = sorted({c.threads for c in cells if c.threads is not None})
    natives = [i for i in impls if i != NUMPY]
    colours = _colours(len(sigmas))
    styles = dict(zip(impls, ["-", "--", "-.", ":", (0, (1, 4))], strict=False))
    markers = dict(zip([*threads, None], ["o", "s", "^", "D", "v", "P", "x"], strict=False))

    best = natives[0] if natives else None
    one = 1 if 1 in threads else (threads[0] if threads else None)
    first, most = (threads[0], threads[-1]) if threads else (None, None)
    fig = Figure(figsize=(6.2 * len(channels), 13.5), layout="constrained")
    axes = fig.subplots(3, len(channels), squeeze=False)
    for col, ch in enumerate(channels):
        mine = [c for c in cells if c.channels == ch]
        ax = axes[0][col]
        for impl in impls:
            # Every path at 1 thread (NumPy at its own), the best one at the most threads.
            shown = [None] if impl == NUMPY else [first]
            if impl == best and len(threads) > 1:
                shown.append(most)
            for t in shown:
                for si, s in enumerate(sigmas):
                    pts = sorted(
                        (c.grid_size, c.structures_per_s)
                        for c in mine
                        if c.implementation == impl and c.threads == t and c.sigma == s
                    )
                    if pts:
                        x, y = zip(*pts, strict=True)
                        ax.plot(
                            x,
                            y,
                            linestyle=styles[impl],
                            marker=markers[t],
                            color=colours[si],
                            markersize=4,
                            linewidth=1.2,
                        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [f"{n}³" for n in sizes])
        ax.set_xlabel("grid size")
        ax.set_ylabel("structures / s")
        more = f"; {best} also ×{most}" if best and len(threads) > 1 else ""
        ax.set_title(f"throughput, channels: {ch} (threads ×{first}{more})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        handles = [
            Line2D([], [], color=colours[i], label=f"σ = {s:g} Å") for i, s in enumerate(sigmas)
        ]
        handles += [Line2D([], [], color="k", linestyle=styles[i], label=i) for i in impls]
        handles += [
            Line2D([], [], color="k", marker=markers[t], linestyle="", label=f"{t} thread(s)")
            for t in dict.fromkeys([first, most])
            if t is not None
        ]
        ax.legend(handles=handles, fontsize=7, ncol=2)

        bars = [(i, t) for i in natives if i != "scalar" for t in threads]
        _grouped_bars(
            axes[1][col],
            sizes,
            [f"{i} ×{t}" for i, t in bars],
            [
                [
                    _geomean(
                        c.speedup_vs_scalar
                        for c in mine
                        if c.implementation == i and c.threads == t and c.grid_size == n
                    )
                    for n in sizes
                ]
                for i, t in bars
            ],
            title=f"speedup over scalar (same threads; geometric mean over σ), {ch}",
        )
        _grouped_bars(
            axes[2][col],
            sizes,
            [f"σ = {s:g} Å" for s in sigmas],
            [
                [
                    _geomean(
                        c.speedup_vs_numpy
                        for c in mine
                        if c.implementation == best
                        and c.threads == one
                        and c.grid_size == n
                        and c.sigma == s
                    )
                    for n in sizes
                ]
                for s in sigmas
            ],
            title=f"speedup of {best} ×{one} over NumPy, {ch}",
            colours=colours,
        )
    h = result.header
    fig.suptitle(
        f"pgrid bench — {h.get('cpu', '?')}, {h.get('cores_available', '?')} cores, "
        f"{result.input.get('structures', '?')} structures, {h.get('date', '')}",
        fontsize=10,
    )
    fig.savefig(out, dpi=110)
    return out


def _geomean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in vs) / len(vs)) if vs else None


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.85, max(n, 1))]


def _grouped_bars(
    ax: Any,
    sizes: Sequence[int],
    labels: Sequence[str],
    values: Sequence[Sequence[float | None]],
    *,
    title: str,
    colours: Sequence[Any] | None = None,
) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("grid size")
    ax.set_xticks(range(len(sizes)), [f"{n}³" for n in sizes])
    drawn = False
    width = 0.8 / max(len(labels), 1)
    for k, (label, row) in enumerate(zip(labels, values, strict=True)):
        xs = [i + (k - (len(labels) - 1) / 2) * width for i, v in enumerate(row) if v]
        ys = [v for v in row if v]
        if ys:
            drawn = True
            kw = {"color": colours[k]} if colours is not None else {}
            ax.bar(xs, ys, width=width, label=label, **kw)
    if drawn:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
