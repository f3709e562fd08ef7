"""Write ``sample_data/qm9_synthetic/``: small molecules in the QM9 file format, with
SYNTHETIC properties.

Run from the repository root::

    python tools/make_qm9_sample.py            # writes sample_data/qm9_synthetic/
    python tools/make_qm9_sample.py --out DIR

The geometries are real enough (RDKit ETKDGv3, ``randomSeed = 0xF00D``, then MMFF94) and
the Mulliken column holds RDKit's Gasteiger charges, but every property is MADE UP: a
simple formula of the molecule's composition plus seeded noise, so that a network has
something learnable to fit. Nothing here is a quantum-chemical result; do not use the
values for anything but testing and the example (examples/train_3dcnn.py). The formulas:

* ``gap`` = 0.20 + 0.06·(H atoms ÷ heavy atoms) + 0.015·(O atoms) − 0.01·(N atoms)
  + 0.012·(F atoms) + N(0, 0.004) Hartree; ``homo`` = −0.24 − 0.3·(gap − 0.25) +
  N(0, 0.003); ``lumo`` = homo + gap;
* ``A``, ``B``, ``C``: rotational constants from the geometry's principal moments of
  inertia (GHz; 0 for a moment below 1e-3 amu Å²) — the only computed ones;
* ``mu`` uniform 0–4 D; ``alpha`` = 6 + 8·(heavy atoms) + N(0, 1) Bohr³; ``r2`` = Σ |r −
  centroid|² in Bohr²; ``zpve`` = 0.0087·(atoms) Hartree; ``U0`` = Σ of isolated-atom
  energies (H −0.5, C −37.85, N −54.59, O −75.07, F −99.73) − 0.17·(bonds); ``U`` = U0 +
  0.0028, ``H`` = U + 0.00094, ``G`` = H − 0.025 − 0.002·(atoms); ``Cv`` = 6 + 1.5·(atoms);
* frequencies: 3N − 6 (3N − 5 for linear molecules) sorted uniform values 200–3300 cm⁻¹.

Deterministic (fixed seeds, single-threaded embedding): running it twice gives the same
files. Numbers are written as QM9 writes them, a few with Mathematica's ``*^`` exponent
(as the real files do for very small values), to exercise the reader.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "sample_data" / "qm9_synthetic"

SMILES = [
    "C", "N", "O", "CC", "CO", "CN", "C#C", "C=C", "C=O", "C#N", "CCC", "CCO", "CC=O",
    "COC", "CC#N", "CC(C)=O", "OC=O", "NC=O", "CC(=O)O", "CCCC", "CC(C)C", "CCCO",
    "CC(C)O", "C1CC1", "C1CO1", "C1CN1", "C1CCC1", "C1COC1", "c1ccoc1", "c1cc[nH]c1",
    "c1ccccc1", "c1ccncc1", "Cc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "c1cnccn1", "CCCCC",
    "CCCCO", "CCOC=O", "CCN", "CCNC", "CN(C)C", "NCCO", "OCCO", "CF", "FC(F)F",
    "CC(F)(F)F", "O=CF", "OC(F)F", "C1CCCC1", "C1CCOC1", "C1CCNC1", "O=C1CCC1", "CC#CC",
    "C=CC=C", "C=CC#N", "N#CC#N", "OC1CC1", "CC1CC1", "NC(N)=O", "CC(N)=O", "COC(C)=O",
    "CCCC#N", "OCC#C",
]  # fmt: skip

ATOM_ENERGY = {1: -0.5, 6: -37.85, 7: -54.59, 8: -75.07, 9: -99.73}
BOHR = 1.0 / 0.529177210903


def fmt(x: float, mathematica: bool = False) -> str:
    """A number as QM9 writes it (``*^`` exponents when asked, as for tiny values)."""
    if mathematica and x != 0 and abs(x) < 1e-3:
        mant, exp = f"{x:.6e}".split("e")
        return f"{mant}*^{int(exp)}"
    return f"{x:.6f}".rstrip("0").rstrip(".") if x else "0."


def rotational_constants(numbers: np.ndarray, pos: np.ndarray) -> list[float]:
    from rdkit.Chem import GetPeriodicTable

    table = GetPeriodicTable()
    m = np.array([table.GetAtomicWeight(int(z)) for z in numbers])
    c = pos - (m[:, None] * pos).sum(0) / m.sum()
    inertia = np.einsum("i,ij,ik->jk", m, c, c)
    moments = np.linalg.eigvalsh(np.trace(inertia) * np.eye(3) - inertia)
    return [505379.07 / i if i > 1e-3 else 0.0 for i in moments]  # GHz, A ≥ B ≥ C


def record(index: int, smiles: str, rng: np.random.Generator) -> str:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = 0xF00D
    params.numThreads = 1
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"cannot embed {smiles}")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    AllChem.ComputeGasteigerCharges(mol)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    pos = mol.GetConformer().GetPositions()
    charges = [float(a.GetDoubleProp("_GasteigerCharge")) for a in mol.GetAtoms()]
    n = len(numbers)
    count = {z: int((numbers == z).sum()) for z in (1, 6, 7, 8, 9)}
    heavy = n - count[1]
    gap = (
        0.20
        + 0.06 * count[1] / heavy
        + 0.015 * count[8]
        - 0.01 * count[7]
        + 0.012 * count[9]
        + rng.normal(0, 0.004)
    )
    homo = -0.24 - 0.3 * (gap - 0.25) + rng.normal(0, 0.003)
    u0 = sum(ATOM_ENERGY[int(z)] for z in numbers) - 0.17 * mol.GetNumBonds()
    u = u0 + 0.0028
    h = u + 0.00094
    rot = sorted(rotational_constants(numbers, pos), reverse=True)
    values = [
        *rot,
        rng.uniform(0, 4),
        6 + 8 * heavy + rng.normal(0, 1),
        homo,
        homo + gap,
        gap,
        float(((pos - pos.mean(0)) ** 2).sum() * BOHR**2),
        0.0087 * n,
        u0,
        u,
        h,
        h - 0.025 - 0.002 * n,
        6 + 1.5 * n,
    ]
    linear = sum(r == 0.0 for r in rot) > 0
    n_freq = 3 * n - (5 if linear else 6)
    freqs = np.sort(rng.uniform(200, 3300, max(n_freq, 1)))
    lines = [str(n), f"gdb {index}\t" + "\t".join(fmt(v) for v in values) + "\t"]
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    for k in range(n):
        x, y, z = pos[k]
        fields = [symbols[k], *(fmt(v, mathematica=True) for v in (x, y, z))]
        lines.append("\t".join([*fields, fmt(charges[k], mathematica=True)]))
    lines.append("\t".join(f"{f:.4f}" for f in freqs))
    canon = Chem.MolToSmiles(Chem.RemoveHs(mol))
    lines.append(f"{smiles}\t{canon}\t")
    inchi = Chem.MolToInchi(mol)
    lines.append(f"{inchi}\t{inchi}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12)
    for i, smiles in enumerate(SMILES, start=1):
        (args.out / f"synthetic_{i:06d}.xyz").write_text(record(i, smiles, rng))
    # read back with pgrid's reader
    from pgrid_cli.readers import Rejection, iter_records

    got = [r for p in sorted(args.out.glob("*.xyz")) for r in iter_records(p)]
    bad = [r for r in got if isinstance(r, Rejection)]
    if bad or len(got) != len(SMILES):
        raise SystemExit(f"read back {len(got)} records, {len(bad)} rejected: {bad[:1]}")
    gaps = [r.info["properties"]["gap"] for r in got]  # type: ignore[union-attr,index]
    print(f"{len(got)} molecules in {args.out}; gap {min(gaps):.3f}–{max(gaps):.3f} Ha")


if __name__ == "__main__":
    main()
