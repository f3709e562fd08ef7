"""Worker processes that never outlive the run that started them.

``pgrid grid`` and ``pgrid invert`` hand work to a process pool. If the main process is
killed (``kill -9``, an out-of-memory kill, a batch scheduler's time limit), its workers
must not go on for minutes holding memory: each worker asks the Linux kernel for a signal
when its parent dies (``prctl(PR_SET_PDEATHSIG)``) and, on any platform, a small thread in
the worker also checks the parent and exits when it is gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_PR_SET_PDEATHSIG = 1
#: Seconds between the fallback thread's checks of the parent.
_POLL_S = 1.0


def _watch_parent(parent: int) -> None:
    """In a worker: end this process as soon as ``parent`` is no longer its parent."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the thread remains
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def poll() -> None:
        while os.getppid() == parent:
            time.sleep(_POLL_S)
        os._exit(1)

    threading.Thread(target=poll, name="pgrid-parent-watch", daemon=True).start()


def _init(parent: int, initializer: Callable[..., Any] | None, args: tuple[Any, ...]) -> None:
    _watch_parent(parent)
    if initializer is not None:
        initializer(*args)


def process_pool(
    workers: int,
    context: str | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes (start method ``context``, default
    the platform's) whose workers exit when this process dies."""
    ctx = multiprocessing.get_context(context)
    return ProcessPoolExecutor(
        workers,
        mp_context=ctx,
        initializer=_init,
        initargs=(os.getpid(), initializer, initargs),
    )
