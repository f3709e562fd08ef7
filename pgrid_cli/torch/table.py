"""Structures in memory as flat arrays (:class:`StructureTable`) and the typed channels of
each (:class:`TypedParticles`): what :class:`~pgrid_cli.torch.StructureDataset` grids.

A few flat NumPy arrays in the CSR layout of the shards rather than a million Python
objects, so forked DataLoader workers share them without copying (reference counts of
Python objects would touch, and so copy, every page).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.complexes import LIGAND_FLAG
from ..core.particles import Particles
from ..core.structure import Structure
from ..readers.properties import atom_properties
from .batching import Gathered, atom_index


def _cat(arrays: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """The arrays concatenated as ``dtype`` (an empty one of ``shape`` when there are none)."""
    return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(shape, dtype)


@dataclass(frozen=True)
class TypedParticles:
    """The typed channels of every structure of a table (docs/typing.md), as particles:
    structure ``s`` owns particles ``offsets[s]:offsets[s+1]``, each one of its atoms in
    one channel with a weight (the typer's membership times the atom's weight). Computed
    once, when the dataset is built; the atoms move with each item's augmentation.

    Attributes
    ----------
    offsets : (N+1,) int64
    atoms : (P,) int32, the atom of each particle, counted within its structure
    channels : (P,) int32
    weights : (P,) float64 (negative in a signed channel such as partial charges)
    """

    offsets: np.ndarray
    atoms: np.ndarray
    channels: np.ndarray
    weights: np.ndarray

    @classmethod
    def from_particles(cls, items: Sequence[Particles]) -> TypedParticles:
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in items], out=offsets[1:])
        return cls(
            offsets,
            _cat([p.atoms for p in items], (0,), np.int32),
            _cat([p.channels for p in items], (0,), np.int32),
            _cat([p.weights for p in items], (0,), np.float64),
        )

    def of(self, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(atoms, channels, weights) of structure ``s``."""
        p0, p1 = int(self.offsets[s]), int(self.offsets[s + 1])
        return self.atoms[p0:p1], self.channels[p0:p1], self.weights[p0:p1]


