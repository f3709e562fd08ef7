"""Receptor + ligand complexes: pairs gridded per second, pgrid against libmolgrid.

    python benchmarks/bench_complexes.py [--molecules moses100.xyz] [--receptor-atoms 4000]
        [--repeat 3] [--molgrid-python /work/scratch/peers/mg/bin/python] [--json out.json]

The pairs: one synthetic receptor (``--receptor-atoms`` atoms, C/N/O/S in protein-like
proportions, on a jittered 2.3 Å lattice — a protein's heavy-atom density — filling a
sphere around an empty 7 Å pocket at the origin) and each of the paper's 100 MOSES
molecules as a ligand placed in the pocket. They are written as files (receptor.pdb,
ligands as SDF, pairs.types) and read back with pgrid's readers, so pgrid and libmolgrid
grid the same atoms.

Both grid each pair in the field's common cube: 24 Å at 48³ centred on the ligand's
heavy atoms, σ = 0.5 Å, 8 element channels per part (C N O S F Cl Br H; 16 in all):

* pgrid: ``ComplexRecipe.grid_structures`` — exact voxel integrals, the channels of
  both parts, receptor atoms out of reach of the cube cropped, float32 — over all pairs
  in one call into a preallocated array (``batch``, threads=1 and the default: every
  core) and one call per pair (``per pair``: into a preallocated array, as libmolgrid is
  timed, and returning a new array). Also timed: reading the pairs (``parse``: the receptor once,
  every ligand) and the whole ``pgrid grid pairs.types`` run (``end to end``: read, grid,
  round, compress, write shards; workers=0).
* libmolgrid (``GridMaker.forward`` on the CPU, one call per pair into a preallocated
  array, its coordinates built once before timing): density *sampled* at the grid points
  (not integrated) with r = 2σ = 1 Å, ``gaussian_radius_multiple=-1.5`` (a pure Gaussian
  cut at 3σ), points at pgrid's voxel centres. It runs in its own interpreter
  (``--molgrid-python``); absent, it is reported "not available".

Repeats are interleaved (every case, then libmolgrid, ``--repeat`` times) so that all
see the same load; the table gives medians of the wall-clock rate and of the rate per
CPU second of the process (robust to other load for single-threaded cases), and their
ratios to libmolgrid.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _paths import MOSES100

ELEMENTS = ("C", "N", "O", "S", "F", "Cl", "Br", "H")
Z = {"C": 6, "N": 7, "O": 8, "S": 16, "F": 9, "Cl": 17, "Br": 35, "H": 1}
SIGMA, N, CUBE = 0.5, 48, 24.0
MOLGRID_PYTHON = "/work/scratch/peers/mg/bin/python"
MOLGRID = "libmolgrid per pair (threads=1)"

MOLGRID_SCRIPT = r"""
import json, sys, time
import numpy as np
import molgrid
d = np.load(sys.argv[1]); repeat = int(sys.argv[2])
gm = molgrid.GridMaker(resolution=0.5, dimension=23.5, gaussian_radius_multiple=-1.5)
rc, rt = d["rec_pos"].astype(np.float32), d["rec_types"]
sets, centres = [], []
for k in range(len(d["offsets"]) - 1):
    a, b = d["offsets"][k], d["offsets"][k + 1]
    lc, lt = d["lig_pos"][a:b].astype(np.float32), d["lig_types"][a:b] + 8
    coords = np.ascontiguousarray(np.concatenate([rc, lc]))
    types = np.concatenate([rt, lt]).astype(np.float32)
    radii = np.ones(len(types), np.float32)
    sets.append(molgrid.CoordinateSet(molgrid.Grid2f(coords), molgrid.Grid1f(types),
                                      molgrid.Grid1f(radii), 16))
    centres.append(molgrid.float3(*map(float, d["centres"][k])))
out = np.zeros((16, 48, 48, 48), np.float32)
view = molgrid.Grid4f(out)
for s, c in zip(sets, centres):  # warm-up
    gm.forward(c, s, view)
