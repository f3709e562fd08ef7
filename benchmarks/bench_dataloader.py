"""DataLoader throughput: grids made on the fly vs the kernel alone (issue 11, item 4) and
vs grids read from shards (issue 6).

    python benchmarks/bench_dataloader.py [--molecules FILE] [--samples 1200] [--buffers 4]
        [--json out.json]

Samples/s out of a ``torch.utils.data.DataLoader`` (batch size 32, persistent workers,
after one warm-up epoch) with 0, 1 and 2 workers, for 32³ grids in the 11 element
channels (``--channels elements``), σ = 0.5 Å, ``fit`` box — ``pgrid grid``'s defaults:

* on the fly, per item: :class:`StructureDataset` grids in ``__getitem__``;
* on the fly, per batch: ``render="batch"``, one multi-threaded kernel call per batch in
  the collate function, straight into the batch tensor;
  each with and without random rotation (uniform over SO(3)) + 1 Å random translation,
  and each with a new grid tensor per batch (``buffers=0``, the default) and with a ring
  of ``--buffers`` reused ones (``buffers=4``); either way the DataLoader fetches a batch
  with ``__getitems__`` (one gather, one augmentation draw, one kernel call);
* kernel only: the same molecules, parsed and boxed beforehand (:class:`Batch` arrays),
  gridded by the native batch call into one reused (B, C, n, n, n) buffer with as many
  threads as the setting has cores (0 workers: the main process grids with every core;
  w workers: one thread each) — measured just before and just after every DataLoader
  setting, so each ratio compares rates taken under the same load;
* shards: :class:`ShardDataset` over the same grids written once by ``pgrid grid``'s
  library call (:func:`pgrid_cli.runs.grid.grid_files`): its default storage (gzip with
  shuffle, values rounded to 2⁻²¹) and uncompressed float32 (``--compression none
  --lossless``, the fastest a shard can be read). The shard files were just written, so
  they are read from the OS page cache: the most favourable case for shards.

Every figure is measured in this one run: samples/s, and CPU ms per sample (main process
and workers together, from /proc), which depends far less than samples/s on what else
the machine runs. Two sets of ratios: on the fly ÷ kernel only with the same cores (issue
11's goal: ≥ 0.5), and on the fly vs shards at the same worker count (issue 6's goal).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _paths import MOSES100
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader

from pgrid_cli import GridRecipe, kernel_info, render_batch
from pgrid_cli.readers import Rejection, iter_records
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


def kernel_rate(
    recipe: GridRecipe,
    structures: list,
    batch_size: int,
    threads: int,
    samples: int,
    fresh: bool = False,
) -> tuple[float, float]:
    """(structures/s, CPU ms per structure) of the native batch call alone:
    ``structures`` (parsed, boxed and put in the kernel's arrays beforehand) gridded
    ``batch_size`` per call with ``threads`` threads into one reused buffer, or
    (``fresh``) into a new array per batch, as a DataLoader without buffers must; over at
    least ``samples`` structures."""
    batches = [
        recipe.batch(structures[k : k + batch_size]) for k in range(0, len(structures), batch_size)
    ]
    out = np.empty((batch_size, recipe.n_channels, *recipe.shape), dtype=np.float32)
    for b in batches:  # warm-up: first touch of the buffer, thread pool
        render_batch(b, out[: b.grid_shape[0]], threads=threads)
    done = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    while done < samples:
        for b in batches:
            if fresh:
                out = np.empty((batch_size, recipe.n_channels, *recipe.shape), np.float32)
            render_batch(b, out[: b.grid_shape[0]], threads=threads)
            done += b.grid_shape[0]
    return done / (time.perf_counter() - t0), (time.process_time() - cpu0) / done * 1e3


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
    ap.add_argument("--buffers", type=int, default=4, help="reused batch buffers (ring)")
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
    n_cores = len(os.sched_getaffinity(0))
    structures = [r for r in iter_records(args.molecules) if not isinstance(r, Rejection)]

    def kernel(w: int) -> tuple[float, float]:
        threads = w if w else n_cores
        return kernel_rate(opts, structures, args.batch_size, threads, args.samples // 2)

    def record(
        source: str,
        rotate: bool,
        w: int,
        result: tuple[float, float],
        k: tuple[float, float] | None = None,
    ) -> None:
        rate, cpu_ms = result
        rows.append(
            {
                "source": source,
                "augment": rotate,
                "workers": w,
                "samples_per_s": rate,
                "cpu_ms_per_sample": cpu_ms,
                "kernel_samples_per_s": k[0] if k else None,
                "kernel_cpu_ms_per_sample": k[1] if k else None,
                "kernel_threads": (w if w else n_cores) if k else None,
                "ratio_to_kernel": rate / k[0] if k else None,
                "cpu_ratio_to_kernel": k[1] / cpu_ms if k else None,
            }
        )
        aug = "rotate+translate" if rotate else "-"
        ratio = f"{k[0]:10.0f} {k[1]:7.3f} {rate / k[0]:6.2f} {k[1] / cpu_ms:6.2f}" if k else ""
        print(f"{source:<34} {aug:<17} {w:>7} {rate:10.0f} {cpu_ms:7.3f} {ratio}", flush=True)

    kernel_fresh = kernel_rate(opts, structures, args.batch_size, 1, args.samples, fresh=True)
    kernel_reused = kernel_rate(opts, structures, args.batch_size, 1, args.samples)
    print(
        f"kernel only, 1 thread: {kernel_reused[0]:,.0f}/s ({kernel_reused[1]:.3f} CPU ms "
        f"each) into a reused buffer, {kernel_fresh[0]:,.0f}/s ({kernel_fresh[1]:.3f} CPU ms) "
        f"into a new array per batch\n"
        "ratio: samples/s ÷ the kernel's with the same cores, measured just before and after;"
        " CPU ratio: the kernel's CPU ms per sample ÷ the setting's (robust to load)\n"
    )
    print(
        f"{'source':<34} {'augmentation':<17} {'workers':>7} {'samples/s':>10} "
        f"{'CPU ms':>7} {'kernel/s':>10} {'CPU ms':>7} {'ratio':>6} {'CPU r.':>6}"
    )
    for rotate in (False, True):
        for render in ("item", "batch"):
            for buffers in (0, args.buffers):
                ds = StructureDataset.from_files(
                    args.molecules,
                    opts,
                    rotate=rotate,
                    translate=1.0 if rotate else 0.0,
                    seed=0,
                    render=render,
                    buffers=buffers,
                )
                for w in workers:
                    before = kernel(w)
                    result = measure(ds, ds.collate, w, args.batch_size, args.samples)
                    after = kernel(w)
                    k = ((before[0] + after[0]) / 2, (before[1] + after[1]) / 2)
                    label = f"on the fly, per {render}, buffers={buffers}"
                    record(label, rotate, w, result, k)

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
                paths = [
                    f"on the fly, per {r}, buffers={b}"
                    for r in ("item", "batch")
                    for b in (0, args.buffers)
                ]
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
                    "kernel_one_thread": {
                        "reused": dict(
                            zip(("samples_per_s", "cpu_ms"), kernel_reused, strict=True)
                        ),
                        "fresh": dict(zip(("samples_per_s", "cpu_ms"), kernel_fresh, strict=True)),
                    },
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
    with threadpool_limits(limits=1, user_api="blas"):  # spinning BLAS threads slow the kernel
        main()
