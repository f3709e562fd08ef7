"""Properties in shards (docs/format.md §6, format version 2): every source the readers
see (SDF tags and atom property lists, extended-XYZ info and arrays, QM9, CIF data items,
a labels table) round-trips through ``pgrid grid`` into ``properties/<name>`` and
``atom_properties/<name>``, with run-wide ids, checksums, ``pgrid info`` and all.h5."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.store.properties import atom_column, property_column
from pgrid_cli.store.rundir import describe, write_index
from pgrid_cli.store.shard import Shard, ShardSet
from pgrid_cli.store.verify import verify_shard

SMALL = GridOptions(grid_size=8, sigma=0.5, channels="C,H,N,O,*")


def run(inputs, out, options=SMALL, **kw):
    kw.setdefault("workers", 0)
    return grid_files([str(i) for i in inputs], out, options, **kw)


MOLBLOCK = """\
{name}
     RDKit          3D

  3  2  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0
    0.9572    0.0000    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.2400    0.9266    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
M  END
"""


def sdf_record(name: str, tags: dict[str, str]) -> str:
    body = MOLBLOCK.format(name=name)
    for k, v in tags.items():
        body += f"> <{k}>\n{v}\n\n"
    return body + "$$$$\n"


def test_sdf_tags_and_atom_lists_round_trip(tmp_path: Path) -> None:
    sdf = tmp_path / "w.sdf"
    sdf.write_text(
        sdf_record("w1", {"energy": "-76.4", "label": "water", "atom.dprop.q": "-0.8 0.4 0.4"})
        + sdf_record("w2", {"energy": "-76.3", "flag": "1", "note": "two\nlines"})
        + sdf_record("w3", {"label": "3"})  # a number where w1 has a string
    )
    run([sdf], tmp_path / "out")
    shard = Shard(tmp_path / "out" / "shard-00000.h5")
    assert shard.attrs["format_version"] == 2
    assert shard.property_names == ["energy", "flag", "label", "note"]
    np.testing.assert_array_equal(shard.property_column("energy")[:2], [-76.4, -76.3])
    assert np.isnan(shard.property_column("energy")[2])  # w3 lacks it: NaN
    # a string and a number in one column: the column is strings
    assert list(shard.property_column("label")) == ["water", "", "3"]
    assert shard.property_column("note")[1] == "two\nlines"
    q = shard.atom_properties(0)["q"]
    np.testing.assert_allclose(q, [-0.8, 0.4, 0.4])
    assert np.isnan(shard.atom_properties(1)["q"]).all()  # w2 has no list
    assert [shard.id(i) for i in range(3)] == [0, 1, 2]
    assert verify_shard(shard.path, checksums=True).ok


def test_extxyz_info_and_arrays_round_trip(tmp_path: Path) -> None:
    xyz = tmp_path / "a.extxyz"
    xyz.write_text(
        textwrap.dedent(
            """\
            3
            Properties=species:S:1:pos:R:3:forces:R:3:charges:R:1 energy=-1.5 tag=abc ok=T n=7
            O 0.0 0.0 0.0 0.1 0.2 0.3 -0.8
            H 0.96 0.0 0.0 0.0 0.0 0.1 0.4
            H -0.24 0.93 0.0 0.0 0.1 0.0 0.4
            2
            Properties=species:S:1:pos:R:3 energy=-0.5 tag=7
            H 0.0 0.0 0.0
            H 0.74 0.0 0.0
            """
        )
    )
    run([xyz], tmp_path / "out")
    shard = Shard(tmp_path / "out" / "shard-00000.h5")
    p0, p1 = shard.properties(0), shard.properties(1)
    assert p0["energy"] == -1.5 and p1["energy"] == -0.5
    assert p0["ok"] == 1.0 and np.isnan(p1["ok"])  # booleans are numbers
    assert p0["n"] == 7.0
    assert p0["tag"] == "abc" and p1["tag"] == "7"  # mixed: strings
    a0 = shard.atom_properties(0)
    assert a0["forces"].shape == (3, 3)
    np.testing.assert_allclose(a0["forces"][0], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(a0["charges"], [-0.8, 0.4, 0.4])
    assert np.isnan(shard.atom_properties(1)["forces"]).all()
    with h5py.File(shard.path) as f:
        assert f["atom_properties/forces"].shape == (5, 3)
        assert "checksums" in f and "atom_properties/forces" in f["checksums"].attrs
        assert "properties/energy" in f["checksums"].attrs and "id" in f["checksums"].attrs


def test_checksums_cover_properties(tmp_path: Path) -> None:
    sdf = tmp_path / "w.sdf"
    sdf.write_text(sdf_record("w1", {"energy": "-76.4"}) + sdf_record("w2", {"energy": "1"}))
    run([sdf], tmp_path / "out")
    path = tmp_path / "out" / "shard-00000.h5"
    assert verify_shard(path, checksums=True).ok
    with h5py.File(path, "r+") as f:
        f["properties/energy"][0] = 5.0
    check = verify_shard(path, checksums=True)
    assert not check.ok and "properties/energy" in check.problem


CIF = """\
data_NaCl
_cell_length_a 5.64
_cell_length_b 5.64
_cell_length_c 5.64
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_cell_volume 179.4(2)
_chemical_formula_sum 'Na Cl'
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Na1 Na 0 0 0
Cl1 Cl 0.5 0.5 0.5
"""


def test_cif_tags_round_trip(tmp_path: Path) -> None:
    cif = tmp_path / "nacl.cif"
    cif.write_text(CIF)
    opts = GridOptions(grid_size=8, cif_tags="_cell_volume,chemical_formula_sum,_not_there")
    run([cif], tmp_path / "out", opts)
    shard = Shard(tmp_path / "out" / "shard-00000.h5")
    p = shard.properties(0)
    assert p["cell_volume"] == pytest.approx(179.4)  # the uncertainty dropped
    assert p["chemical_formula_sum"] == "Na Cl"
    assert "not_there" not in p
    # without --cif-tags, no CIF property is kept
    run([cif], tmp_path / "plain", GridOptions(grid_size=8))
    assert Shard(tmp_path / "plain" / "shard-00000.h5").property_names == []


def test_labels_table_by_name_and_by_source_record(tmp_path: Path) -> None:
    sdf = tmp_path / "w.sdf"
    sdf.write_text(sdf_record("w1", {"energy": "1"}) + sdf_record("w2", {}) + sdf_record("w3", {}))
    table = tmp_path / "labels.csv"
    table.write_text("name,y,kind\nw1,0.5,a\nw3,1.5,\nzz,9,b\n")
    opts = GridOptions(grid_size=8, channels="C,H,N,O,*", labels=str(table))
    summary = run([sdf], tmp_path / "out", opts)
    assert summary.notes["labels from labels.csv: joined"] == 2
    shard = Shard(tmp_path / "out" / "shard-00000.h5")
    y = shard.property_column("y")
    assert y[0] == 0.5 and np.isnan(y[1]) and y[2] == 1.5
    assert list(shard.property_column("kind")) == ["a", "", ""]
    assert shard.property_column("energy")[0] == 1.0  # the reader's properties stay
    assert summary.manifest
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["notes"]["labels from labels.csv: joined"] == 2
    assert manifest["notes"]["labels from labels.csv: no row for the record's name"] == 1
    by_rec = tmp_path / "by_record.csv"
    by_rec.write_text("source,record,y\nw.sdf,1,7\n")
    opts = GridOptions(grid_size=8, labels=str(by_rec), labels_key="source,record")
    run([sdf], tmp_path / "out2", opts)
    y = Shard(tmp_path / "out2" / "shard-00000.h5").property_column("y")
    assert np.isnan(y[0]) and y[1] == 7.0


def test_labels_table_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    sdf = tmp_path / "w.sdf"
    sdf.write_text(sdf_record("w1", {}) + sdf_record("w2", {}))
    table = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"name": ["w2", "w1"], "y": [2.0, 1.0]}), table)
    run([sdf], tmp_path / "out", GridOptions(grid_size=8, labels=str(table)))
    np.testing.assert_array_equal(
        Shard(tmp_path / "out" / "shard-00000.h5").property_column("y"), [1.0, 2.0]
    )


def test_labels_bad_key_or_column(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text("id,y\n1,2\n")
    with pytest.raises(ValueError, match="no column name"):
        GridOptions(labels=str(table)).resolve()
    with pytest.raises(ValueError, match="labels_key"):
        GridOptions(labels=str(table), labels_key="record").resolve()


def test_ids_are_item_numbers_across_shards_and_rejections(tmp_path: Path) -> None:
    sdf = tmp_path / "w.sdf"
    bad = "broken\n\n\n  x\n$$$$\n"
    sdf.write_text(sdf_record("w1", {}) + bad + sdf_record("w3", {}) + sdf_record("w4", {}))
    opts = GridOptions(grid_size=8, shard_size=2)
    run([sdf], tmp_path / "out", opts)
    ds = ShardSet(tmp_path / "out")
    assert [r.id for r in ds] == [0, 2, 3]
    assert [r.name for r in ds] == ["w1", "w3", "w4"]


def test_column_rules() -> None:
    data, dtype = property_column([1.0, None, 3.0])
    assert dtype is None and np.isnan(data[1])
    data, dtype = property_column([1.0, "x", None])
    assert list(data) == ["1", "x", ""]
    data, _ = property_column([np.array([1.0, 2.0]), 3.0, None])
    assert [list(v) for v in data] == [[1.0, 2.0], [3.0], []]
    data, _ = property_column([np.array([1.0]), "s"])
    assert list(data) == ["[1.0]", "s"]
    data, dtype = atom_column([np.ones((2, 3)), None], [2, 1])
    assert data.shape == (3, 3) and np.isnan(data[2]).all()
    data, dtype = atom_column([np.ones(2), np.array(["a"], dtype=object)], [2, 1])
    assert list(data) == ["1", "1", "a"]


def test_info_lists_properties_and_vds_carries_them(tmp_path: Path) -> None:
    sdf = tmp_path / "w.sdf"
    sdf.write_text(
        sdf_record("w1", {"e": "-2", "s": "x", "atom.dprop.q": "1 2 3"})
        + sdf_record("w2", {"e": "4", "s": "y"})
        + sdf_record("w3", {"s": "z"})
    )
    run([sdf], tmp_path / "out", GridOptions(grid_size=8, shard_size=2))
    d = describe(tmp_path / "out")
    assert d["properties"]["e"] == {"kind": "number", "count": 2, "min": -2.0, "max": 4.0}
    assert d["properties"]["s"]["kind"] == "string" and d["properties"]["s"]["count"] == 3
    assert d["atom_properties"]["q"]["count"] == 3
    from typer.testing import CliRunner

    from pgrid_cli.cli import app

    res = CliRunner().invoke(app, ["info", str(tmp_path / "out")])
    assert "property e" in res.output and "-2 … 4" in res.output
    # shard 1 (w3) has no e and no q: all.h5 carries what every shard has
    write_index(tmp_path / "out", vds=True)
    with h5py.File(tmp_path / "out" / "all.h5") as f:
        assert list(f["id"][()]) == [0, 1, 2]
        assert [v.decode() for v in f["properties/s"][()]] == ["x", "y", "z"]
    assert verify_shard(tmp_path / "out" / "all.h5").ok
    s = Shard(tmp_path / "out" / "all.h5")
    assert s.properties(2)["s"] == "z"


def test_version_1_shards_still_read(tmp_path: Path) -> None:
    sdf = tmp_path / "w.sdf"
    sdf.write_text(sdf_record("w1", {}))
    from pgrid_cli.core.box import Box
    from pgrid_cli.store.shard import ShardMeta, ShardWriter

    path = tmp_path / "old.h5"
    meta = ShardMeta(sigma=0.5, channels=["H"], grid_shape=(2, 2, 2))
    with ShardWriter(path, meta) as w:
        box = Box(np.zeros(3), np.eye(3) * 2, (2, 2, 2), False)
        w.append(np.zeros((1, 1, 2, 2, 2), np.float32), [box], [np.array([1])],
                 [np.zeros((1, 3))], ["a"], ["src"], [0])  # fmt: skip
    s = Shard(path)
    assert s.attrs["format_version"] == 1
    assert s[0].id is None and s[0].properties == {} and s.property_names == []
    assert json.loads(json.dumps(describe(path)["properties"])) == {}
