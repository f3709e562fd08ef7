"""``pgrid bench``'s results: cells, checks, skips, end-to-end runs; JSON and CSV."""

from __future__ import annotations

import csv
import os
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ...store.rundir import write_json
from .config import SCHEMA, SCHEMA_VERSION


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
class PerCall:
    """What users pay per call: :meth:`GridRecipe.grid` on each structure, one call each
    into a fresh array with the default threads (``times``: seconds per run over every
    structure), against the best native batch path at the most threads measured
    (``batch_s_per_structure``), and the fixed cost of one call (µs, an 8³ grid of the
    smallest structure)."""

    grid_size: int
    sigma: float
    channels: str
    structures: int
    times: list[float]
    fixed_cost_us: float
    batch_s_per_structure: float | None = None

    @property
    def seconds_per_structure(self) -> float:
        return statistics.median(self.times) / self.structures

    @property
    def structures_per_s(self) -> float:
        return 1.0 / self.seconds_per_structure

    @property
    def ratio_to_batch(self) -> float | None:
        """Per-call rate ÷ batch rate (1.0: calling once per structure costs nothing)."""
        b = self.batch_s_per_structure
        return None if not b else b / self.seconds_per_structure

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "structures_per_s": self.structures_per_s,
            "ratio_to_batch": self.ratio_to_batch,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PerCall:
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
    per_call: list[PerCall] = field(default_factory=list)
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
            "per_call": [p.to_json() for p in self.per_call],
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
            per_call=[PerCall.from_json(p) for p in d.get("per_call", [])],
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