times, cpu = [], []
for _ in range(repeat):
    t, c0 = time.perf_counter(), time.process_time()
    for s, c in zip(sets, centres):
        gm.forward(c, s, view)
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c0)
print(json.dumps({"times": times, "cpu": cpu, "pairs": len(sets), "last_sum": float(out.sum())}))
"""


def synthetic_receptor(n_atoms: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(positions (n, 3) Å, elements): a jittered 2.3 Å lattice in a sphere with an empty
    pocket of 7 Å radius at the origin."""
    rng = np.random.default_rng(seed)
    step, pocket = 2.3, 7.0
    r = pocket
    while True:  # the radius that holds n atoms
        g = np.arange(-r, r + step, step)
        pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
        d = np.linalg.norm(pts, axis=1)
        pts = pts[(d <= r) & (d >= pocket)]
        if len(pts) >= n_atoms:
            break
        r += 0.5
    pts = pts[np.argsort(np.linalg.norm(pts, axis=1), kind="stable")[:n_atoms]]
    pts = pts + rng.normal(scale=0.25, size=pts.shape)
    elements = rng.choice(["C", "N", "O", "S"], size=n_atoms, p=[0.63, 0.17, 0.19, 0.01])
    return pts, [str(e) for e in elements]


def write_pairs(d: Path, molecules: Path, receptor_atoms: int, limit: int | None) -> int:
    from ase.io import iread
    from rdkit import Chem

    def mol_of(positions: np.ndarray, elements: list[str]) -> Chem.Mol:
        m = Chem.RWMol()
        conf = Chem.Conformer(len(elements))
        for i, (e, p) in enumerate(zip(elements, positions, strict=True)):
            m.AddAtom(Chem.Atom(Z[e]))
            conf.SetAtomPosition(i, [float(x) for x in p])
        conf.Set3D(True)
        mol = m.GetMol()
        mol.AddConformer(conf)
        return mol

    rec_pos, rec_el = synthetic_receptor(receptor_atoms)
    Chem.MolToPDBFile(mol_of(rec_pos, rec_el), str(d / "receptor.pdb"))
    lines = ["# affinity receptor ligand"]
    for k, atoms in enumerate(iread(str(molecules), index=":")):
        if limit is not None and k >= limit:
            break
        pos = atoms.get_positions()
        pos = pos - pos.mean(axis=0)  # in the pocket
        Chem.MolToMolFile(mol_of(pos, atoms.get_chemical_symbols()), str(d / f"lig{k}.sdf"))
        lines.append(f"{k * 0.1:.1f} receptor.pdb lig{k}.sdf")
    (d / "pairs.types").write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call of ``fn``."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--molecules", type=Path, default=MOSES100)
    ap.add_argument("--pairs", type=int, default=None, help="at most this many ligands")
    ap.add_argument("--receptor-atoms", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--molgrid-python", default=MOLGRID_PYTHON)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from pgrid_cli.core.complexes import ComplexRecipe
    from pgrid_cli.readers import Structure, iter_records
    from pgrid_cli.readers import complexes as rc
    from pgrid_cli.runs.grid import GridOptions, grid_files

    res: dict[str, object] = {"load_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        n = write_pairs(d, args.molecules, args.receptor_atoms, args.pairs)
        types = d / "pairs.types"

        def parse() -> list[Structure]:
            rc._cache.clear()
            return [s for s in iter_records(types) if isinstance(s, Structure)]

        pairs = parse()
        assert len(pairs) == n, f"{n - len(pairs)} pairs rejected"
        recipe = ComplexRecipe(N, SIGMA, ",".join(ELEMENTS), f"cube:{CUBE:g}")
        buf = np.empty((n, *recipe._grid_shape), np.float32)
        out = d / "out"
        opts = GridOptions(grid_size=N, channels=",".join(ELEMENTS))
        cases = {
            "parse (receptor once, every ligand)": parse,
            "per pair, new array, threads=1": lambda: [
                recipe.grid_structures([s], threads=1) for s in pairs
            ],
            "per pair, into a buffer, threads=1": lambda: [
                recipe.grid_structures([s], buf[k : k + 1], threads=1) for k, s in enumerate(pairs)
            ],
            "batch, threads=1": lambda: recipe.grid_structures(pairs, buf, threads=1),
            "batch, default threads": lambda: recipe.grid_structures(pairs, buf),
            "end to end (pgrid grid, workers=0)": lambda: grid_files(
                [types], out, opts, workers=0, overwrite=True
            ),
        }
        npz = d / "pairs.npz"
        lig = write_npz(npz, pairs)
        has_peer = Path(args.molgrid_python).exists()
        walls: dict[str, list[float]] = {k: [] for k in [*cases, MOLGRID]}
        cpus: dict[str, list[float]] = {k: [] for k in [*cases, MOLGRID]}
        for fn in cases.values():
            fn()  # warm-up
        for _ in range(args.repeat):  # interleaved: every case sees the same load
            for name, fn in cases.items():
                w, c = timed(fn)
                walls[name].append(w)
                cpus[name].append(c)
            if has_peer:
                p = subprocess.run(
                    [args.molgrid_python, "-c", MOLGRID_SCRIPT, str(npz), "1"],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                )
                if p.returncode != 0:
                    res["libmolgrid"] = f"failed: {p.stderr.strip()[-300:]}"
                    has_peer = False
                    continue
                peer = json.loads(p.stdout.strip().splitlines()[-1])
                walls[MOLGRID] += peer["times"]
                cpus[MOLGRID] += peer["cpu"]
        if not Path(args.molgrid_python).exists():
            res["libmolgrid"] = "not available (no --molgrid-python)"
        rates = {
            k: (n / statistics.median(walls[k]), n / statistics.median(cpus[k]))
            for k in walls
            if walls[k]
        }
        res["rates (pairs/s: wall, per CPU second)"] = rates
    res["load_end"] = os.getloadavg()[0]
    res.update(
        pairs=n,
        receptor_atoms=args.receptor_atoms,
        ligand_atoms_mean=float(np.mean([m.sum() for m in lig])),
    )
    print(
        f"{n} pairs, receptor {args.receptor_atoms} atoms, ligands "
        f"{res['ligand_atoms_mean']:.1f} atoms; 48³ × 16 channels, σ 0.5 Å, cube 24 Å; "
        f"load {res['load_start']:.1f} → {res['load_end']:.1f}; medians of {args.repeat} "
        f"interleaved repeats"
    )
    print(f"  {'':40s} {'pairs/s':>9s} {'per CPU s':>10s}")
    for k, (w, c) in rates.items():
        print(f"  {k:40s} {w:9.1f} {c:10.1f}")
    if "libmolgrid" in res:
        print(f"  libmolgrid: {res['libmolgrid']}")
    if MOLGRID in rates:
        mg = rates[MOLGRID]
        for k in (
            "per pair, into a buffer, threads=1",
            "batch, threads=1",
            "batch, default threads",
        ):
            w, c = rates[k]
            print(f"  pgrid {k} ÷ libmolgrid: {w / mg[0]:.2f}× (wall), {c / mg[1]:.2f}× (CPU)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    sys.stdout.flush()


def write_npz(npz: Path, pairs: list) -> list[np.ndarray]:
    """The pairs' atoms for the libmolgrid runner: receptor and ligands with element type
    indices (ligand types offset by 8 in the runner) and the ligand centres."""
    from pgrid_cli.core.complexes import ligand_center

    lig = [s.info["atom_properties"]["ligand"] > 0.5 for s in pairs]
    index = {Z[e]: i for i, e in enumerate(ELEMENTS)}
    rec = pairs[0]
    both = list(zip(pairs, lig, strict=True))
    np.savez(
        npz,
        rec_pos=rec.positions[~lig[0]],
        rec_types=np.array([index[z] for z in rec.numbers[~lig[0]]], np.int64),
        lig_pos=np.concatenate([s.positions[m] for s, m in both]),
        lig_types=np.array([index[z] for s, m in both for z in s.numbers[m]], np.int64),
        offsets=np.cumsum([0] + [int(m.sum()) for m in lig]),
        centres=np.array([ligand_center(s.positions[m], s.numbers[m]) for s, m in both]),
    )
    return lig


if __name__ == "__main__":
    main()
