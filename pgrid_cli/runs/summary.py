"""What a ``pgrid grid`` run reports: progress while it runs, a summary when it ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Progress:
    """Where a run is: reported to the ``progress`` callback of :func:`grid_files`."""

    bytes_done: int
    bytes_total: int
    items: int  #: input records of this slice handled so far
    written: int
    rejected: int
    elapsed: float  #: seconds


@dataclass
class RunSummary:
    """What a run did. Counts are for this slice (all of the input when unsliced)."""

    out_dir: Path
    slice_index: int
    num_slices: int
    read: int = 0  #: input records handled by this slice (kept shards included)
    written: int = 0  #: structures in this slice's shards
    rejected: int = 0
    rejected_by_kind: dict[str, int] = field(default_factory=dict)
    total_items: int = 0  #: input records of the whole input (every slice)
    shards_written: int = 0
    shards_kept: int = 0  #: complete shards of an earlier run, kept by ``resume``
    bytes_written: int = 0  #: size of the shards written by this run
    gridded: int = 0  #: structures gridded by this run (not counting kept shards)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  #: CPU seconds by stage
    notes: dict[str, int] = field(default_factory=dict)  #: reader warnings, counted
    manifest: bool = False  #: True when manifest.json and errors.jsonl were written
    #: structures of this run whose grid holds less than CAPTURE_WARNING of their weight
    low_capture: int = 0
    min_captured: float | None = None  #: the smallest Σ grid ÷ Σ weights gridded here
    #: structures of this run whose longest voxel edge is above 2σ (undersampled)
    coarse_voxels: int = 0
    #: atoms that went to the catch-all channel ``*``, by element symbol
    catch_all: dict[str, int] = field(default_factory=dict)
    files: int = 0
    #: ``missing`` runs: the slices this call ran (None: one slice, ``slice_index``)
    slices_run: list[int] | None = None

    def add(self, other: RunSummary) -> None:
        """Count ``other`` (a slice this ``missing`` call ran) in this summary."""
        for name in ("read", "written", "rejected", "shards_written", "shards_kept"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("bytes_written", "gridded", "low_capture"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for k, v in other.rejected_by_kind.items():
            self.rejected_by_kind[k] = self.rejected_by_kind.get(k, 0) + v
        for k, v in other.notes.items():
            self.notes[k] = self.notes.get(k, 0) + v
        for k, t in other.timings.items():
            self.timings[k] = self.timings.get(k, 0.0) + t
        if other.min_captured is not None:
            low = self.min_captured
            self.min_captured = other.min_captured if low is None else min(low, other.min_captured)
        self.total_items = other.total_items
        self.manifest = self.manifest or other.manifest
        self.slices_run = [*(self.slices_run or []), other.slice_index]

    @property
    def structures_per_s(self) -> float:
        return self.gridded / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_per_structure(self) -> float:
        return self.bytes_written / self.gridded if self.gridded else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "slice": [self.slice_index, self.num_slices],
            **({} if self.slices_run is None else {"slices_run": self.slices_run}),
            "files": self.files,
            "read": self.read,
            "written": self.written,
            "rejected": self.rejected,
            "rejected_by_kind": dict(sorted(self.rejected_by_kind.items())),
            "total_items": self.total_items,
            "shards_written": self.shards_written,
            "shards_kept": self.shards_kept,
            "bytes_written": self.bytes_written,
            "bytes_per_structure": round(self.bytes_per_structure, 1),
            "gridded": self.gridded,
            "seconds": round(self.seconds, 3),
            "structures_per_s": round(self.structures_per_s, 1),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "notes": self.notes,
            "manifest": self.manifest,
            "low_capture": self.low_capture,
            "coarse_voxels": self.coarse_voxels,
            "catch_all": dict(sorted(self.catch_all.items())),
            "min_captured": self.min_captured,
        }
