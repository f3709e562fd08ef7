"""Structures read from files: the records every reader yields.

A reader turns each record of an input file into either a :class:`Structure` (atoms, and a
lattice for crystals) or a :class:`Rejection` (why it cannot be gridded), so that every
input record is accounted for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .box import Box, ShapeLike


@dataclass
class Structure:
    """A molecule (``lattice is None``) or a periodic crystal.

    Attributes
    ----------
    numbers : (M,) int atomic numbers
    positions : (M, 3) float64 Cartesian positions, Å
    lattice : (3, 3) float64 rows a, b, c (Å) for a periodic cell, else None
    weights : (M,) float64 per-atom weights (default 1; site occupancies for disorder)
    name, source, record : provenance (record = index of the record in its file)
    """

    numbers: np.ndarray
    positions: np.ndarray
    lattice: np.ndarray | None = None
    weights: np.ndarray | None = None
    name: str = ""
    source: str = ""
    record: int = 0
    info: dict[str, object] = field(default_factory=dict)

    @property
    def periodic(self) -> bool:
        return self.lattice is not None

    def __len__(self) -> int:
        return len(self.numbers)

    def box(self, kind: str = "fit", shape: ShapeLike = 32, padding: float = 2.0) -> Box:
        """Its grid box: the unit cell for crystals, a SPEC §4 box for molecules."""
        if self.lattice is not None:
            return Box.from_lattice(self.lattice, shape)
        return Box.for_molecule(kind, self.positions, shape, padding)


@dataclass(frozen=True)
class Rejection:
    """An input record that could not be gridded, and why (one line)."""

    source: str
    record: int
    name: str
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "record": self.record,
            "name": self.name,
            "reason": self.reason,
        }
