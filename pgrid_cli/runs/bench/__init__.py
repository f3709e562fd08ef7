"""``pgrid bench``: the sweep (:mod:`.sweep`), its configuration and results, the machine
and timing pieces, the end-to-end runs and the figure. One benchmark system: the scripts
in ``benchmarks/`` call these functions too."""

from __future__ import annotations

from .config import BenchConfig, VerificationError, default_input
from .endtoend import run_end_to_end
from .machine import cpu_model, machine_header, memory_floor, time_runs
from .plot import check_plot_path, plot_result
from .results import BenchResult, Cell, Check, EndToEnd, Skip
from .sweep import Prepared, load_structures, run_sweep, verify

__all__ = [
    "BenchConfig",
    "BenchResult",
    "Cell",
    "Check",
    "EndToEnd",
    "Prepared",
    "Skip",
    "VerificationError",
    "check_plot_path",
    "cpu_model",
    "default_input",
    "load_structures",
    "machine_header",
    "memory_floor",
    "plot_result",
    "run_end_to_end",
    "run_sweep",
    "time_runs",
    "verify",
]
