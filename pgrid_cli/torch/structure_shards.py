"""A dataset over structures shards (``pgrid grid --store structures``), gridded on the fly.

Parse once, grid every epoch: ``pgrid grid INPUT -o OUT --store structures`` writes the
atoms, cells and provenance of every record (docs/format.md §6, ``content =
"structures"``) at parser speed; :class:`StructureShardDataset` reads them per structure
and grids each item (or each batch, ``render="batch"``) with a :class:`GridRecipe` chosen
at training time, with the augmentation and (seed, epoch, index) seeding of
:class:`~pgrid_cli.torch.StructureDataset` (it is one: only where the structures come
from differs).

Nothing is loaded whole: structure ``i`` is one slice ``atom_offset[i]:atom_offset[i+1]``
of each per-atom dataset, read when the item is. Only the (N+1,) ``atom_offset`` index of
a shard is kept, once the shard has been read. The HDF5 files are opened lazily in the
process that reads them, and every live dataset closes its handles just before the
process forks (as :class:`~pgrid_cli.torch.ShardDataset` does), so DataLoader workers
never inherit an open file.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.complexes import LIGAND_FLAG
from ..core.particles import entries
from ..core.recipe import GridRecipe
from ..readers.records import Rejection
from ..store.layout import LATTICE, TYPED_MEMBERSHIPS, plain
from ..store.shard import Shard, ShardSet
from .batching import Gathered, atom_index
from .structure_dataset import Render, StructureDataset

#: Group of per-record properties in a shard: ``properties/<name>``, one entry per structure.
PROPERTIES = "properties"
ATOM_PROPERTIES = "atom_properties"

_LIVE: weakref.WeakSet[StructureShardDataset] = weakref.WeakSet()


def _close_before_fork() -> None:
    for ds in list(_LIVE):
        ds.close()


os.register_at_fork(before=_close_before_fork)


class ShardTable:
    """The structures of some structures shards, read lazily with the interface of a
    :class:`~pgrid_cli.torch.StructureTable` (what :class:`StructureDataset` reads).

    ``numbers``, ``positions`` and ``weights`` take a slice of global atom indices
    (``atom_range(i)``), ``lattices``, ``periodic``, ``records`` and ``targets`` a
    structure index; each reads only that part of one shard.
    """

    def __init__(self, shards: Sequence[Shard], targets: Sequence[str] | None = None) -> None:
        self.shards = list(shards)
        self.target_names = None if targets is None else [str(t) for t in targets]
        counts, atoms = [], []
        for s in self.shards:
            f = s.file
            if s.has_grids:
                raise ValueError(
                    f"{s.path} holds grids: read it with pgrid_cli.torch.ShardDataset "
                    f"(StructureShardDataset reads shards of pgrid grid --store structures)"
                )
            counts.append(len(s))
            atoms.append(int(f["atomic_numbers"].shape[0]))
            for name in self.target_names or []:
                key = f"{PROPERTIES}/{name}"
                if key not in f:
                    have = sorted(f[PROPERTIES]) if PROPERTIES in f else []
                    raise ValueError(
                        f"{s.path.name} has no {key} (its properties: {', '.join(have) or 'none'})"
                    )
                if f[key].shape[:1] != (len(s),):
                    raise ValueError(
                        f"{s.path.name}: {key} has {f[key].shape[0]} entries for {len(s)} "
                        f"structures"
                    )
        self._ends = np.cumsum(counts, dtype=np.int64)
        self._atom_starts = np.concatenate([[0], np.cumsum(atoms, dtype=np.int64)])
        self._open: dict[int, _OpenShard] = {}  # this process's, per shard (see opened())
        self.numbers = _AtomColumn(self, "atomic_numbers")
        self.positions = _AtomColumn(self, "positions")
        self.weights = _AtomColumn(self, "weights")
        # receptor + ligand complexes: which atoms are the ligand's (ComplexRecipe)
        flag = f"{ATOM_PROPERTIES}/{LIGAND_FLAG}"
        complexes = bool(self.shards) and all(flag in s.file for s in self.shards)
        self.ligand = _AtomColumn(self, flag) if complexes else None
        self.lattices = _Column(self, lambda o, j: np.asarray(o.ds[LATTICE][j], np.float64))
        self.periodic = _Column(self, lambda o, j: bool(o.periodic[j]))
        self.records = _Column(self, lambda o, j: int(o.records[j]))
        # Named stored properties: items carry them as ``targets`` (T,) float32, as the
        # other datasets' ``targets=[...]`` do (NaN where a record lacks one).
        self.targets = None
        self.atom_targets = None
        self.property_targets = None if self.target_names is None else _Column(self, self._target)
        # Typed channels: the memberships stored by pgrid grid --store structures --channels
        # <typer>, expanded to particles per item (the typer itself needs bonds)
        typers = {(str(s.attrs.get("typer", "")), str(s.attrs.get("typer_channels", "")))
                  for s in self.shards}  # fmt: skip
        if len(typers) > 1:
            raise ValueError(
                "these structures shards were written with different typers (or some without "
                f"one): {sorted(t[0] or 'none' for t in typers)}"
            )
        self.typer_name, channels = typers.pop() if typers else ("", "")
        self.typer_channels = tuple(json.loads(channels)) if channels else ()
        self.typed = _StoredTyped(self) if self.typer_name else None

    def opened(self, k: int) -> _OpenShard:
        """Shard ``k`` open in this process, its datasets looked up once, and its small
        per-structure index arrays (``atom_offset``, ``periodic``, ``record``) read."""
        o = self._open.get(k)
        if o is None or o.pid != os.getpid():
            o = self._open[k] = _OpenShard(self.shards[k])
        return o

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def locate(self, i: int) -> tuple[int, int]:
        """(shard number, index in it) of structure ``i``."""
        k = int(np.searchsorted(self._ends, i, side="right"))
        return k, i - (int(self._ends[k - 1]) if k else 0)

    def atom_range(self, i: int) -> tuple[int, int]:
        """Global atom indices of structure ``i``."""
        k, j = self.locate(i)
        off = self.opened(k).offsets
        base = int(self._atom_starts[k])
        return base + int(off[j]), base + int(off[j + 1])

    def read_atoms(self, name: str, a0: int, a1: int) -> np.ndarray:
        ends = self._atom_starts[1:]
        k = min(int(np.searchsorted(ends, a0, side="right")), len(self.shards) - 1)
        base = int(self._atom_starts[k])
        return self.opened(k).ds[name][a0 - base : a1 - base]

    def name(self, i: int) -> str:
        k, j = self.locate(i)
        return str(plain(self.opened(k).ds["name"][j]))

    def source(self, i: int) -> str:
        k, j = self.locate(i)
        return str(plain(self.opened(k).ds["source"][j]))

    def _target(self, o: _OpenShard, j: int) -> np.ndarray:
        names = self.target_names or []
        values = [np.asarray(o.ds[f"{PROPERTIES}/{n}"][j], dtype=np.float32) for n in names]
        return np.concatenate([v.reshape(-1) for v in values])

    def gather(self, idx: np.ndarray) -> Gathered:
        """Structures ``idx`` (B,) int64: per shard, each per-atom dataset read once (a
        union of hyperslabs, in file order) and the per-structure ones by one sorted
        selection; see :class:`~pgrid_cli.torch.batching.Gathered`."""
        b = len(idx)
        ends = self._ends
        shard_of = np.searchsorted(ends, idx, side="right")
        local = idx - np.where(shard_of > 0, ends[np.maximum(shard_of - 1, 0)], 0)
        counts = np.zeros(b, dtype=np.int64)
        parts: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, _OpenShard]] = {}
        for k in np.unique(shard_of):
            where = np.flatnonzero(shard_of == k)
            o = self.opened(int(k))
            js, inverse = np.unique(local[where], return_inverse=True)
            parts[int(k)] = (where, js, inverse.reshape(-1), o)
            counts[where] = o.offsets[local[where] + 1] - o.offsets[local[where]]
        offsets = np.zeros(b + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        m = int(offsets[-1])
        numbers = np.empty(m, dtype=np.int16)
        positions = np.empty((m, 3), dtype=np.float64)
        weights = np.empty(m, dtype=np.float64)
        lattices = np.empty((b, 3, 3))
        names: list[str] = [""] * b
        sources: list[str] = [""] * b
        records = np.empty(b, dtype=np.int64)
        periodic = np.empty(b, dtype=bool)
        prop = None if self.target_names is None else [None] * b
        for where, js, inverse, o in parts.values():
            starts, stops = o.offsets[js], o.offsets[js + 1]
            # Atoms of the unique structures js, in file order, then placed in batch order.
            dst = atom_index(offsets[where], counts[where])
            seg = np.zeros(len(js) + 1, dtype=np.int64)
            np.cumsum(stops - starts, out=seg[1:])
            take = atom_index(seg[inverse], counts[where])  # rows of the read, batch order
            src = None  # the rows in batch order, for datasets mapped into memory
            for key, column in (
                ("atomic_numbers", numbers),
                ("positions", positions),
                ("weights", weights),
            ):
                mapped = o.mapped(key)
                if mapped is None:
                    column[dst] = _read_runs(o.ds[key], starts, stops)[take]
                    continue
                if src is None:
                    src = atom_index(o.offsets[local[where]], counts[where])
                column[dst] = mapped[src]
            mapped = o.mapped(LATTICE)
            lat = o.ds[LATTICE][js] if mapped is None else mapped[js]
            lattices[where] = np.asarray(lat, np.float64)[inverse]
            periodic[where] = o.periodic[js][inverse]
            records[where] = o.records[js][inverse]
            for key, target in (("name", names), ("source", sources)):
                values = o.ds[key][js]
                for w, v in zip(where, inverse, strict=True):
                    target[w] = str(plain(values[v]))
            if prop is not None:
                for w, j in zip(where, local[where], strict=True):
                    prop[w] = self._target(o, int(j))
        return Gathered(
            offsets=offsets,
            numbers=numbers,
            positions=positions,
            weights=weights,
            lattices=lattices,
            periodic=periodic,
            records=records,
            names=names,
            sources=sources,
            property_targets=None if prop is None else np.stack(prop),  # type: ignore[arg-type]
        )

    def close(self) -> None:
        self._open.clear()
        for s in self.shards:
            s.close()


def _read_runs(ds: Any, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Rows ``starts[k]:stops[k]`` of an HDF5 dataset (sorted, disjoint runs), one after
    another, in one read: a union of hyperslabs."""
    n = int((stops - starts).sum())
    tail = tuple(ds.shape[1:])
    out = np.empty((n, *tail), dtype=ds.dtype)
    if n == 0:
        return out
    space = ds.id.get_space()
    space.select_none()
    zeros = (0,) * len(tail)
    for a, z in zip(starts.tolist(), stops.tolist(), strict=True):
        if z > a:
            space.select_hyperslab((a, *zeros), (z - a, *tail), op=h5py.h5s.SELECT_OR)
    ds.id.read(h5py.h5s.create_simple(out.shape), space, out)
    return out


