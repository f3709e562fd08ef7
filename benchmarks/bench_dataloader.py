"""DataLoader throughput: grids made on the fly vs grids read from shards (issue 6).

    python benchmarks/bench_dataloader.py [--molecules FILE] [--samples 1200] [--json out.json]

Samples/s out of a ``torch.utils.data.DataLoader`` (batch size 32, persistent workers,
after one warm-up epoch) with 0, 1 and 2 workers, for 32³ grids in the 11 element
channels (``--channels elements``), σ = 0.5 Å, ``fit`` box — ``pgrid grid``'s defaults:

* on the fly, per item: :class:`StructureDataset` grids in ``__getitem__``;
* on the fly, per batch: ``render="batch"``, one multi-threaded kernel call per batch in
  the collate function, straight into the batch tensor;
  each with and without random rotation (uniform over SO(3)) + 1 Å random translation;
* shards: :class:`ShardDataset` over the same grids written once by ``pgrid grid``'s
  library call (:func:`pgrid_cli.runs.grid.grid_files`): its default storage (gzip with
  shuffle, values rounded to 2⁻²¹) and uncompressed float32 (``--compression none
  --lossless``, the fastest a shard can be read). The shard files were just written, so
  they are read from the OS page cache: the most favourable case for shards.

Every figure is measured in this one run: samples/s, and CPU ms per sample (main process
and workers together, from /proc), which depends far less than samples/s on what else
the machine runs. The ratios (on the fly vs shards at the same worker count) are what
the issue's goal is about: on the fly with 2 workers at least as fast as reading the same
grids from shards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from _paths import MOSES100
from torch.utils.data import DataLoader

from pgrid_cli import GridRecipe, kernel_info
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.torch import ShardDataset, StructureDataset

DEFAULT_MOLECULES = MOSES100


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by other processes (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def measure(dataset, collate, workers: int, batch_size: int, samples: int) -> tuple[float, float]:
    """(samples/s, CPU ms per sample in the main process and the workers together), over
    at least ``samples`` samples after one warm-up epoch. The CPU time barely depends on
    what else the machine runs; the rate does."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    for _ in loader:  # warm-up: worker start, page cache, first-touch allocations
        pass
    pids = [w.pid for w in loader._iterator._workers] if workers else []
    done, epoch = 0, 1
    cpu0, t0 = time.process_time() + cpu_seconds(pids), time.perf_counter()
    while done < samples:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        for batch in loader:
            done += len(batch["grid"])
        epoch += 1
    seconds = time.perf_counter() - t0
    cpu = time.process_time() + cpu_seconds(pids) - cpu0
    del loader  # stops the workers
    return done / seconds, cpu / done * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--molecules", type=Path, default=DEFAULT_MOLECULES)
    ap.add_argument("--samples", type=int, default=1200, help="samples timed per setting")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--grid-size", type=int, default=32)
    ap.add_argument("--channels", default="elements")
    ap.add_argument("--box", default="fit")
    ap.add_argument("--workers", default="0,1,2", help="worker counts, comma-separated")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    workers = [int(w) for w in args.workers.split(",")]
    fields = dict(grid_size=args.grid_size, sigma=0.5, channels=args.channels, box=args.box)
    opts = GridRecipe(**fields)
    info = kernel_info()
    load = os.getloadavg()
    print(
        f"kernel {info['isa']}, {info['hardware_threads']} hardware threads, torch "
        f"{torch.__version__}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"{args.molecules}: {args.grid_size}³ grids, channels {args.channels}, σ = 0.5 Å, "
        f"box {args.box}, batch {args.batch_size}, {args.samples} samples per setting\n"
    )
    rows: list[dict[str, object]] = []

    def record(source: str, rotate: bool, w: int, result: tuple[float, float]) -> None:
        rate, cpu_ms = result
        rows.append(
            {
                "source": source,
                "augment": rotate,
                "workers": w,
                "samples_per_s": rate,
                "cpu_ms_per_sample": cpu_ms,
            }
        )
        aug = "rotate+translate" if rotate else "-"
        print(f"{source:<28} {aug:<17} {w:>7} {rate:10.0f} {cpu_ms:10.2f}", flush=True)

    print(
        f"{'source':<28} {'augmentation':<17} {'workers':>7} {'samples/s':>10} "
        f"{'CPU ms/sample':>10}"
    )
    for rotate in (False, True):
        for render in ("item", "batch"):
            ds = StructureDataset.from_files(
                args.molecules,
                opts,
                rotate=rotate,
                translate=1.0 if rotate else 0.0,
                seed=0,
                render=render,
            )
            for w in workers:
                result = measure(ds, ds.collate, w, args.batch_size, args.samples)
                record(f"on the fly, per {render}", rotate, w, result)

    with tempfile.TemporaryDirectory(prefix="pgrid-bench-") as tmp:
        storages = {
            "shards, gzip (default)": {},
            "shards, uncompressed": {"compression": "none", "lossless": True},
        }
        for label, storage in storages.items():
            out = Path(tmp) / label.split()[1]
            shard_opts = GridOptions(**fields, **storage)
            grid_files([args.molecules], out, shard_opts, workers=0)
            ds = ShardDataset(out)
            size = sum(f.stat().st_size for f in out.glob("shard-*.h5"))
            print(f"  ({label}: {size / len(ds) / 1e3:.1f} kB per grid)")
            for w in workers:
                record(label, False, w, measure(ds, ds.collate, w, args.batch_size, args.samples))

    def value(source: str, w: int, key: str, rotate: bool = False) -> float:
        return next(
            float(r[key])  # type: ignore[arg-type]
            for r in rows
            if r["source"] == source and r["workers"] == w and r["augment"] == rotate
        )

    print(
        "\nratios vs shards at the same worker count, for the faster on-the-fly path:\n"
        "  speed = samples/s on the fly ÷ shards (> 1: on the fly delivers more),\n"
        "  CPU = CPU ms/sample shards ÷ on the fly (> 1: on the fly costs less CPU)"
    )
    ratios = []
    for w in workers:
        for shard in ("shards, gzip (default)", "shards, uncompressed"):
            for rotate in (False, True):
                paths = [f"on the fly, per {r}" for r in ("item", "batch")]
                fly = max(paths, key=lambda p: value(p, w, "samples_per_s", rotate))
                speed = value(fly, w, "samples_per_s", rotate) / value(shard, w, "samples_per_s")
                cpu = value(shard, w, "cpu_ms_per_sample") / value(
                    fly, w, "cpu_ms_per_sample", rotate
                )
                ratios.append(
                    {
                        "workers": w,
                        "shards": shard,
                        "augment": rotate,
                        "on_the_fly": fly,
                        "speed_ratio": speed,
                        "cpu_ratio": cpu,
                    }
                )
                aug = "rotate+translate" if rotate else "no augmentation"
                print(f"  {w} workers, {aug:<16} vs {shard:<24} speed {speed:5.2f}  CPU {cpu:5.2f}")

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": {"cpu": platform.processor() or platform.machine(), **info},
                    "load_average": load,
                    "molecules": str(args.molecules),
                    "options": {
                        "grid_size": args.grid_size,
                        "channels": args.channels,
                        "box": args.box,
                        "sigma": 0.5,
                        "batch_size": args.batch_size,
                    },
                    "rows": rows,
                    "ratios": ratios,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
