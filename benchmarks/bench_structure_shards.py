"""Parse once, grid every epoch: structures shards gridded on the fly (issue 16).

    python benchmarks/bench_structure_shards.py [--copies 160] [--samples 3200] [--json out.json]

Builds a corpus of ``--copies`` × sample_data/drugs.sdf (126 drug-like molecules each;
160 copies: 20,160 structures) in ``--work`` (default: a temporary directory on the same
disk as /tmp), writes it once as structures shards (``pgrid grid --store structures``)
and once as stored grids (``pgrid grid``'s defaults: 32³, 11 element channels, σ = 0.5 Å,
fit box, rounded + gzip), then measures samples/s out of a ``torch.utils.data.DataLoader``
(batch 32, random order, random rotation + 1 Å translation where the source grids; timed
after 10 warm-up batches), and
the memory of each process (RSS and PSS, from /proc), for

* kernel only: the molecules already parsed, boxed and in the kernel's arrays, gridded
  by the native batch call (32 per call) into one reused buffer with as many threads as
  the setting has cores (0 workers: every core, as the main process grids; w workers:
  w threads) — the bound, measured just before and after every DataLoader setting so that
  each ratio compares rates taken under the same load;
* StructureShardDataset: a batch fetched with ``__getitems__`` (one HDF5 read per
  dataset and shard), one kernel call, into a new tensor per batch (``buffers=0``) or a
  ring of ``--buffers`` reused ones;
* ShardDataset over the stored grids (no augmentation possible: the grids are fixed);
* StructureDataset: every molecule parsed into memory first, then as above.

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
from bench_dataloader import cpu_seconds, kernel_rate
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader

from pgrid_cli import GridRecipe, kernel_info
from pgrid_cli.readers import iter_records
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.torch import ShardDataset, StructureDataset, StructureShardDataset

ROOT = Path(__file__).resolve().parents[1]
DRUGS = ROOT / "sample_data" / "drugs.sdf"
#: Batches read before the timed loop: worker start, and the first touch of each worker's
#: ring of reused batch buffers (amortised over a training run, not over 100 batches).
WARM_UP = 10


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
    """samples/s over ``samples`` random samples (after :data:`WARM_UP` batches),
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
    for _ in range(WARM_UP):  # workers started, files opened, batch buffers first touched
        next(it)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--copies", type=int, default=160, help="copies of drugs.sdf (126 each)")
    ap.add_argument("--samples", type=int, default=3200, help="samples timed per setting")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="0,2", help="worker counts, comma-separated")
    ap.add_argument("--buffers", type=int, default=4, help="reused batch buffers (ring)")
    ap.add_argument("--work", type=Path, help="where to write the corpus (default: a temp dir)")
    ap.add_argument("--no-augment", action="store_true", help="no random rotation and translation")
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
    rng = np.random.default_rng(0)
    picked = [structures[i] for i in rng.permutation(len(structures))[: args.samples]]

    def kernel(w: int, fresh: bool = False) -> tuple[float, float]:
        threads = w if w else n_cores
        return kernel_rate(recipe, picked, args.batch_size, threads, args.samples // 2, fresh)

    rows = [
        {
            "source": f"kernel only, 1 thread{label}",
            "workers": 1,
            "samples_per_s": rate[0],
            "cpu_ms_per_sample": rate[1],
        }
        for label, rate in (
            (", reused buffer", kernel(1)),
            (", new array per batch", kernel(1, fresh=True)),
        )
    ]
    head = "RSS/PSS MB (main; worker)"
    print(
        f"{'source':<46} {'workers':>7} {'samples/s':>10} {'CPU ms':>7} {head:>28} "
        f"{'kernel/s':>9} {'CPU ms':>7} {'ratio':>6} {'CPU r.':>6}"
    )

    def show(row: dict) -> None:
        mem = ""
        if "main_rss_mb" in row:
            mem = f"{row['main_rss_mb']:.0f}/{row['main_pss_mb']:.0f}"
            if row["worker_rss_mb"] is not None:
                mem += f"; {row['worker_rss_mb']:.0f}/{row['worker_pss_mb']:.0f}"
        cpu = f"{row['cpu_ms_per_sample']:.2f}" if "cpu_ms_per_sample" in row else ""
        rate = row["samples_per_s"]
        k = row.get("kernel_samples_per_s")
        kc = row.get("kernel_cpu_ms_per_sample")
        ratio = (
            f"{k:9.0f} {kc:7.3f} {rate / k:6.2f} {kc / row['cpu_ms_per_sample']:6.2f}" if k else ""
        )
        print(
            f"{row['source']:<46} {row['workers']:>7} {rate:>10.0f} {cpu:>7} {mem:>28} {ratio}",
            flush=True,
        )

    show(rows[0])
    show(rows[1])
    aug = (
        dict(rotate=False, translate=0.0, seed=0)
        if args.no_augment
        else dict(rotate=True, translate=1.0, seed=0)
    )
    t0 = time.perf_counter()
    in_memory = StructureDataset.from_files([sdf], recipe, **aug)
    t_parse = time.perf_counter() - t0
    in_memory_reused = StructureDataset(in_memory.table, recipe, buffers=args.buffers, **aug)
    b = args.buffers
    stored = work / "structures"
    sets = [
        ("StructureShardDataset, buffers=0", StructureShardDataset(stored, recipe, **aug)),
        (f"StructureShardDataset, buffers={b}", StructureShardDataset(stored, recipe, buffers=b, **aug)),  # noqa: E501
        ("ShardDataset (stored grids, gzip)", ShardDataset(work / "grids")),
        ("StructureDataset (in memory), buffers=0", in_memory),
        (f"StructureDataset (in memory), buffers={b}", in_memory_reused),
    ]  # fmt: skip
    files_of = {"Struct": struct_files, "ShardD": grid_files_}
    for label, ds in sets:
        files = files_of.get(label[:6], [sdf])
        for w in workers:
            before = kernel(w)
            got = measure(ds, w, args.samples, args.batch_size, files)
            after = kernel(w)
            k, kc = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            rows.append({"source": label, "workers": w, **got, "kernel_samples_per_s": k,
                         "kernel_cpu_ms_per_sample": kc, "kernel_threads": w if w else n_cores,
                         "ratio_to_kernel": got["samples_per_s"] / k,
                         "cpu_ratio_to_kernel": kc / got["cpu_ms_per_sample"]})  # fmt: skip
            show(rows[-1])
    print(f"\nStructureDataset.from_files parsed the SDF in {t_parse:.1f} s ({n / t_parse:,.0f}/s)")
    print(
        "share of the kernel-only rate with the same cores, measured around each setting "
        "(samples/s; CPU ms per sample):"
    )
    for row in rows[2:]:
        if row.get("ratio_to_kernel"):
            print(
                f"  {row['source']:<46} {row['workers']} workers {row['ratio_to_kernel']:6.0%} "
                f"{row['cpu_ratio_to_kernel']:6.0%}"
            )
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
    with threadpool_limits(limits=1, user_api="blas"):  # spinning BLAS threads slow the kernel
        main()
