"""PDB (gemmi) and mol2 (RDKit) readers: every policy checked atom by atom on files
written here from known coordinates."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from pgrid_cli.core.errors import ParameterError
from pgrid_cli.readers import ReadOptions, Rejection, Structure, iter_records
from pgrid_cli.readers.records import MODEL_NOT_KEPT

# (record, name, altloc, resname, resseq, x, y, z, occupancy, element)
ATOMS = [
    ("ATOM", "N", " ", "SER", 1, 0.0, 0.0, 0.0, 1.00, "N"),
    ("ATOM", "CA", " ", "SER", 1, 1.458, 0.0, 0.0, 1.00, "C"),
    ("ATOM", "CB", "A", "SER", 1, 1.9, 1.4, 0.1, 0.40, "C"),
    ("ATOM", "OG", "A", "SER", 1, 3.2, 1.5, 0.2, 0.40, "O"),
    ("ATOM", "CB", "B", "SER", 1, 1.9, -1.4, 0.3, 0.60, "C"),
    ("ATOM", "OG", "B", "SER", 1, 3.3, -1.6, 0.4, 0.60, "O"),
    ("ATOM", "C", " ", "SER", 1, 2.0, 0.0, 1.4, 1.00, "C"),
    ("ATOM", "H", " ", "SER", 1, -0.5, 0.8, 0.0, 1.00, "H"),
    ("HETATM", "O", " ", "HOH", 101, 8.0, 8.0, 8.0, 1.00, "O"),
    ("HETATM", "C1", " ", "LIG", 201, 5.0, 0.0, 0.0, 1.00, "C"),
    ("HETATM", "N1", " ", "LIG", 201, 6.3, 0.0, 0.0, 1.00, "N"),
]


def pdb_line(serial: int, a: tuple) -> str:
    rec, name, alt, res, seq, x, y, z, occ, el = a
    name = f" {name:<3}" if len(name) < 4 else name
    return (
        f"{rec:<6}{serial:>5} {name}{alt}{res:>3} A{seq:>4}    "
        f"{x:8.3f}{y:8.3f}{z:8.3f}{occ:6.2f}{10.0:6.2f}          {el:>2}\n"
    )


def write_pdb(path: Path, atoms=ATOMS, models: int = 1, shift: float = 1.0) -> Path:
    lines = []
    for m in range(models):
        if models > 1:
            lines.append(f"MODEL     {m + 1:>4}\n")
        for i, a in enumerate(atoms):
            moved = (*a[:5], a[5] + m * shift, *a[6:])
            lines.append(pdb_line(i + 1, moved))
        if models > 1:
            lines.append("ENDMDL\n")
    lines.append("END\n")
    text = "".join(lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def expected(keep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [a for a in ATOMS if keep(a)]
    z = {"N": 7, "C": 6, "O": 8, "H": 1}
    return (
        np.array([z[a[9]] for a in rows]),
        np.array([a[5:8] for a in rows], dtype=np.float64),
        np.array([a[8] for a in rows]),
    )


def read_one(path: Path, **policy) -> Structure:
    (s,) = list(iter_records(path, options=ReadOptions(**policy)))
    assert isinstance(s, Structure), s
    return s


def check(s: Structure, keep) -> None:
    z, pos, occ = expected(keep)
    np.testing.assert_array_equal(s.numbers, z)
    assert_allclose(s.positions, pos, atol=5e-4)  # PDB's 3 decimals
    assert_allclose(s.info["atom_properties"]["occupancy"], occ, atol=5e-3)


def not_water(a):
    return a[3] != "HOH"


@pytest.mark.parametrize("suffix", [".pdb", ".ent", ".pdb.gz"])
def test_defaults_highest_occupancy_no_water(tmp_path, suffix):
    s = read_one(write_pdb(tmp_path / f"x{suffix}"))
    check(s, lambda a: not_water(a) and a[2] != "A")  # B (0.6) beats A (0.4)
    assert s.weights is None
    assert s.mol is not None and s.mol.GetNumAtoms() == len(s.numbers)
    assert_allclose(s.mol.GetConformer().GetPositions(), s.positions, atol=1e-9)
    assert_allclose(s.info["atom_properties"]["hetatm"], [0] * 6 + [1, 1])


def test_altlocs_first_and_ties(tmp_path):
    s = read_one(write_pdb(tmp_path / "x.pdb"), altlocs="first")
    check(s, lambda a: not_water(a) and a[2] != "B")
    tied = [(*a[:8], 0.5, a[9]) if a[2] != " " else a for a in ATOMS]
    s = read_one(write_pdb(tmp_path / "t.pdb", tied))  # a tie: the first conformer
    z, pos, _ = expected(lambda a: not_water(a) and a[2] != "B")
    assert_allclose(s.positions, pos, atol=5e-4)
    np.testing.assert_array_equal(s.numbers, z)


def test_altlocs_all_weighted_by_occupancy(tmp_path):
    s = read_one(write_pdb(tmp_path / "x.pdb"), altlocs="all")
    check(s, not_water)
    _, _, occ = expected(not_water)
    assert_allclose(s.weights, occ, atol=5e-3)  # no-altloc atoms 1, A 0.4, B 0.6
    assert s.mol is None


def test_waters_hetatm_hydrogens(tmp_path):
    p = write_pdb(tmp_path / "x.pdb")
    check(read_one(p, waters="keep"), lambda a: a[2] != "A")
    check(read_one(p, hetatm="drop"), lambda a: a[0] == "ATOM" and a[2] != "A")
    check(read_one(p, hetatm="drop", waters="keep"), lambda a: a[3] != "LIG" and a[2] != "A")
    check(read_one(p, hydrogens="drop"), lambda a: not_water(a) and a[2] != "A" and a[9] != "H")


def test_hydrogens_add_places_hydrogens_with_rdkit(tmp_path):
    atoms = [a for a in ATOMS if a[3] == "LIG"]  # C1-N1: methylamine, 5 hydrogens
    s = read_one(write_pdb(tmp_path / "l.pdb", atoms), hydrogens="add")
    assert list(s.numbers[:2]) == [6, 7] and (s.numbers[2:] == 1).sum() == 5
    assert_allclose(s.positions[:2], [[5.0, 0, 0], [6.3, 0, 0]], atol=5e-4)
    d = np.linalg.norm(s.positions[2:, None] - s.positions[None, :2], axis=2).min(axis=1)
    assert np.all((d > 0.9) & (d < 1.2))  # each H bonded to C or N


def test_models(tmp_path):
    p = write_pdb(tmp_path / "nmr.pdb", models=3, shift=10.0)
    items = list(iter_records(p, options=ReadOptions()))
    assert isinstance(items[0], Structure)
    assert [r.kind for r in items[1:]] == [MODEL_NOT_KEPT] * 2
    all_ = list(iter_records(p, options=ReadOptions(models="all")))
    assert [s.record for s in all_] == [0, 1, 2]
    for m, s in enumerate(all_):
        assert_allclose(s.positions[0], [10.0 * m, 0, 0], atol=5e-4)


def test_bad_records_and_policies(tmp_path):
    p = tmp_path / "empty.pdb"
    p.write_text("REMARK nothing here\nEND\n")
    (r,) = list(iter_records(p))
    assert isinstance(r, Rejection) and "no ATOM" in r.reason
    q = tmp_path / "x.pdb"
    q.write_text(pdb_line(1, ("ATOM", "X1", " ", "UNK", 1, 0, 0, 0, 1.0, "Xx")))
    (r,) = list(iter_records(q))
    assert isinstance(r, Rejection) and r.kind == "unknown element"
    with pytest.raises(ParameterError, match="waters must be one of drop, keep"):
        ReadOptions(waters="maybe")


# ---------------------------------------------------------------------- mol2
def write_mol2(path: Path, molecules) -> Path:
    """mol2 records from (name, [(element, sybyl type, xyz, charge)], [(i, j, order)])."""
    out = []
    for name, atoms, bonds in molecules:
        out += [
            "@<TRIPOS>MOLECULE",
            name,
            f"{len(atoms)} {len(bonds)} 0 0 0",
            "SMALL",
            "USER_CHARGES",
            "",
            "@<TRIPOS>ATOM",
        ]
        for i, (el, typ, (x, y, z), q) in enumerate(atoms):
            out.append(
                f"{i + 1:>7} {el}{i + 1:<4} {x:10.4f}{y:10.4f}{z:10.4f} {typ:<6} 1 LIG {q:10.4f}"
            )
        out.append("@<TRIPOS>BOND")
        out += [f"{k + 1:>6}{i:>6}{j:>6} {o}" for k, (i, j, o) in enumerate(bonds)]
    path.write_text("\n".join(out) + "\n")
    return path


WATER = (
    "water",
    [
        ("O", "O.3", (0.0, 0.0, 0.0), -0.834),
        ("H", "H", (0.9572, 0, 0), 0.417),
        ("H", "H", (-0.24, 0.927, 0.0), 0.417),
    ],
    [(1, 2, 1), (1, 3, 1)],
)
FORMALDEHYDE = (
    "formaldehyde",
    [
        ("C", "C.2", (1.0, 2.0, 3.0), 0.1),
        ("O", "O.2", (2.2, 2.0, 3.0), -0.3),
        ("H", "H", (0.45, 2.94, 3.0), 0.1),
        ("H", "H", (0.45, 1.06, 3.0), 0.1),
    ],
    [(1, 2, 2), (1, 3, 1), (1, 4, 1)],
)


def test_mol2_records_coordinates_and_charges(tmp_path):
    p = write_mol2(tmp_path / "two.mol2", [WATER, FORMALDEHYDE])
    a, b = list(iter_records(p))
    for s, (name, atoms, _) in ((a, WATER), (b, FORMALDEHYDE)):
        assert s.name == name
        z = {"O": 8, "H": 1, "C": 6}
        np.testing.assert_array_equal(s.numbers, [z[t[0]] for t in atoms])
        assert_allclose(s.positions, [t[2] for t in atoms], atol=1e-4)
        assert_allclose(s.info["charges"], [t[3] for t in atoms], atol=1e-6)
        assert_allclose(s.info["atom_properties"]["charge"], [t[3] for t in atoms], atol=1e-6)
        assert s.mol is not None and s.mol.GetNumAtoms() == len(atoms)
    assert_allclose(b.info["charges"].sum(), 0.0, atol=1e-9)
    assert str(b.mol.GetBondBetweenAtoms(0, 1).GetBondType()) == "DOUBLE"


def test_mol2_hydrogen_policies_and_bad_record(tmp_path):
    p = write_mol2(tmp_path / "f.mol2", [FORMALDEHYDE])
    (s,) = list(iter_records(p, options=ReadOptions(hydrogens="drop")))
    np.testing.assert_array_equal(s.numbers, [6, 8])
    bare = ("bare", FORMALDEHYDE[1][:2], [(1, 2, 2)])
    (s,) = list(
        iter_records(write_mol2(tmp_path / "b.mol2", [bare]), options=ReadOptions(hydrogens="add"))
    )
    np.testing.assert_array_equal(s.numbers, [6, 8, 1, 1])
    bad = tmp_path / "bad.mol2"
    bad.write_text("@<TRIPOS>MOLECULE\nbroken\n2 1\nSMALL\n\n@<TRIPOS>ATOM\n1 C 0 0\n")
    (r,) = list(iter_records(bad))
    assert isinstance(r, Rejection) and r.name == "broken"