class StructureTable:
    """Structures in flat arrays: structure ``s`` owns atoms ``offsets[s]:offsets[s+1]``.

    Attributes
    ----------
    offsets : (N+1,) int64
    numbers : (M,) int16 atomic numbers
    positions : (M, 3) float64, Å
    weights : (M,) float64 per-atom weights, or None when every weight is 1
    lattices : (N, 3, 3) float64, Å, rows a, b, c (zeros for molecules)
    periodic : (N,) bool, True for crystals
    records : (N,) int64, index of each structure in its input file
    targets : (N, ...) float32, or None
    property_targets : (N, T) float32 named stored properties (NaN: missing), or None
    atom_targets : (M, Ta) float32 per-atom ones, or None
    ligand : (M,) bool, the ligand atoms of receptor + ligand complexes, or None
    typed : :class:`TypedParticles` of a typed recipe (``GridRecipe(typer=...)``), or None
    """

    ligand: np.ndarray | None = None
    typed: TypedParticles | None = None

    def __init__(
        self,
        offsets: np.ndarray,
        numbers: np.ndarray,
        positions: np.ndarray,
        weights: np.ndarray | None,
        lattices: np.ndarray,
        periodic: np.ndarray,
        names: Sequence[str],
        sources: Sequence[str],
        records: np.ndarray,
        targets: np.ndarray | None = None,
        property_targets: np.ndarray | None = None,
        atom_targets: np.ndarray | None = None,
    ) -> None:
        self.property_targets = property_targets
        self.atom_targets = atom_targets
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.numbers = np.asarray(numbers, dtype=np.int16)
        self.positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.lattices = np.asarray(lattices, dtype=np.float64).reshape(-1, 3, 3)
        self.periodic = np.asarray(periodic, dtype=bool)
        self.records = np.asarray(records, dtype=np.int64)
        self.targets = targets
        n = len(self.offsets) - 1
        if not (len(self.lattices) == len(self.periodic) == len(self.records) == n):
            raise ValueError("every per-structure array needs one entry per structure")
        if targets is not None and len(targets) != n:
            raise ValueError(f"{len(targets)} targets for {n} structures")
        # Names packed into one UTF-8 buffer; sources (few distinct files) as indices.
        encoded = [str(s).encode("utf-8") for s in names]
        self._name_bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._name_offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._name_offsets[1:])
        self.sources, source_index = np.unique(
            np.asarray(list(sources), dtype=str), return_inverse=True
        )
        self._source_index = source_index.astype(np.int32).reshape(-1)
        if len(encoded) != n or len(self._source_index) != n:
            raise ValueError("every structure needs one name and one source")

    @classmethod
    def from_structures(
        cls,
        structures: Iterable[Structure],
        targets: Sequence[Any] | None = None,
    ) -> StructureTable:
        """Pack structures (and one target value per structure, stored as float32)."""
        items = list(structures)
        counts = [len(s.numbers) for s in items]
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        has_weights = any(s.weights is not None for s in items)
        lattices = np.zeros((len(items), 3, 3))
        for k, s in enumerate(items):
            if s.lattice is not None:
                lattices[k] = s.lattice
        packed = None
        if targets is not None:
            values = [np.asarray(v, dtype=np.float32) for v in targets]
            shapes = {v.shape for v in values}
            if len(shapes) > 1:
                raise ValueError(f"target values have different shapes: {sorted(shapes)}")
            packed = np.stack(values) if values else np.zeros((0,), np.float32)

        table = cls(
            offsets=offsets,
            numbers=_cat([np.asarray(s.numbers).reshape(-1) for s in items], (0,), np.int16),
            positions=_cat(
                [np.asarray(s.positions, np.float64).reshape(-1, 3) for s in items],
                (0, 3),
                np.float64,
            ),
            weights=_cat(
                [np.ones(len(s.numbers)) if s.weights is None else s.weights for s in items],
                (0,),
                np.float64,
            )
            if has_weights
            else None,
            lattices=lattices,
            periodic=np.array([s.lattice is not None for s in items], dtype=bool),
            names=[s.name for s in items],
            sources=[s.source for s in items],
            records=np.array([s.record for s in items], dtype=np.int64),
            targets=packed,
        )
        flags = [atom_properties(s).get(LIGAND_FLAG) for s in items]
        if items and all(f is not None for f in flags):  # complexes
            table.ligand = np.concatenate([np.asarray(f) > 0.5 for f in flags])
        return table

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def atom_range(self, i: int) -> tuple[int, int]:
        return int(self.offsets[i]), int(self.offsets[i + 1])

    def gather(self, idx: np.ndarray) -> Gathered:
        """Structures ``idx`` (B,) int64 in one vectorised read (see :class:`Gathered`)."""
        starts = self.offsets[idx]
        counts = self.offsets[idx + 1] - starts
        atoms = atom_index(starts, counts)
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return Gathered(
            offsets=offsets,
            numbers=self.numbers[atoms],
            positions=self.positions[atoms],
            weights=None if self.weights is None else self.weights[atoms],
            lattices=self.lattices[idx],
            periodic=self.periodic[idx],
            records=self.records[idx],
            names=[self.name(i) for i in idx],
            sources=[str(self.sources[k]) for k in self._source_index[idx]],
            targets=None if self.targets is None else self.targets[idx],
            property_targets=None if self.property_targets is None else self.property_targets[idx],
            atom_targets=None if self.atom_targets is None else self.atom_targets[atoms],
        )

    def name(self, i: int) -> str:
        return bytes(self._name_bytes[self._name_offsets[i] : self._name_offsets[i + 1]]).decode()

    def source(self, i: int) -> str:
        return str(self.sources[self._source_index[i]])

    def structure(self, i: int) -> Structure:
        """Structure ``i`` as a :class:`pgrid_cli.Structure` (arrays copied)."""
        a0, a1 = self.atom_range(i)
        return Structure(
            numbers=self.numbers[a0:a1].astype(np.int64),
            positions=self.positions[a0:a1].copy(),
            lattice=self.lattices[i].copy() if self.periodic[i] else None,
            weights=None if self.weights is None else self.weights[a0:a1].copy(),
            name=self.name(i),
            source=self.source(i),
            record=int(self.records[i]),
            info={}
            if self.ligand is None
            else {"atom_properties": {LIGAND_FLAG: self.ligand[a0:a1].astype(np.float64)}},
        )
