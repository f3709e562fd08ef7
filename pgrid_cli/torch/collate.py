"""Batching items into tensors: grids into one preallocated (B, C, nx, ny, nz) tensor,
atoms concatenated with CSR ``offsets`` (the layout of :class:`pgrid_cli.Batch` and of
the shards).

A collated batch has, depending on what the items carry:

=============== ======================== =============================================
key             shape / dtype            meaning
=============== ======================== =============================================
``grid``        (B, C, nx, ny, nz) f32   densities (float16 if a shard stores them so)
``positions``   (M, 3) float64           Å, every structure's atoms one after another
``numbers``     (M,) int64               atomic numbers
``weights``     (M,) float64             per-atom weights (on-the-fly datasets)
``offsets``     (B+1,) int64             structure s owns atoms offsets[s]:offsets[s+1]
``origin``      (B, 3) float64           Å, corner of voxel (0, 0, 0)
``axes``        (B, 3, 3) float64        Å, rows are the box edge vectors
``periodic``    (B,) bool
``index``       (B,) int64               dataset index of each item
``atom_targets`` (M, Ta) float32          per-atom targets (and ``atom_targets_mask``)
other tensors   (B, ...)                 stacked (``targets``, ``rotation``, ...)
strings         list of B str            ``name``, ``source``
=============== ======================== =============================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from ..core.kernel import Batch, render_batch
from ..core.recipe import GridRecipe

#: Per-atom keys: concatenated along the atoms, with ``offsets`` added.
ATOM_KEYS = ("positions", "numbers", "weights", "atom_targets", "atom_targets_mask")
#: The keys the kernel needs to grid an item in the collate function.
RENDER_KEYS = ("positions", "numbers", "origin", "axes", "periodic")


def empty_shared(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised, C-contiguous tensor of ``shape``.

    Inside a DataLoader worker it is allocated in shared memory (as PyTorch's own
    ``default_collate`` does), so handing it to the main process copies nothing.
    """
    shape = tuple(int(s) for s in shape)
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    try:  # what default_collate does: allocate in shared memory directly
        storage = torch.UntypedStorage._new_shared(math.prod(shape) * itemsize)
    except AttributeError:  # a PyTorch without this private helper: one extra copy
        return torch.empty(shape, dtype=dtype).share_memory_()
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack`` into :func:`empty_shared` memory.

    CPU tensors are copied with NumPy: a plain single-threaded memcpy. ``torch.stack`` on
    a busy machine can be 20× slower, its OpenMP threads spinning while they wait for
    cores (measured: 46 MB in 500 ms vs 9 ms under a load of 4 on 2 cores).
    """
    first = tensors[0]
    out = empty_shared((len(tensors), *first.shape), first.dtype)
    if first.device.type == "cpu" and not any(t.requires_grad for t in tensors):
        try:
            np.stack([t.numpy() for t in tensors], out=out.numpy())
            return out
        except TypeError:  # a dtype NumPy does not have (bfloat16, ...)
            pass
    return torch.stack(list(tensors), out=out)


def default_threads(threads: int | None) -> int | None:
    """Kernel threads for work done while loading: one per DataLoader worker (the workers
    are the parallelism), every core in the main process."""
    if threads is not None:
        return threads
    return 1 if get_worker_info() is not None else None


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch the items of :class:`StructureDataset` or :class:`ShardDataset`.

    Grids are stacked into one tensor (in shared memory inside a worker), per-atom
    tensors concatenated with ``offsets``, other tensors stacked, numbers turned into
    tensors and strings kept as lists. Items without a ``grid`` stay without one: use
    :class:`GridCollate` to render them. What ``StructureDataset.__getitems__`` returns
    (an :class:`~pgrid_cli.torch.batching.ItemBatch`) is fetched and gridded as one batch.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    if hasattr(items, "collate"):  # an ItemBatch (StructureDataset.__getitems__)
        return items.collate()  # type: ignore[attr-defined,no-any-return]
    keys = list(items[0].keys())
    for n, item in enumerate(items):
        if list(item.keys()) != keys:
            raise ValueError(
                f"items of a batch must have the same keys: item 0 has {keys}, "
                f"item {n} has {list(item.keys())}"
            )
    out: dict[str, Any] = {}
    for key in keys:
        values = [item[key] for item in items]
        first = values[0]
        if key in ATOM_KEYS:
            out[key] = torch.cat(values)
        elif isinstance(first, torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"{key!r} has different shapes in one batch: {sorted(shapes)}")
            out[key] = stack(values)
        elif isinstance(first, (bool, np.bool_)):
            out[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, (int, np.integer)):
            out[key] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(first, (float, np.floating)):
            out[key] = torch.tensor(values, dtype=torch.float64)
        else:
            out[key] = list(values)
    atoms = next((k for k in ATOM_KEYS if k in out), None)
    if atoms is not None:
        counts = torch.tensor([len(item[atoms]) for item in items], dtype=torch.int64)
        out["offsets"] = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    return out


class GridCollate:
    """Collate function that grids a whole batch in one call of the kernel's
    multi-threaded batch path, straight into the batch's preallocated grid tensor.

    Items need ``positions``, ``numbers``, ``origin``, ``axes`` and ``periodic`` (and
    optionally ``weights``), as :class:`StructureDataset` returns with
    ``render="batch"``; items that already carry a ``grid`` are just stacked. Picklable,
    so it runs in the DataLoader workers.

    Parameters
    ----------
    recipe : GridRecipe
        σ, grid size and channels (the boxes come with the items).
    threads : int, optional
        Kernel threads; default one inside a worker, every core in the main process.
    """

    def __init__(self, recipe: GridRecipe, threads: int | None = None) -> None:
        if not isinstance(recipe, GridRecipe):
            raise TypeError(f"recipe must be a pgrid_cli.GridRecipe, got {type(recipe).__name__}")
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.recipe = recipe
        self.threads = threads

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        dataset = getattr(items, "dataset", None)  # an ItemBatch: fetched as one batch
        if hasattr(items, "collate") and getattr(dataset, "recipe", None) == self.recipe:
            return items.collate(self.threads)  # type: ignore[attr-defined,no-any-return]
        out = collate(list(items) if hasattr(items, "collate") else items)
        if "grid" in out:
            return out
        missing = [k for k in RENDER_KEYS if k not in out]
        if missing:
            raise ValueError(f"cannot grid items without {', '.join(missing)}")
        recipe = self.recipe
        batch = Batch.from_flat(
            out["positions"].numpy(),
            out["offsets"].numpy(),
            recipe.spec.assign(out["numbers"].numpy()),
            recipe.sigma,
            out["weights"].numpy() if "weights" in out else None,
            out["origin"].numpy(),
            out["axes"].numpy(),
            out["periodic"].numpy(),
            recipe.shape,
            recipe.n_channels,
        )
        grids = empty_shared(batch.grid_shape)
        render_batch(batch, grids.numpy(), threads=default_threads(self.threads))
        return {"grid": grids, **out}

    def __repr__(self) -> str:
        return f"GridCollate({self.recipe!r}, threads={self.threads})"
