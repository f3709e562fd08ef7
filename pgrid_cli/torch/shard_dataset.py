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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.recipe import GridRecipe
from ..readers.records import Rejection
from ..store.shard import ShardSet
from .collate import collate

_LIVE: weakref.WeakSet[ShardDataset] = weakref.WeakSet()


def _close_before_fork() -> None:
    for ds in list(_LIVE):
        ds.close()


os.register_at_fork(before=_close_before_fork)


class ShardDataset(Dataset):
    """The structures of a shard directory (or one shard file), with random access.

    Item ``i`` is a dict:

    - ``grid`` (C, nx, ny, nz) tensor, float32 (or the stored dtype with ``dtype=None``);
    - ``positions`` (M, 3) float64, Å, in the input frame; ``numbers`` (M,) int64;
      ``weights`` (M,) float64 if the shards store per-atom weights;
    - ``origin`` (3,), ``axes`` (3, 3) float64, Å, and ``periodic``: the grid box;
    - ``index`` (position in the dataset), ``name``, ``source``, ``record``.

    Use :attr:`collate` (or :func:`pgrid_cli.torch.collate`) as the DataLoader's
    ``collate_fn``: the default one cannot batch atom lists of different lengths.

    Parameters
    ----------
    path : a directory of ``shard-*.h5`` files, or one shard file
    dtype : torch dtype of the returned grids (``None``: as stored, float32 or float16)
    """

    collate = staticmethod(collate)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = torch.float32,
    ) -> None:
        self.path = Path(path)
        self.shards = ShardSet(self.path)
        self.dtype = dtype
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
            channels=",".join(self.channels),
        )

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = operator.index(index)
        shard, j = self.shards.locate(i)
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
