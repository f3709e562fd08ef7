"""SMILES → shards: where the time goes, stage by stage (issue 13).

    python benchmarks/bench_smiles.py [--molecules 200] [--grid-size 32] [--workers N]

The molecules are the SMILES of RDKit's own ``Data/NCI/first_200.props.sdf`` (200
NCI compounds, as shipped with RDKit), cycled to ``--molecules``. In one run it measures:

1. each stage alone on one core, per molecule (CPU seconds of this process): parse
   (``Chem.MolFromSmiles``), embed (hydrogens + one ETKDG v3 conformer, seeded as
   ``pgrid grid`` seeds it), relax (MMFF94, UFF when MMFF has no parameters; only with
   ``--relax``), type (``pharmacophore`` + Gasteiger ``charge``: 9 channels), grid (the
   typed recipe, 32³ in a 24 Å cube, one structure per call) and encode (rounding + shuffle
   + deflate, as the workers encode a chunk);
2. the whole pipeline: ``pgrid grid`` (:func:`pgrid_cli.runs.grid.grid_files`) of the
   same SMILES with ``--channels pharmacophore --charge-channel gasteiger``, workers =
   cores — reading, embedding, typing, gridding, encoding and writing the shards;

and prints per-stage milliseconds per molecule, each stage's share, and the pipeline's
molecules/s with the machine load (a shared machine: compare shares and ratios from one
run, not absolute rates across runs). ``--json`` prints the numbers as JSON.
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
from rdkit import Chem, RDConfig
from rdkit.Chem import AllChem

from pgrid_cli import GridRecipe, render_batch
from pgrid_cli.core import available_cores
from pgrid_cli.core.structure import Structure
from pgrid_cli.readers import ReadOptions
from pgrid_cli.readers.smiles import embed_3d
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.store.codec import GridCodec
from pgrid_cli.typers import channel_typer

NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_200.props.sdf"


def nci_smiles(n: int) -> list[str]:
    """``n`` SMILES: RDKit's first_200.props.sdf, cycled."""
    smiles = [Chem.MolToSmiles(m) for m in Chem.SDMolSupplier(str(NCI)) if m is not None]
    return [smiles[i % len(smiles)] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--molecules", type=int, default=200)
    ap.add_argument("--grid-size", type=int, default=32)
    ap.add_argument("--box", default="cube:24")
    ap.add_argument("--workers", type=int, default=None, help="pipeline workers (default: cores)")
    ap.add_argument("--relax", action="store_true", help="also relax (MMFF94/UFF)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    workers = available_cores() if args.workers is None else args.workers
    smiles = nci_smiles(args.molecules)
    load_before = os.getloadavg()

    typer = channel_typer("pharmacophore", "gasteiger")
    recipe = GridRecipe(args.grid_size, 0.5, box=args.box, typer=typer)
    codec = GridCodec.parse("gzip")
    plain = ReadOptions()
    stages = dict.fromkeys(("parse", "embed", "relax", "type", "grid", "encode"), 0.0)
    done = failed = 0
    for record, smi in enumerate(smiles):
        t0 = time.process_time()
        mol = Chem.MolFromSmiles(smi)
        t1 = time.process_time()
        stages["parse"] += t1 - t0
        embedded = embed_3d(mol, record, smi, plain)
        t2 = time.process_time()
        stages["embed"] += t2 - t1
        if isinstance(embedded, str):
            failed += 1
            continue
        mol = embedded[0]
        if args.relax:
            if AllChem.MMFFHasAllMoleculeParams(mol):
                AllChem.MMFFOptimizeMolecule(mol)
            else:
                AllChem.UFFOptimizeMolecule(mol)
        t3 = time.process_time()
        stages["relax"] += t3 - t2
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        s = Structure(z, mol.GetConformer().GetPositions(), mol=mol)
        try:
            particles, box = recipe.prepare(s)  # typing: memberships → particles, box
        except ValueError:
            failed += 1
            continue
        t4 = time.process_time()
        stages["type"] += t4 - t3
        g = render_batch(recipe.batch([s], [(particles, box)]), threads=1)[0]
        t5 = time.process_time()
        stages["grid"] += t5 - t4
        codec.round(g)
        codec.encode(g)
        stages["encode"] += time.process_time() - t5
        done += 1
    per_mol = {k: 1e3 * v / max(done, 1) for k, v in stages.items()}
    total = sum(per_mol.values())

    tmp = Path(tempfile.mkdtemp(prefix="pgrid-bench-smiles-"))
    try:
        path = tmp / "nci.smi"
        path.write_text("".join(f"{s} m{i}\n" for i, s in enumerate(smiles)))
        opts = GridOptions(
            grid_size=args.grid_size,
            box=args.box,
            channels="pharmacophore",
            charge_channel="gasteiger",
            relax=args.relax,
        )
        t = time.perf_counter()
        summary = grid_files([path], tmp / "out", opts, workers=workers)
        wall = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    result = {
        "molecules": len(smiles),
        "typed_in_stages": done,
        "failed_in_stages": failed,
        "grid_shape": [recipe.n_channels, *recipe.shape],
        "box": recipe.box,
        "relax": args.relax,
        "ms_per_molecule_one_core": {k: round(v, 3) for k, v in per_mol.items()},
        "share": {k: round(v / total, 3) for k, v in per_mol.items()},
        "pipeline": {
            "workers": workers,
            "written": summary.written,
            "rejected": summary.rejected,
            "seconds": round(wall, 2),
            "molecules_per_s": round(summary.written / wall, 1),
            "cpu_seconds": {k: round(v, 2) for k, v in summary.timings.items()},
            "rejected_by_kind": dict(summary.rejected_by_kind),
            "cpu_ms_per_molecule": round(1e3 * sum(summary.timings.values()) / len(smiles), 2),
        },
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "cores": available_cores(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"SMILES → shards, {len(smiles)} NCI molecules, {result['grid_shape']} in {recipe.box}")
    print("  stage     ms/molecule (1 core)   share")
    for k, v in per_mol.items():
        print(f"  {k:<8} {v:>12.3f}          {v / total:>6.1%}")
    p = result["pipeline"]
    print(
        f"  pipeline: {p['written']} written, {p['rejected']} rejected in {p['seconds']} s "
        f"= {p['molecules_per_s']} molecules/s with {workers} workers "
        f"({p['cpu_ms_per_molecule']} CPU ms per molecule; rejected: {p['rejected_by_kind']})"
    )
    print(f"  load average (1 min) before/after: {result['load_average_before_after']}")


if __name__ == "__main__":
    main()
