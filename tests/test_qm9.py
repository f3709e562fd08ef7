"""The QM9 format (readers/qm9.py): detection, every quirk of the files, and the
properties it stores. The records here are written in the format by hand (not taken from
the data set); their values are made up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pgrid_cli.readers import TRUNCATED, Rejection, detect_format, iter_records
from pgrid_cli.readers.qm9 import QM9_PROPERTIES, QM9_UNITS, qm9_float
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.store.shard import Shard

# ruff: noqa: E501  QM9 lines are long

METHANE = """\
5
gdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t-40.47893\t-40.476062\t-40.475117\t-40.498597\t6.469\t
C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689
H\t 0.002150416\t-0.0060313176\t 0.0019761204\t 0.133921
H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922
H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923
H\t-0.5238136345\t 1.4379326443\t 0.9063972942\t 0.133923
1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078
C\tC\t
InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4
"""

# Mathematica exponents (*^) in the property line, a coordinate and a charge
WATER = """\
3
gdb 3\t799.58812\t437.90386\t282.94545\t1.9255\t6.31\t-0.2928\t0.0687\t0.3615\t19.0002\t0.021375\t-76.404702\t-76.401867\t-76.400922\t-76.422349\t6.*^0\t
O\t-0.0343604951\t 0.9775395708\t 0.0076015923\t-0.589706
H\t 0.0647664923\t 0.0205721989\t 1.5*^-3\t 0.294845
H\t 0.8717903737\t 1.3007924459\t 0.0006893238\t 2.94861*^-1
1591.0981\t3710.1086\t3820.8399
O\tO\t
InChI=1S/H2O/h1H2\tInChI=1S/H2O/h1H2
"""


def write(tmp_path: Path, name: str, *records: str) -> Path:
    p = tmp_path / name
    p.write_text("".join(records))
    return p


def test_detected_in_xyz_files(tmp_path: Path) -> None:
    p = write(tmp_path, "dsgdb9nsd_000001.xyz", METHANE)
    assert detect_format(p) == "xyz"  # by name; each frame then says it is QM9
    (s,) = list(iter_records(p))
    assert not isinstance(s, Rejection)
    assert s.name == "gdb_1" and len(s) == 5
    props = s.info["properties"]
    assert props["gdb_id"] == 1.0
    values = [157.7118, 157.70997, 157.70699, 0.0, 13.21, -0.3877, 0.1171, 0.5048,
              35.3641, 0.044749, -40.47893, -40.476062, -40.475117, -40.498597, 6.469]  # fmt: skip
    assert [props[k] for k in QM9_PROPERTIES] == values
    assert set(QM9_UNITS) >= {*QM9_PROPERTIES, "gdb_id", "frequencies", "charges"}


def test_fifth_column_is_mulliken_charges(tmp_path: Path) -> None:
    (s,) = list(iter_records(write(tmp_path, "m.xyz", METHANE)))
    np.testing.assert_allclose(
        s.info["atom_properties"]["charges"],
        [-0.535689, 0.133921, 0.133922, 0.133923, 0.133923],
    )
    np.testing.assert_allclose(s.positions[0], [-0.0126981359, 1.0858041578, 0.0080009958])
    assert list(s.numbers) == [6, 1, 1, 1, 1]


def test_mathematica_exponents(tmp_path: Path) -> None:
    assert qm9_float("1.2*^-5") == pytest.approx(1.2e-5)
    assert qm9_float("6.*^0") == 6.0
    (s,) = list(iter_records(write(tmp_path, "w.xyz", WATER)))
    assert not isinstance(s, Rejection), s
    assert s.positions[1, 2] == pytest.approx(1.5e-3)
    assert s.info["atom_properties"]["charges"][2] == pytest.approx(0.294861)
    assert s.info["properties"]["Cv"] == 6.0


def test_frequencies_smiles_inchi(tmp_path: Path) -> None:
    (s,) = list(iter_records(write(tmp_path, "m.xyz", METHANE)))
    p = s.info["properties"]
    np.testing.assert_allclose(p["frequencies"][:2], [1341.307, 1341.3284])
    assert len(p["frequencies"]) == 9  # 3N - 6
    assert (p["smiles_gdb"], p["smiles_relaxed"]) == ("C", "C")
    assert p["inchi_gdb"] == p["inchi_relaxed"] == "InChI=1S/CH4/h1H4"


def test_several_records_and_a_truncated_one(tmp_path: Path) -> None:
    cut = "\n".join(METHANE.splitlines()[:8]) + "\n"  # atoms, frequencies, no SMILES/InChI
    p = write(tmp_path, "many.xyz", METHANE, cut, WATER)
    out = list(iter_records(p))
    assert [type(r).__name__ for r in out] == ["Structure", "Rejection", "Structure"]
    assert out[1].kind == TRUNCATED and "QM9" in out[1].reason
    assert out[2].name == "gdb_3"


def test_plain_xyz_is_not_qm9(tmp_path: Path) -> None:
    plain = "2\ngdb 5 but not fifteen numbers\nH 0 0 0\nH 0.74 0 0\n"
    (s,) = list(iter_records(write(tmp_path, "p.xyz", plain)))
    assert not isinstance(s, Rejection) and "properties" not in s.info


def test_format_qm9_forces_the_trailer(tmp_path: Path) -> None:
    odd = METHANE.replace("gdb 1\t", "GDB-1\t")  # not detected, but --format qm9 reads it
    p = write(tmp_path, "odd.txt", odd)
    (r,) = list(iter_records(p, "qm9"))
    assert isinstance(r, Rejection) and "gdb <index>" in r.reason  # framed as QM9
    (s,) = list(iter_records(write(tmp_path, "m.dat", METHANE), "qm9"))
    assert s.info["properties"]["gdb_id"] == 1.0


def test_qm9_round_trip_through_shards(tmp_path: Path) -> None:
    d = tmp_path / "qm9"
    d.mkdir()
    write(d, "dsgdb9nsd_000001.xyz", METHANE)
    write(d, "dsgdb9nsd_000003.xyz", WATER)
    grid_files([str(d)], tmp_path / "out", GridOptions(grid_size=8), workers=0)
    shard = Shard(tmp_path / "out" / "shard-00000.h5")
    assert shard.attrs["format_version"] == 2
    assert list(shard.property_column("gap")) == [0.5048, 0.3615]
    assert list(shard.property_column("smiles_relaxed")) == ["C", "O"]
    assert len(shard.properties(1)["frequencies"]) == 3
    np.testing.assert_allclose(shard.atom_properties(1)["charges"][0], -0.589706)
    assert shard.verify().ok
