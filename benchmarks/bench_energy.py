"""Lennard-Jones energy grids: pgrid's native core against a NumPy brute force (and the
ParticleGrid library's ``LJ_Grid``, when its interpreter is given), on one cell.

    .venv/bin/python benchmarks/bench_energy.py                       # 200 atoms, 32³ and 64³
    .venv/bin/python benchmarks/bench_energy.py --particlegrid-python <venv>/bin/python

The cell: ``--atoms`` (200) atoms of a MOF-like composition (C 48%, H 24%, O 20%, Zn 8%)
placed at random (seeded, ≥ 1.1 Å apart) in a triclinic cell of 20 × 20 × 20 Å, γ = 100°
(about a MOF's atom density, 0.025 Å⁻³). Grids of N³ points at the cell's voxel centres,
methane probe, 12 Å cutoff, every periodic image within it. Times are medians of
``--repeat`` wall-clock runs, all taken in one run, so ratios are what to compare on a
shared machine:

* pgrid with every core (the default) and with one thread, on each instruction set;
* the NumPy brute force (float64, every image within the cutoff, chunks of points; one
  run, up to ``--numpy-max`` = 32³ by default: it scales with the points) — the test
  suite's reference; its largest relative difference to pgrid is printed;
* ParticleGrid's ``CrystalParams.LJ_Grid(N)`` (its own UFF table and H probe, no cutoff,
  values capped at 1e6; single-threaded), run in its interpreter on the same cell.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from ase.geometry import cellpar_to_cell

from pgrid_cli import _core
from pgrid_cli.core.box import Box
from pgrid_cli.core.energy import EnergySpec
from pgrid_cli.core.kernel import available_cores

CELLPAR = (20.0, 20.0, 20.0, 90.0, 90.0, 100.0)
COMPOSITION = {6: 0.48, 1: 0.24, 8: 0.20, 30: 0.08}


def make_cell(n_atoms: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lattice (3, 3) Å, fractional coordinates (n, 3), atomic numbers (n,))."""
    rng = np.random.default_rng(seed)
    lattice = cellpar_to_cell(CELLPAR)
    frac: list[np.ndarray] = []
    while len(frac) < n_atoms:
        f = rng.random(3)
        if frac:
            d = np.array(frac) - f
            d -= np.round(d)
            if np.min(np.linalg.norm(d @ lattice, axis=1)) < 1.1:
                continue
        frac.append(f)
    zs = np.array(list(COMPOSITION))
    numbers = rng.choice(zs, n_atoms, p=np.array(list(COMPOSITION.values())))
    return lattice, np.array(frac), numbers


def numpy_lj(points, positions, sig, eps, lattice, cutoff, chunk=2048):
    """The float64 brute force: every image within the cutoff, chunks of points."""
    inv = np.linalg.inv(lattice)
    vol = abs(np.linalg.det(lattice))
    heights = [
        vol / np.linalg.norm(np.cross(lattice[(d + 1) % 3], lattice[(d + 2) % 3])) for d in range(3)
    ]
    reach = [int(np.ceil(cutoff / h)) + 1 for h in heights]
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    trans = np.stack([g.reshape(-1) for g in grids], 1) @ lattice
    pos = (positions @ inv % 1.0) @ lattice
    img = (pos[:, None, :] + trans[None]).reshape(-1, 3)
    s2 = np.repeat(sig**2, len(trans))
    e4 = np.repeat(4.0 * eps, len(trans))
    out = np.empty(len(points))
    for i in range(0, len(points), chunk):
        p = points[i : i + chunk]
        r2 = ((p[:, None, :] - img[None]) ** 2).sum(-1)
        s6 = (s2 / r2) ** 3
        out[i : i + chunk] = np.where(r2 <= cutoff * cutoff, e4 * (s6 * s6 - s6), 0.0).sum(1)
    return out


def timed(fn, repeat: int, warm: bool = True) -> float:
    if warm:
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