class _OpenShard:
    """A shard as one process reads it: dataset handles looked up once, and the small
    per-structure arrays it needs for every item (8 + 1 + 8 bytes a structure)."""

    def __init__(self, shard: Shard) -> None:
        self.pid = os.getpid()
        f = shard.file
        self.ds = _Datasets(f)
        self.offsets = f["atom_offset"][:]
        self.periodic = f["periodic"][:]
        self.records = f["record"][:]
        self.path = shard.path
        self._maps: dict[str, np.ndarray | None] = {}

    def mapped(self, name: str) -> np.ndarray | None:
        """Dataset ``name`` as a read-only NumPy memory map of its bytes in the file
        (read lazily by the OS, page by page), when HDF5 stores it contiguous,
        unfiltered and in native byte order (as ``pgrid grid`` writes the per-atom
        datasets and ``lattice``); else None (read it through h5py)."""
        if name not in self._maps:
            self._maps[name] = None
            ds = self.ds[name]
            offset = ds.id.get_offset()
            dtype = ds.dtype
            if (
                offset is not None
                and ds.chunks is None
                and dtype.kind in "iuf"
                and dtype.isnative
                and ds.size > 0
            ):
                self._maps[name] = np.memmap(
                    self.path, dtype=dtype, mode="r", offset=offset, shape=ds.shape
                )
        return self._maps[name]


