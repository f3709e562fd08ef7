"""``pgrid bench --end-to-end``: the ``pgrid grid`` pipeline, file → shards, timed by stage."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ...core.kernel import available_cores
from ..grid import GridOptions, grid_files
from .config import END_TO_END_SIGMA, BenchConfig
from .results import EndToEnd


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
    """Time ``pgrid grid`` (:func:`~pgrid_cli.runs.grid.grid_files`) on whole input files.

    The shards go to a temporary directory (under ``scratch``), deleted afterwards.
    ``workers``/``threads`` as for ``pgrid grid`` (default: one per core). The stage
    split is the CPU time :class:`~pgrid_cli.runs.grid.RunSummary` reports per stage.
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


def end_to_end_runs(cfg: BenchConfig) -> list[EndToEnd]:
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
