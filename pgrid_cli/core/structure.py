"""A structure to grid: atoms, and a lattice for crystals (the value readers produce)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
    info : anything else the reader found worth keeping (e.g. ``warnings``)
    mol : an RDKit ``Mol`` whose atom order is the order of ``positions``, set by the
        readers that parse with RDKit (SDF, SMILES, PDB, mol2), else None; chemistry typers
        (:mod:`pgrid_cli.typers`) read bonds and rings from it. Core never imports RDKit.
    """

    numbers: np.ndarray
    positions: np.ndarray
    lattice: np.ndarray | None = None
    weights: np.ndarray | None = None
    name: str = ""
    source: str = ""
    record: int = 0
    info: dict[str, object] = field(default_factory=dict)
    mol: object | None = field(default=None, repr=False, compare=False)

    @property
    def periodic(self) -> bool:
        return self.lattice is not None

    def __len__(self) -> int:
        return len(self.numbers)
