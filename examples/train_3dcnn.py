"""Train a small 3D CNN on a stored property: the HOMO-LUMO gap of QM9-format files.

    python examples/train_3dcnn.py [--seconds 60] [--workers 1] [--device cpu]
    python examples/train_3dcnn.py --shards out/qm9     # grid once, train from shards

The 64 small molecules of sample_data/qm9_synthetic/ (QM9's file format; geometries from
RDKit, properties SYNTHETIC — made up by tools/make_qm9_sample.py, see
sample_data/README.md) are read by pgrid's QM9 reader, which keeps every property of the
file. ``targets=["gap"]`` makes each item carry ``targets`` (B, 1) float32: the gap in
Hartree, as stored. By default a :class:`pgrid_cli.torch.StructureDataset` grids the
molecules in the DataLoader workers every epoch (24³, channels C,H,N,O,F, σ = 0.5 Å,
a fixed 12 Å cube: 0.5 Å voxels) after a random rotation and a shift of up to 1 Å; with
``--shards DIR`` the script runs ``pgrid grid`` once into DIR and trains on a
:class:`pgrid_cli.torch.ShardDataset` of the stored grids and properties (no
augmentation). It prints the training loss (MSE of the standardised gap) and the
validation error (MAE in mHa) as they fall.

From a QM9-format folder to (grid, gap) batches::

    pgrid grid sample_data/qm9_synthetic --out out/qm9 --grid-size 24 --box cube:12 \
        --channels C,H,N,O,F

    from pgrid_cli.torch import ShardDataset
    data = ShardDataset("out/qm9", targets=["gap"])    # nan_targets="skip" | "mask"
    loader = DataLoader(data, batch_size=16, shuffle=True, num_workers=2,
                        collate_fn=data.collate)
    for batch in loader:
        grid, gap = batch["grid"], batch["targets"][:, 0]

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
from torch import nn
from torch.utils.data import DataLoader, Subset

from pgrid_cli import GridRecipe
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.torch import ShardDataset, StructureDataset

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "sample_data" / "qm9_synthetic")
    ap.add_argument("--target", default="gap", help="the stored property to learn")
    ap.add_argument("--shards", type=Path, help="grid into this directory, train from it")
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

    recipe = GridRecipe(grid_size=24, sigma=0.5, channels="C,H,N,O,F", box="cube:12")
    if args.shards is None:
        data = StructureDataset.from_files(
            args.data,
            recipe,
            targets=[args.target],  # the property the QM9 reader stored, as (1,) float32
            rotate=True,
            translate=1.0,
            seed=args.seed,
            render="batch",  # one kernel call per batch, in the worker
        )
        # Validation without augmentation: a second dataset over the same (shared) table.
        plain = StructureDataset(data.table, recipe, render="batch")
        plain.nan_targets = data.nan_targets
        y = torch.from_numpy(data.table.property_targets[:, 0])
    else:
        options = GridOptions(grid_size=24, sigma=0.5, channels="C,H,N,O,F", box="cube:12")
        grid_files([args.data], args.shards, options, overwrite=True, workers=args.workers)
        data = plain = ShardDataset(args.shards, targets=[args.target])
        y = torch.tensor([float(data[i]["targets"][0]) for i in range(len(data))])
    order = np.random.default_rng(args.seed).permutation(len(data))
    n_train = int(0.8 * len(data))
    train = Subset(data, order[:n_train].tolist())
    val = Subset(plain, order[n_train:].tolist())
    mean, std = y[order[:n_train]].mean(), y[order[:n_train]].std()
    made = "stored in shards" if args.shards else f"made on the fly by {args.workers} worker(s)"
    print(
        f"{len(data)} molecules ({len(train)} train, {len(val)} validation), grids "
        f"{tuple(recipe.shape)} × {recipe.n_channels} channels {made}; target "
        f"{args.target} {mean:.4f} ± {std:.4f} (stored property)"
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
    model = SmallCNN(recipe.n_channels).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=0.93)
    # Densities are about 0–0.3 per voxel; a fixed scale keeps the inputs near unit size.
    scale = 10.0

    start = time.perf_counter()
    for epoch in range(args.epochs):
        if isinstance(data, StructureDataset):
            data.set_epoch(epoch)  # new rotations every epoch, the same in every worker
        model.train()
        total, n = 0.0, 0
        for batch in train_loader:
            x = batch["grid"].to(device, non_blocking=True) * scale
            t = ((batch["targets"][:, 0] - mean) / std).to(device, non_blocking=True)
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
                errors.append((pred - batch["targets"][:, 0]).abs())
        mae = torch.cat(errors).mean().item() * 1000  # Hartree → mHa
        elapsed = time.perf_counter() - start
        print(
            f"epoch {epoch + 1:3d}  train loss {total / n:6.3f}  "
            f"validation MAE {mae:6.2f} mHa  ({elapsed:5.1f} s)",
            flush=True,
        )
        if elapsed > args.seconds:
            break
    baseline = (y[order[n_train:]] - mean).abs().mean().item() * 1000
    print(f"(predicting the training mean would give a validation MAE of {baseline:.2f} mHa)")


if __name__ == "__main__":
    main()
