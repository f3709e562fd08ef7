"""Parse once, grid every epoch: structures shards gridded on the fly (issue 16).

    python benchmarks/bench_structure_shards.py [--copies 160] [--samples 3200] [--json out.json]

Builds a corpus of ``--copies`` × sample_data/drugs.sdf (126 drug-like molecules each;
160 copies: 20,160 structures) in ``--work`` (default: a temporary directory on the same
disk as /tmp), writes it once as structures shards (``pgrid grid --store structures``)
and once as stored grids (``pgrid grid``'s defaults: 32³, 11 element channels, σ = 0.5 Å,
fit box, rounded + gzip), then measures samples/s out of a ``torch.utils.data.DataLoader``
(batch 32, random order, random rotation + 1 Å translation where the source grids), and
the memory of each process (RSS and PSS, from /proc), for

* kernel only: the molecules already parsed, in memory, gridded with the batch entry
  point (``render_batch``, one thread, 32 per call) into a reused buffer — the bound;
* StructureShardDataset (render="batch": one kernel call per batch in the collate);
* ShardDataset over the stored grids (no augmentation possible: the grids are fixed);
* StructureDataset (render="batch"): every molecule parsed into memory first.

Page cache: this machine has far more RAM than any corpus written here in reasonable time,
and dropping the system's caches is not allowed, so before every measurement each file
of the corpus is evicted from the page cache on its own (``posix_fadvise(DONTNEED)``
after ``fsync``): every read in the timed loop comes from the disk the first time. The
table says how large each store is.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_dataloader import cpu_seconds
from torch.utils.data import DataLoader

from pgrid_cli import GridRecipe, kernel_info, render_batch
from pgrid_cli.readers import iter_records
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.torch import ShardDataset, StructureDataset, StructureShardDataset

ROOT = Path(__file__).resolve().parents[1]
DRUGS = ROOT / "sample_data" / "drugs.sdf"


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache (theirs only)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a process in MB (PSS shares shared pages out among their users)."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss / 1024, pss / 1024


def measure(ds, workers: int, samples: int, batch: int, files: list[Path]) -> dict:
    """samples/s over ``samples`` random samples (after the first batch: worker start),
    CPU ms per sample, and the memory of the main process and of each worker at the end."""
    evict(files)
    loader = DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=ds.collate,
        generator=torch.Generator().manual_seed(0),
    )
    it = iter(loader)
    next(it)  # workers started, files opened
    pids = [w.pid for w in it._workers] if workers else []  # type: ignore[attr-defined]
    done = 0
    cpu0, t0 = time.process_time() + cpu_seconds(pids), time.perf_counter()
    for b in it:
        done += len(b["grid"])
        if done >= samples:
            break
    seconds = time.perf_counter() - t0
    cpu = time.process_time() + cpu_seconds(pids) - cpu0
    main_mem = memory_mb(os.getpid())
    worker_mem = [memory_mb(p) for p in pids]
    del it, loader
    return {
        "samples_per_s": done / seconds,
        "cpu_ms_per_sample": cpu / done * 1e3,
        "main_rss_mb": main_mem[0],
        "main_pss_mb": main_mem[1],
        "worker_rss_mb": max((m[0] for m in worker_mem), default=None),
        "worker_pss_mb": max((m[1] for m in worker_mem), default=None),
    }


def kernel_only(
    recipe: GridRecipe, structures: list, samples: int, batch: int, fresh: bool = False
) -> float:
    """Structures/s of the kernel alone, one thread, ``batch`` structures per call, into
    a reused buffer, or (``fresh``) into a new array per batch, as a DataLoader must."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(structures))[:samples]
    prepared = [recipe.prepare(structures[i]) for i in order]
    picked = [structures[i] for i in order]
    out = np.empty((batch, recipe.n_channels, *recipe.shape), dtype=np.float32)
    warm = recipe.batch(picked[:batch], prepared[:batch])  # first touch of the buffer
    render_batch(warm, out[: warm.grid_shape[0]], threads=1)
    t0 = time.perf_counter()
    for k in range(0, len(picked), batch):
        b = recipe.batch(picked[k : k + batch], prepared[k : k + batch])
        if fresh:
            out = np.empty((batch, recipe.n_channels, *recipe.shape), dtype=np.float32)
        render_batch(b, out[: b.grid_shape[0]], threads=1)
    return len(picked) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--copies", type=int, default=160, help="copies of drugs.sdf (126 each)")
    ap.add_argument("--samples", type=int, default=3200, help="samples timed per setting")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="0,2", help="worker counts, comma-separated")
    ap.add_argument("--work", type=Path, help="where to write the corpus (default: a temp dir)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    recipe = GridRecipe(sigma=0.5, grid_size=32, box="fit", channels="elements")
    info = kernel_info()
    load = os.getloadavg()
    mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(
        f"kernel {info['isa']}, {info['hardware_threads']} hardware threads, "
        f"{mem_total / 2**30:.0f} GiB RAM, torch {torch.__version__}; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    tmp = tempfile.TemporaryDirectory(prefix="pgrid-bench16-", dir=args.work)
    work = Path(tmp.name)
    sdf = work / "corpus.sdf"
    text = DRUGS.read_text()
    with sdf.open("w") as f:
        for _ in range(args.copies):
            f.write(text)
    n_cores = len(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    s = grid_files([sdf], work / "structures", GridOptions(store="structures"), workers=n_cores)
    t_struct = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = grid_files([sdf], work / "grids", GridOptions(), workers=n_cores)
    t_grid = time.perf_counter() - t0
    n = s.written
    struct_files = sorted((work / "structures").glob("shard-*.h5"))
    grid_files_ = sorted((work / "grids").glob("shard-*.h5"))
    sizes = {
        "sdf": sdf.stat().st_size,
        "structures": sum(p.stat().st_size for p in struct_files),
        "grids": sum(p.stat().st_size for p in grid_files_),
    }
    print(
        f"corpus: {n:,} structures; SDF {sizes['sdf'] / 1e6:.0f} MB, structures shards "
        f"{sizes['structures'] / 1e6:.0f} MB (written in {t_struct:.1f} s, "
        f"{n / t_struct:,.0f}/s), grid shards {sizes['grids'] / 1e6:.0f} MB (written in "
        f"{t_grid:.1f} s, {g.written / t_grid:,.0f}/s), {n_cores} workers\n"
    )
    structures = [r for r in iter_records(DRUGS)] * args.copies
    rows = [
        {
            "source": f"kernel only{label}",
            "workers": 0,
            "samples_per_s": kernel_only(recipe, structures, args.samples, args.batch_size, fresh),
        }
        for label, fresh in ((", reused buffer", False), (", new array per batch", True))
    ]
    head = "RSS/PSS MB (main; worker)"
    print(f"{'source':<44} {'workers':>7} {'samples/s':>10} {'CPU ms':>7} {head:>28}")

    def show(row: dict) -> None:
        mem = ""
        if "main_rss_mb" in row:
            mem = f"{row['main_rss_mb']:.0f}/{row['main_pss_mb']:.0f}"
            if row["worker_rss_mb"] is not None:
                mem += f"; {row['worker_rss_mb']:.0f}/{row['worker_pss_mb']:.0f}"
        cpu = f"{row['cpu_ms_per_sample']:.2f}" if "cpu_ms_per_sample" in row else ""
        rate = row["samples_per_s"]
        print(
            f"{row['source']:<44} {row['workers']:>7} {rate:>10.0f} {cpu:>7} {mem:>28}", flush=True
        )

    show(rows[0])
    show(rows[1])
    aug = dict(rotate=True, translate=1.0, seed=0)
    t0 = time.perf_counter()
    in_memory = StructureDataset.from_files([sdf], recipe, render="batch", **aug)
    t_parse = time.perf_counter() - t0
    on_disk = StructureShardDataset(work / "structures", recipe, render="batch", **aug)
    sets = [
        ("StructureShardDataset (structures shards)", on_disk, struct_files),
        ("ShardDataset (stored grids, gzip)", ShardDataset(work / "grids"), grid_files_),
        ("StructureDataset (parsed into memory)", in_memory, [sdf]),
    ]
    for label, ds, files in sets:
        for w in workers:
            got = measure(ds, w, args.samples, args.batch_size, files)
            rows.append({"source": label, "workers": w, **got})
            show(rows[-1])
    print(f"\nStructureDataset.from_files parsed the SDF in {t_parse:.1f} s ({n / t_parse:,.0f}/s)")
    print("share of the kernel-only rate (reused buffer / new array per batch), 0 workers:")
    for row in rows[2:]:
        if row["workers"] == 0:
            a, b = (row["samples_per_s"] / r["samples_per_s"] for r in rows[:2])
            print(f"  {row['source']:<44} {a:5.0%} / {b:5.0%}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": {**info, "ram_bytes": mem_total},
                    "load_average": load,
                    "structures": n,
                    "bytes": sizes,
                    "write_seconds": {"structures": t_struct, "grids": t_grid},
                    "parse_seconds_in_memory": t_parse,
                    "rows": rows,
                },
                indent=2,
            )
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
