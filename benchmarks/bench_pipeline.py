"""End-to-end throughput of ``pgrid grid`` (SDF → shards) against the kernel alone.

    python benchmarks/bench_pipeline.py [--records 5040] [--grid-size 32] [--workers N]

Builds an SDF of ``--records`` drug-like molecules (sample_data/drugs.sdf repeated) in a
temporary directory, then measures, in one run:

1. kernel only: every molecule already parsed and boxed, gridded with the batch entry
   point (``render_batch``) on all cores, 64 structures per call, into a reused buffer;
2. the whole pipeline: :func:`pgrid_cli.runs.grid.grid_files` at its defaults (32³,
   element channels, σ = 0.5 Å, fit box, rounding + gzip level 1 + shuffle), workers =
   cores — reading, parsing, gridding, rounding, compressing and writing the shards;
3. each stage alone on one core (parse, grid, round, shuffle + deflate as the pipeline
   encodes a chunk), to show where
   the time goes;

and prints the rates, their ratio, the bytes per structure against raw float32, and the
machine load (the machine may be shared: compare ratios from one run, not absolute rates
across runs). ``--json`` prints the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from pgrid_cli import GridRecipe, kernel_info, render_batch
from pgrid_cli.core import available_cores
from pgrid_cli.readers import iter_records
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.store.codec import GridCodec

ROOT = Path(__file__).resolve().parents[1]


def make_sdf(path: Path, records: int) -> int:
    """Write ``records`` SDF records by repeating sample_data/drugs.sdf; returns the count."""
    blocks = (ROOT / "sample_data" / "drugs.sdf").read_text().split("$$$$\n")
    blocks = [b for b in blocks if b.strip()]
    with open(path, "w") as f:
        for i in range(records):
            f.write(blocks[i % len(blocks)] + "$$$$\n")
    return records


def best_of(repeat: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=5040)
    ap.add_argument("--grid-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="default: one per core")
    ap.add_argument("--compression", default="gzip")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    cores = available_cores()
    workers = cores if args.workers is None else args.workers
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="pgrid-bench-"))
    try:
        sdf = tmp / "molecules.sdf"
        n = make_sdf(sdf, args.records)
        recipe = GridRecipe(grid_size=args.grid_size, sigma=0.5, channels="elements")
        spec = recipe.spec
        shape = recipe.shape

        # Stage: parse (one core), through the same reader the pipeline uses.
        t = time.perf_counter()
        structures = list(iter_records(sdf))
        parse_s = time.perf_counter() - t
        assert len(structures) == n

        # Kernel only, all cores.
        batch_size = 64
        batches = [recipe.batch(structures[i : i + batch_size]) for i in range(0, n, batch_size)]
        out = np.empty((batch_size, spec.n_channels, *shape), np.float32)

        def kernel(threads: int | None) -> None:
            for b in batches:
                render_batch(b, out[: b.n_structures], threads=threads)

        kernel(None)  # warm up (page faults, dispatch)
        kernel_s = best_of(3, lambda: kernel(None))
        kernel1_s = best_of(2, lambda: kernel(1))

        # Stages after the kernel, one core, on a sample of real grids.
        codec = GridCodec.parse(args.compression)
        sample = render_batch(batches[0], threads=1)[: min(64, n)]
        grids = sample.copy()
        round_s = best_of(1, lambda: [codec.round(g) for g in grids]) / len(grids)
        enc_s = best_of(3, lambda: [codec.encode(g) for g in grids]) / len(grids)

        # The whole pipeline at its defaults.
        opts = GridOptions(grid_size=args.grid_size, compression=args.compression)
        t = time.perf_counter()
        summary = grid_files([sdf], tmp / "shards", opts, workers=workers)
        pipeline_s = time.perf_counter() - t
        assert summary.written == n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()

    raw = spec.n_channels * int(np.prod(shape)) * 4
    result = {
        "records": n,
        "grid": list(shape),
        "channels": spec.n_channels,
        "cores": cores,
        "workers": workers,
        "isa": kernel_info()["isa"],
        "kernel_per_s": n / kernel_s,
        "kernel_1thread_per_s": n / kernel1_s,
        "pipeline_per_s": n / pipeline_s,
        "pipeline_over_kernel": kernel_s / pipeline_s,
        "stage_ms_per_structure_one_core": {
            "parse": 1e3 * parse_s / n,
            "grid": 1e3 * kernel1_s / n,
            "round": 1e3 * round_s,
            "shuffle+deflate": 1e3 * enc_s if codec.encodes_chunks else None,  # codec.encode
        },
        "pipeline_cpu_seconds": {k: round(v, 2) for k, v in summary.timings.items()},
        "bytes_per_structure": summary.bytes_per_structure,
        "raw_bytes_per_structure": raw,
        "compression_ratio": raw / summary.bytes_per_structure,
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"pgrid pipeline benchmark: {n} SDF records, {shape[0]}³ × {spec.n_channels} channels")
    print(f"  cores {cores}, workers {workers}, kernel ISA {result['isa']}")
    print(f"  load average (1 min) before/after: {result['load_average_before_after']}")
    print(f"  kernel only, all cores : {result['kernel_per_s']:9,.0f} structures/s")
    print(f"  kernel only, 1 thread  : {result['kernel_1thread_per_s']:9,.0f} structures/s")
    print(f"  whole pipeline         : {result['pipeline_per_s']:9,.0f} structures/s")
    print(f"  pipeline / kernel      : {result['pipeline_over_kernel']:9.3f}")
    print("  one core, ms per structure:")
    for k, v in result["stage_ms_per_structure_one_core"].items():
        if v is not None:
            print(f"    {k:16s} {v:7.3f}")
    print(f"  pipeline CPU seconds by stage: {result['pipeline_cpu_seconds']}")
    print(
        f"  on disk: {result['bytes_per_structure'] / 1e3:.1f} kB per structure "
        f"(raw float32 {raw / 1e3:.0f} kB, {result['compression_ratio']:.1f}x smaller)"
    )


if __name__ == "__main__":
    main()