class _Datasets(dict):  # type: ignore[type-arg]
    """name → h5py.Dataset of one open file, looked up on first use."""

    def __init__(self, f: Any) -> None:
        super().__init__()
        self.f = f

    def __missing__(self, key: str) -> Any:
        ds = self[key] = self.f[key]
        return ds


class _AtomColumn:
    """One per-atom dataset over every shard, sliced by global atom index. Keeps the last
    slice read (an item reads its positions twice: for the centroid and to grid)."""

    def __init__(self, table: ShardTable, name: str) -> None:
        self.table = table
        self.name = name
        self._last: tuple[tuple[int, int, int], np.ndarray] | None = None

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("atom columns take a slice a0:a1 (from atom_range)")
        a0, a1 = int(key.start or 0), int(key.stop)
        tag = (os.getpid(), a0, a1)
        if self._last is not None and self._last[0] == tag:
            return self._last[1]
        values = self.table.read_atoms(self.name, a0, a1)
        self._last = (tag, values)
        return values


class _StoredTyped:
    """The typed particles of each structure (the interface of
    :class:`~pgrid_cli.torch.table.TypedParticles`), from the memberships the shards store:
    atom m in channel c with weight ``memberships[m, c]`` times the atom's weight."""

    def __init__(self, table: ShardTable) -> None:
        self.memberships = _AtomColumn(table, f"{ATOM_PROPERTIES}/{TYPED_MEMBERSHIPS}")
        self.table = table

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(atoms, channels, weights) of structure ``i``, in atom then channel order."""
        a0, a1 = self.table.atom_range(i)
        m = np.asarray(self.memberships[a0:a1], dtype=np.float64)
        atoms, chans, w = entries(m, self.table.weights[a0:a1])
        return atoms.astype(np.int32), chans.astype(np.int32), w


class _Column:
    """One per-structure value over every shard, indexed by structure."""

    def __init__(self, table: ShardTable, read: Any) -> None:
        self.table = table
        self.read = read

    def __getitem__(self, i: int) -> Any:
        k, j = self.table.locate(int(i))
        return self.read(self.table.opened(k), j)


class StructureShardDataset(StructureDataset):
    """The structures of structures shards (``pgrid grid --store structures``), gridded
    when they are read with ``recipe``.

    Items are those of :class:`~pgrid_cli.torch.StructureDataset` (``grid``, ``positions``,
    ``numbers``, ``weights``, ``origin``, ``axes``, ``periodic``, ``rotation``,
    ``translation``, ``index``, ``name``, ``source``, ``record``; ``target`` with
    ``targets``); use :attr:`collate` as the DataLoader's ``collate_fn``.

    Parameters
    ----------
    path : a directory of ``shard-*.h5`` structures shards, or one such file
    recipe : the :class:`~pgrid_cli.GridRecipe` to grid with (σ, size, box, channels)
    targets : names of per-record properties (datasets ``properties/<name>`` of the
        shards, one entry per structure); item ``target`` is the property's value as
        float32, or with several names their values flattened and concatenated
    rotate, translate, seed, render, threads, shift_lattice, buffers : as for
        :class:`StructureDataset`

    A structure the recipe cannot grid (an element without a channel, atoms outside a
    ``cube:L``) raises ValueError when its item is read: the shards keep every parsed
    record, whatever recipe comes later.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        recipe: GridRecipe | None = None,
        *,
        targets: Sequence[str] | None = None,
        rotate: bool = False,
        translate: float = 0.0,
        seed: int | None = None,
        render: Render = "item",
        threads: int | None = None,
        shift_lattice: bool = False,
        buffers: int = 0,
    ) -> None:
        self.path = Path(path)
        shards = ShardSet(self.path).shards
        if isinstance(targets, str):
            targets = [targets]
        try:
            table = ShardTable(shards, targets)
        finally:
            for s in shards:
                s.close()  # reopened lazily by whichever process reads
        super().__init__(
            table,  # type: ignore[arg-type]
            recipe,
            rotate=rotate,
            translate=translate,
            seed=seed,
            render=render,
            threads=threads,
            shift_lattice=shift_lattice,
            buffers=buffers,
        )
        _LIVE.add(self)

    @property
    def shard_rejections(self) -> list[Rejection]:
        """The input records the run rejected (kept in the shards by ``pgrid grid``)."""
        try:
            return [r for s in self.table.shards for r in s.rejections()]  # type: ignore[attr-defined]
        finally:
            self.close()

    def close(self) -> None:
        """Close the open HDF5 handles of this process (they reopen when needed)."""
        self.table.close()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return (
            f"StructureShardDataset({str(self.path)!r}: {len(self)} structures in "
            f"{len(self.table.shards)} shard(s), {self.recipe.shape} voxels, "  # type: ignore[attr-defined]
            f"σ = {self.recipe.sigma} Å, channels {self.recipe.channels}, "
            f"{self.augmentation!r}, render={self.render!r})"
        )
