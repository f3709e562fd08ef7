"""A dataset over the HDF5 shards of ``pgrid grid`` (docs/format.md §6).

HDF5 handles must not cross process boundaries: :class:`pgrid_cli.shards.Shard` opens
its file lazily in whichever process reads it (and never pickles the handle), and this
module closes the handles of every live :class:`ShardDataset` just before the process
forks, so DataLoader workers never inherit an open file either.
"""

from __future__ import annotations

import operator
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.energy import EnergySpec
from ..core.recipe import GridRecipe
from ..readers.records import Rejection
from ..store.layout import density_channels
from ..store.shard import Shard, ShardSet
from . import targets as tg
from .collate import collate

_LIVE: weakref.WeakSet[ShardDataset] = weakref.WeakSet()


def _close_before_fork() -> None:
    for ds in list(_LIVE):
        ds.close()


os.register_at_fork(before=_close_before_fork)


def plain_name(shard: Shard, j: int) -> str:
    v = shard.file["name"][j]
    return v.decode() if isinstance(v, bytes) else str(v)


class ShardDataset(Dataset):
    """The structures of a shard directory (or one shard file), with random access.

    Item ``i`` is a dict:

    - ``grid`` (C, nx, ny, nz) tensor, float32 (or the stored dtype with ``dtype=None``);
    - ``positions`` (M, 3) float64, Å, in the input frame; ``numbers`` (M,) int64;
      ``weights`` (M,) float64 if the shards store per-atom weights;
    - ``origin`` (3,), ``axes`` (3, 3) float64, Å, and ``periodic``: the grid box;
    - ``index`` (position in the dataset), ``name``, ``source``, ``record``; ``id`` (the
      record's id in its run) for format version 2 shards;
    - ``targets`` (T,) float32 with ``targets=[...]`` and ``atom_targets`` (M, Ta) float32
      with ``atom_targets=[...]``: stored properties (``properties/<name>``,
      ``atom_properties/<name>``); missing values as ``nan_targets`` says
      (:mod:`pgrid_cli.torch.targets`: ``error``, ``skip`` or ``mask``).

    Use :attr:`collate` (or :func:`pgrid_cli.torch.collate`) as the DataLoader's
    ``collate_fn``: the default one cannot batch atom lists of different lengths.

    Parameters
    ----------
    path : a directory of ``shard-*.h5`` files, or one shard file
    dtype : torch dtype of the returned grids (``None``: as stored, float32 or float16)
    targets, atom_targets : names of stored properties to yield as training targets
    nan_targets : what a missing target does: ``error``, ``skip`` or ``mask``
    """

    collate = staticmethod(collate)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = torch.float32,
        targets: str | Sequence[str] | None = None,
        atom_targets: str | Sequence[str] | None = None,
        nan_targets: tg.NanTargets = "error",
    ) -> None:
        tg.check_policy(nan_targets)
        self.path = Path(path)
        self.shards = ShardSet(self.path)
        self.dtype = dtype
        self.targets = tg.names(targets)
        self.atom_targets = tg.names(atom_targets)
        self.nan_targets = nan_targets
        self._items: np.ndarray | None = None  # dataset index → global structure (skip)
        try:
            first = self.shards.shards[0]
            self.attrs: dict[str, Any] = first.attrs
            # Items of one dataset must have the same keys (for collate): weights for all
            # or for none.
            self.has_weights = any("weights" in s.file for s in self.shards.shards)
            for shard in self.shards.shards[1:]:
                for key in ("sigma", "channels", "grid_shape"):
                    if shard.attrs[key] != self.attrs[key]:
                        raise ValueError(
                            f"{shard.path.name} has {key}={shard.attrs[key]!r} but "
                            f"{first.path.name} has {self.attrs[key]!r}: one dataset needs "
                            f"one kind of grid"
                        )
            self.has_ids = all("id" in s.file for s in self.shards.shards)
            if self.targets or self.atom_targets:
                self._check_targets()
        finally:
            self.close()  # reopened lazily by whichever process reads
        _LIVE.add(self)

    @property
    def sigma(self) -> float:
        """Gaussian standard deviation of the stored grids, Å."""
        return float(self.attrs["sigma"])

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.attrs["channels"])

    @property
    def grid_shape(self) -> tuple[int, int, int, int]:
        """(C, nx, ny, nz) of one grid."""
        return (len(self.channels), *(int(n) for n in self.attrs["grid_shape"]))  # type: ignore[return-value]

    @property
    def recipe(self) -> GridRecipe:
        """The recipe the grids were made with (to grid more structures the same way)."""
        return GridRecipe(
            sigma=self.sigma,
            grid_size=self.grid_shape[1:],
            box=str(self.attrs.get("box", "fit")),
            padding=float(self.attrs.get("padding", 2.0)),
            # the density channels; a computed one (``lj:CH4``, last) is the recipe's energy
            channels=",".join(density_channels(self.attrs)),
            energy=EnergySpec.from_attribute(e) if (e := self.attrs.get("energy")) else None,
        )

    def _target_values(self, shard: Shard, j: int | slice) -> np.ndarray:
        """(…, T) float64 targets of structure(s) ``j`` of ``shard`` (NaN: missing)."""
        n = len(range(*j.indices(len(shard)))) if isinstance(j, slice) else None
        cols = []
        for name in self.targets:
            if name in shard.property_names:
                cols.append(tg.numeric(name, shard.property_column(name))[j])
            else:
                cols.append(np.full(n, np.nan) if n is not None else np.nan)
        return np.stack(cols, axis=-1) if cols else np.zeros((n, 0) if n is not None else 0)

    def _atom_target_values(self, shard: Shard, j: int) -> np.ndarray:
        """(M, Ta) float64 per-atom targets of structure ``j`` of ``shard``."""
        a0, a1 = shard._atom_range(j)
        cols = []
        for name in self.atom_targets:
            if name in shard.atom_property_names:
                v = tg.numeric(name, shard.file[f"atom_properties/{name}"][a0:a1])
                cols.append(v.reshape(a1 - a0, -1))
            else:
                cols.append(np.full((a1 - a0, 1), np.nan))
        return np.concatenate(cols, axis=1) if cols else np.zeros((a1 - a0, 0))

    def _check_targets(self) -> None:
        """Check the targets exist and are numbers; apply ``nan_targets`` (error, skip)."""
        for name, where in [(n, "property_names") for n in self.targets] + [
            (n, "atom_property_names") for n in self.atom_targets
        ]:
            if not any(name in getattr(s, where) for s in self.shards.shards):
                kind = "property" if where == "property_names" else "atom property"
                raise KeyError(f"no shard in {self.path} has the {kind} {name!r}")
        if self.nan_targets == "mask":
            return
        good = []
        for shard in self.shards.shards:
            ok = np.all(np.isfinite(self._target_values(shard, slice(None))), axis=1)
            if self.atom_targets:
                for j in np.flatnonzero(ok):
                    ok[j] = bool(np.all(np.isfinite(self._atom_target_values(shard, int(j)))))
            if self.nan_targets == "error" and not ok.all():
                j = int(np.flatnonzero(~ok)[0])
                raise ValueError(
                    f"{shard.path.name} structure {j} ({plain_name(shard, j)}) has no value for "
                    f"a target of {[*self.targets, *self.atom_targets]} ({int((~ok).sum())} "
                    f"such in this shard): use nan_targets='skip' or 'mask'"
                )
            good.append(ok)
        if self.nan_targets == "skip":
            self._items = np.flatnonzero(np.concatenate(good))

    def __len__(self) -> int:
        return len(self.shards) if self._items is None else len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = operator.index(index)
        if self._items is not None:
            n = len(self._items)
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for a dataset of {n} structures")
            i %= n
        shard, j = self.shards.locate(i if self._items is None else int(self._items[i]))
        rec = shard[j]
        g = torch.from_numpy(rec.grid)
        item = {
            "grid": g if self.dtype is None else g.to(self.dtype),
            "positions": torch.from_numpy(np.asarray(rec.positions, dtype=np.float64)),
            "numbers": torch.from_numpy(rec.numbers.astype(np.int64)),
        }
        if self.has_weights:
            w = np.ones(len(rec.numbers)) if rec.weights is None else rec.weights
            item["weights"] = torch.from_numpy(np.asarray(w, dtype=np.float64))
        item.update(
            origin=torch.from_numpy(rec.box.origin.copy()),
            axes=torch.from_numpy(rec.box.axes.copy()),
            periodic=rec.box.periodic,
            index=i % len(self),
            name=rec.name,
            source=rec.source,
            record=rec.record,
        )
        if self.has_ids:
            item["id"] = rec.id
        mask = self.nan_targets == "mask"
        if self.targets:
            item.update(tg.item_targets(self._target_values(shard, j), "targets", mask))
        if self.atom_targets:
            values = self._atom_target_values(shard, j)
            item.update(tg.item_targets(values, "atom_targets", mask))
        return item

    @property
    def rejections(self) -> list[Rejection]:
        """The input records the run rejected (kept in the shards by ``pgrid grid``)."""
        try:
            return [r for shard in self.shards.shards for r in shard.rejections()]
        finally:
            self.close()

    def close(self) -> None:
        """Close the open HDF5 handles of this process (they reopen when needed)."""
        for shard in self.shards.shards:
            shard.close()

    def __repr__(self) -> str:
        return (
            f"ShardDataset({str(self.path)!r}: {len(self)} structures in "
            f"{len(self.shards.shards)} shard(s), grid {self.grid_shape}, σ = {self.sigma} Å)"
        )
