"""End-to-end throughput of ``pgrid grid`` (SDF or XYZ → shards) against the kernel alone.

    python benchmarks/bench_pipeline.py [--records 5040] [--grid-size 32] [--workers N]
        [--compressions gzip,zstd,lz4,blosc2-lz4,blosc2-zstd] [--inputs sdf,xyz] [--json]

Builds ``--records`` drug-like molecules (sample_data/drugs.sdf repeated) as an SDF file
and as a plain XYZ file (the same atoms) in a temporary directory, then measures, in one
run:

1. the kernel only: every molecule already parsed and boxed, gridded with the batch entry
   point (``render_batch``) on all cores, 64 structures per call, into a reused buffer —
   measured again right before each pipeline run, so that each ratio compares two
   figures taken under the same machine load;
2. the whole pipeline for each input format and codec: :func:`pgrid_cli.runs.grid.grid_files`
   (32³, element channels, σ = 0.5 Å, fit box, rounding, ``--compression`` the codec),
   workers = cores — reading, parsing, gridding, rounding, compressing and writing shards;
   its CPU seconds by stage (``read`` and ``write``: the main process; ``parse``, ``grid``,
   ``encode`` (rounding included): the workers);
3. each stage alone on one core, per structure: parse (the reader + channels and box) of
   each format, grid, round, and encode with each codec (on rounded real grids), with the
   bytes per structure each codec stores, rounded and lossless.

Prints the rates, the pipeline/kernel ratios, the per-stage costs and the machine load (the
machine may be shared: compare ratios from one run, not absolute rates across runs).
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
from pgrid_cli.readers import ReadOptions, iter_raw_records, iter_records, parse_record
from pgrid_cli.readers.records import prepare_structure
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.store.codec import GridCodec

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = {}  # atomic number → symbol, filled from RDKit's periodic table


def make_inputs(tmp: Path, records: int) -> dict[str, Path]:
    """``records`` SDF records (sample_data/drugs.sdf repeated) and the same molecules as
    plain XYZ frames (element, x, y, z in Å)."""
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    blocks = (ROOT / "sample_data" / "drugs.sdf").read_text().split("$$$$\n")
    blocks = [b for b in blocks if b.strip()]
    sdf = tmp / "molecules.sdf"
    with open(sdf, "w") as f:
        for i in range(records):
            f.write(blocks[i % len(blocks)] + "$$$$\n")
    xyz = tmp / "molecules.xyz"
    with open(xyz, "w") as f:
        for s in iter_records(sdf):
            f.write(f"{len(s.numbers)}\n{s.name}\n")
            for z, (x, y, zz) in zip(s.numbers, s.positions, strict=True):
                f.write(f"{table.GetElementSymbol(int(z))} {x:.5f} {y:.5f} {zz:.5f}\n")
    return {"sdf": sdf, "xyz": xyz}


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
    ap.add_argument("--compressions", default="gzip,zstd,lz4,blosc2-lz4,blosc2-zstd")
    ap.add_argument("--inputs", default="sdf,xyz", help="input formats: sdf, xyz or both")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    cores = available_cores()
    workers = cores if args.workers is None else args.workers
    codecs = [c.strip() for c in args.compressions.split(",") if c.strip()]
    formats = [f.strip() for f in args.inputs.split(",") if f.strip()]
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="pgrid-bench-"))
    recipe = GridRecipe(grid_size=args.grid_size, sigma=0.5, channels="elements")
    spec, shape = recipe.spec, recipe.shape
    n = args.records
    try:
        files = make_inputs(tmp, n)
        structures = list(iter_records(files["sdf"]))
        assert len(structures) == n

        # Stage: parse (one core), through the readers the pipeline uses, and the box and
        # channels of each structure (what a worker does before the kernel).
        parse_ms = {}
        opts = ReadOptions()
        for fmt in formats:
            raws = list(iter_raw_records(files[fmt], fmt))
            sample = raws[: min(len(raws), 1000)]

            def parse(sample=sample) -> None:  # type: ignore[no-untyped-def]
                for raw in sample:
                    prepare_structure(parse_record(raw, opts), recipe)  # type: ignore[arg-type]

            parse_ms[f"parse {fmt} (+ box, channels)"] = 1e3 * best_of(3, parse) / len(sample)
            if fmt == "sdf":  # the floor: RDKit's parse alone, as the reader calls it
                from rdkit import Chem

                def rdkit(sample=sample) -> None:  # type: ignore[no-untyped-def]
                    for raw in sample:
                        Chem.MolFromMolBlock(raw.text, sanitize=False, removeHs=False)

                parse_ms["  of which RDKit MolFromMolBlock"] = 1e3 * best_of(3, rdkit) / len(sample)

        # Kernel only.
        batch_size = 64
        batches = [recipe.batch(structures[i : i + batch_size]) for i in range(0, n, batch_size)]
        out = np.empty((batch_size, spec.n_channels, *shape), np.float32)

        def kernel(threads: int | None) -> None:
            for b in batches:
                render_batch(b, out[: b.n_structures], threads=threads)

        def kernel_rate() -> float:
            return n / best_of(3, lambda: kernel(None))

        kernel(None)  # warm up (page faults, dispatch)
        kernel1_s = best_of(2, lambda: kernel(1))

        # Stages after the kernel, one core, on a sample of real grids.
        sample = render_batch(batches[0], threads=1)[: min(64, n)].copy()
        rounded = sample.copy()
        gz = GridCodec.parse("gzip")
        round_s = best_of(1, lambda: [gz.round(g) for g in rounded]) / len(rounded)
        encode = {}
        for name in codecs:
            codec = GridCodec.parse(name)
            if not codec.encodes_chunks:
                continue
            lossless = GridCodec.parse(name, lossless=True)
            enc_s = best_of(3, lambda c=codec: [c.encode(g) for g in rounded]) / len(rounded)
            encode[name] = {
                "ms": 1e3 * enc_s,
                "kB_rounded": np.mean([len(codec.encode(g)[0]) for g in rounded]) / 1e3,
                "kB_lossless": np.mean([len(lossless.encode(g)[0]) for g in sample]) / 1e3,
            }

        # The whole pipeline, per input format and codec, each beside a kernel figure.
        runs = []
        for fmt in formats:
            for name in codecs:
                k_rate = kernel_rate()
                gopts = GridOptions(grid_size=args.grid_size, compression=name)
                dest = tmp / f"shards-{fmt}-{name}"
                t = time.perf_counter()
                summary = grid_files([files[fmt]], dest, gopts, workers=workers)
                pipeline_s = time.perf_counter() - t
                assert summary.written == n, (fmt, name, summary.written)
                shutil.rmtree(dest, ignore_errors=True)
                runs.append(
                    {
                        "input": fmt,
                        "compression": name,
                        "kernel_per_s": k_rate,
                        "pipeline_per_s": n / pipeline_s,
                        "pipeline_over_kernel": n / pipeline_s / k_rate,
                        "kB_per_structure": summary.bytes_per_structure / 1e3,
                        "cpu_ms_per_structure": {
                            k: round(1e3 * v / n, 4) for k, v in summary.timings.items()
                        },
                    }
                )
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
        "raw_kB_per_structure": raw / 1e3,
        "kernel_1thread_per_s": n / kernel1_s,
        "stage_ms_per_structure_one_core": {
            **parse_ms,
            "grid": 1e3 * kernel1_s / n,
            "round": 1e3 * round_s,
            **{f"encode {k}": v["ms"] for k, v in encode.items()},
        },
        "codecs": encode,
        "pipeline": runs,
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"pgrid pipeline benchmark: {n} records, {shape[0]}³ × {spec.n_channels} channels")
    print(f"  cores {cores}, workers {workers}, kernel ISA {result['isa']}")
    print(f"  load average (1 min) before/after: {result['load_average_before_after']}")
    print(f"  kernel only, 1 thread: {result['kernel_1thread_per_s']:,.0f} structures/s")
    print("  one core, ms per structure:")
    for k, v in result["stage_ms_per_structure_one_core"].items():
        print(f"    {k:28s} {v:7.3f}")
    print(f"  codecs, kB per structure (raw float32 {raw / 1e3:.0f} kB): rounded / lossless")
    for k, v in encode.items():
        print(f"    {k:28s} {v['kB_rounded']:7.1f} / {v['kB_lossless']:.1f}")
    print("  input compression    kernel/s  pipeline/s  ratio   kB  CPU ms/structure by stage")
    for r in runs:
        stages = " ".join(f"{k} {v:.3f}" for k, v in r["cpu_ms_per_structure"].items())
        print(
            f"  {r['input']:5s} {r['compression']:12s} {r['kernel_per_s']:9,.0f} "
            f"{r['pipeline_per_s']:10,.0f} {r['pipeline_over_kernel']:6.3f} "
            f"{r['kB_per_structure']:5.1f}  {stages}"
        )


if __name__ == "__main__":
    main()
