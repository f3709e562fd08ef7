"""Train a small 3D CNN on grids made on the fly (CPU, about a minute).

    python examples/train_3dcnn.py [--seconds 60] [--workers 1] [--device cpu]

The 126 drug molecules of sample_data/drugs.sdf are read once into a
:class:`pgrid_cli.torch.StructureDataset`; every epoch, DataLoader workers grid them
again (24³, element channels, σ = 0.5 Å, ``fit`` box) after a random rotation and a random
shift of up to 1 Å, so the network never sees the same grid twice. The target is each
molecule's topological polar surface area (RDKit's TPSA, in Å²), computed here offline;
the network predicts it from the density alone. The script prints the training loss (MSE
of the standardised target) and the validation error (MAE in Å²) as they fall.

Switching to shards
-------------------
Grid once, then read the stored grids (no augmentation is possible then)::

    pgrid grid sample_data/drugs.sdf --out out/drugs --grid-size 24

    from pgrid_cli.torch import ShardDataset
    data = ShardDataset("out/drugs")           # items: grid, positions, numbers, name, record
    loader = DataLoader(data, batch_size=16, shuffle=True, num_workers=2,
                        collate_fn=data.collate)
    target = torch.from_numpy(tpsa)[batch["record"]]   # targets by record index

Switching to a GPU
------------------
Grids are made on the CPU in the workers while the GPU trains: give ``--device cuda``
(the loader then pins its batches, and each batch moves with ``.to(device,
non_blocking=True)``), and use as many workers as it takes to keep the GPU busy
(``--workers``; ``benchmarks/bench_dataloader.py`` measures samples/s per worker).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem, RDLogger
from rdkit.Chem import Descriptors
from torch import nn
from torch.utils.data import DataLoader, Subset

from pgrid_cli import GridRecipe
from pgrid_cli.torch import StructureDataset

ROOT = Path(__file__).resolve().parents[1]


class SmallCNN(nn.Module):
    """Three conv blocks (24³ → 12³ → 6³ → 3³), global average pool, a linear head."""

    def __init__(self, channels: int) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv3d(c_in, c_out, 3, padding=1),
                nn.BatchNorm3d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool3d(2),
            )

        self.features = nn.Sequential(block(channels, 16), block(16, 32), block(32, 64))
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def tpsa_of_sdf(path: Path) -> np.ndarray:
    """TPSA (Å²) of every record of an SD file, indexed by record number."""
    RDLogger.DisableLog("rdApp.*")
    return np.array([Descriptors.TPSA(m) for m in Chem.SDMolSupplier(str(path))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "sample_data" / "drugs.sdf")
    ap.add_argument("--seconds", type=float, default=60.0, help="training time budget")
    ap.add_argument("--epochs", type=int, default=200, help="at most this many epochs")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cpu":
        # Training and gridding share the CPU: leave the workers their cores (PyTorch's
        # own threads spin while they wait for busy cores, which slows everything down).
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) - args.workers))

    # The target, offline: one TPSA value per SD record, looked up by record index.
    tpsa = tpsa_of_sdf(args.data)
    options = GridRecipe(grid_size=24, sigma=0.5, channels="elements", box="fit")
    data = StructureDataset.from_files(
        args.data,
        options,
        target=lambda s: tpsa[s.record],
        rotate=True,
        translate=1.0,
        seed=args.seed,
        render="batch",  # one kernel call per batch, in the worker
    )
    # Validation without augmentation: a second dataset over the same (shared) table.
    plain = StructureDataset(data.table, options, render="batch")
    order = np.random.default_rng(args.seed).permutation(len(data))
    train, val = Subset(data, order[:100].tolist()), Subset(plain, order[100:].tolist())
    y = torch.from_numpy(data.table.targets)
    mean, std = y[order[:100]].mean(), y[order[:100]].std()
    print(
        f"{len(data)} molecules ({len(train)} train, {len(val)} validation), grids "
        f"{tuple(options.shape)} × {options.n_channels} channels made "
        f"on the fly by {args.workers} worker(s); target TPSA {mean:.1f} ± {std:.1f} Å²"
    )

    def loader(subset: Subset, shuffle: bool) -> DataLoader:
        return DataLoader(
            subset,
            batch_size=args.batch_size,
            shuffle=shuffle,
            num_workers=args.workers,
            collate_fn=data.collate,
            persistent_workers=args.workers > 0,
            pin_memory=device.type == "cuda",
        )

    train_loader, val_loader = loader(train, True), loader(val, False)
    model = SmallCNN(options.n_channels).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=0.93)
    # Densities are about 0–0.3 per voxel; a fixed scale keeps the inputs near unit size.
    scale = 10.0

    start = time.perf_counter()
    for epoch in range(args.epochs):
        data.set_epoch(epoch)  # new rotations every epoch, the same in every worker
        model.train()
        total, n = 0.0, 0
        for batch in train_loader:
            x = batch["grid"].to(device, non_blocking=True) * scale
            t = ((batch["target"] - mean) / std).to(device, non_blocking=True)
            loss = nn.functional.mse_loss(model(x), t)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(t)
            n += len(t)
        schedule.step()
        model.eval()
        errors = []
        with torch.no_grad():
            for batch in val_loader:
                pred = model(batch["grid"].to(device) * scale).cpu() * std + mean
                errors.append((pred - batch["target"]).abs())
        mae = torch.cat(errors).mean().item()
        elapsed = time.perf_counter() - start
        print(
            f"epoch {epoch + 1:3d}  train loss {total / n:6.3f}  "
            f"validation MAE {mae:5.1f} Å²  ({elapsed:5.1f} s)",
            flush=True,
        )
        if elapsed > args.seconds:
            break
    baseline = (y[order[100:]] - mean).abs().mean().item()
    print(f"(predicting the training mean would give a validation MAE of {baseline:.1f} Å²)")


if __name__ == "__main__":
    main()
