"""PyTorch integration: grids made on the fly in DataLoader workers, shard datasets, and a
differentiable grid layer.

Needs PyTorch (``pip install pgrid-cli[torch]``); ``import pgrid_cli`` alone never imports
it. The pieces::

    from pgrid_cli import GridRecipe
    from pgrid_cli.torch import StructureDataset, ShardDataset, grid_tensor

    recipe = GridRecipe(sigma=0.5, grid_size=32, box="cube:24", channels="elements")
    ds = StructureDataset.from_files(["sample_data/drugs.sdf"], recipe, rotate=True)
    loader = DataLoader(ds, batch_size=32, num_workers=2, collate_fn=ds.collate)
    batch = next(iter(loader))          # batch["grid"]: (32, 11, 32, 32, 32) float32

* :class:`StructureDataset` grids each structure when it is read (per item, or per batch
  in the collate function with ``render="batch"``), with random rotation / translation
  seeded by (seed, epoch, index), so items do not depend on the number of workers.
* :class:`ShardDataset` reads the HDF5 shards of ``pgrid grid`` (docs/format.md), opening the
  files lazily in each process.
* :class:`StructureShardDataset` reads structures shards (``pgrid grid --store
  structures``) one structure at a time and grids them like :class:`StructureDataset`.
* :func:`collate` / :class:`GridCollate` batch items: grids stacked (or rendered with the
  kernel's multi-threaded batch path) into one preallocated tensor, atoms concatenated
  with ``offsets`` (CSR, as in shards).
* In a DataLoader, both grid a batch at a time (``__getitems__``: one gather, one
  augmentation draw, one kernel call, bit for bit the per-item items), into reused
  buffers with ``buffers=k`` (:mod:`pgrid_cli.torch.batching`).
* :func:`grid_tensor` and :class:`GridLayer` make grids from position tensors with
  autograd: the backward pass is the kernel's analytic gradient.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "pgrid_cli.torch needs PyTorch: pip install 'pgrid-cli[torch]' (or pip install torch)"
    ) from exc

from .augment import Augmentation, Transform
from .collate import GridCollate, collate
from .layer import GridLayer, grid_tensor
from .shard_dataset import ShardDataset
from .structure_dataset import StructureDataset
from .structure_shards import StructureShardDataset
from .table import StructureTable, TypedParticles

__all__ = [
    "Augmentation",
    "GridCollate",
    "GridLayer",
    "ShardDataset",
    "StructureDataset",
    "StructureShardDataset",
    "StructureTable",
    "Transform",
    "TypedParticles",
    "collate",
    "grid_tensor",
]