PG_RUNNER = textwrap.dedent(
    """
    import json, statistics, sys, time
    import numpy as np
    from Periodic import CrystalParams
    d = np.load(sys.argv[1]); sizes = json.loads(sys.argv[2]); repeat = int(sys.argv[3])
    frac = np.zeros((len(d["frac"]), 4), np.float32); frac[:, :3] = d["frac"]
    a, b, c, al, be, ga = (float(v) for v in d["cellpar"])
    out = {}
    for n in sizes:
        p = CrystalParams(A=a, B=b, C=c, alpha=np.radians(al), beta=np.radians(be),
                          gamma=np.radians(ga), coords=frac,
                          elements=(d["numbers"] - 1).astype(np.int32))
        times = []
        for _ in range(repeat):
            t = time.perf_counter(); p.LJ_Grid(n); times.append(time.perf_counter() - t)
        out[n] = statistics.median(times)
    print(json.dumps(out))
    """
)


def particlegrid_times(python: str, lattice_frac_numbers, sizes, repeat) -> dict[int, float]:
    _, frac, numbers = lattice_frac_numbers
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell.npz"
        np.savez(path, frac=frac, numbers=numbers, cellpar=np.array(CELLPAR))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        res = subprocess.run(
            [python, "-c", PG_RUNNER, str(path), json.dumps(sizes), str(repeat)],
            capture_output=True,
            text=True,
            env=env,
            timeout=3600,
        )
    if res.returncode != 0:
        raise RuntimeError(f"ParticleGrid runner failed: {res.stderr[-1000:]}")
    return {int(k): v for k, v in json.loads(res.stdout).items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--atoms", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cutoff", type=float, default=12.0)
    ap.add_argument(
        "--numpy-max", type=int, default=32, help="largest N timed with the NumPy brute force"
    )
    ap.add_argument("--particlegrid-python", help="an interpreter that imports ParticleGrid")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)

    cell = make_cell(args.atoms)
    lattice, frac, numbers = cell
    positions = frac @ lattice
    spec = EnergySpec(cutoff=args.cutoff, max_energy=1e30)  # unclipped: compare raw sums
    sig, eps = spec.mixed(numbers)
    isas = [i for i in ("avx512", "avx2", "scalar") if i in _core.supported_isas()]
    cores = available_cores()
    print(
        f"# LJ energy grid of a {args.atoms}-atom triclinic cell {CELLPAR}, CH4 probe, "
        f"cutoff {args.cutoff:g} Å, every image; {cores} cores, median of {args.repeat}"
    )
    results: dict[str, dict[str, float]] = {}
    for n in args.sizes:
        box = Box.from_lattice(lattice, n)
        row: dict[str, float] = {}
        for isa in isas:
            for threads in (None, 1):
                key = f"pgrid {isa} {'all cores' if threads is None else '1 thread'}"

                def run(isa=isa, threads=threads, box=box):
                    spec.grid_box(positions, numbers, box, lattice, threads=threads, isa=isa)

                row[key] = timed(run, args.repeat)
                print(f"# {n}³ {key}: {row[key] * 1e3:.1f} ms", file=sys.stderr, flush=True)
        if n <= args.numpy_max:
            pts = box.voxel_centers().reshape(-1, 3)
            ref: list[np.ndarray] = []

            def brute(pts=pts, ref=ref):
                ref[:] = [numpy_lj(pts, positions, sig, eps, lattice, args.cutoff)]

            row["numpy brute force (1 run)"] = timed(brute, 1, warm=False)
            got = spec.grid_box(positions, numbers, box, lattice).reshape(-1)
            err = np.abs(got - ref[0]) / np.maximum(np.abs(ref[0]), 1.0)
            row["max relative difference pgrid vs numpy"] = float(err.max())
        results[str(n)] = row
    if args.particlegrid_python:
        try:
            pg = particlegrid_times(args.particlegrid_python, cell, args.sizes, args.repeat)
            for n, t in pg.items():
                results[str(n)]["ParticleGrid LJ_Grid (1 thread)"] = t
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            print(f"# ParticleGrid not available: {exc}")
    for n, row in results.items():
        print(f"\n## {n}³ points")
        base = row.get(f"pgrid {isas[0]} all cores")
        for key, t in row.items():
            if key.startswith("max relative"):
                print(f"  {key:<42} {t:.2e}")
            else:
                ratio = f"{t / base:8.1f}×" if base else ""
                print(f"  {key:<42} {t * 1e3:10.1f} ms {ratio}")
    if args.json:
        doc = {"cellpar": CELLPAR, "atoms": args.atoms, "results": results}
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
