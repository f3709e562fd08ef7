"""SMILES inputs (issue 13, item 1): 3D conformers embedded reproducibly, properties kept,
bad SMILES rejected, the same shards for any number of workers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from rdkit import Chem
from rdkit.Chem import AllChem

from pgrid_cli.readers import ReadOptions, Rejection, iter_raw_records, iter_records, parse_record
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.store import ShardSet

SMI = """# paracetamol, caffeine, an invalid one, acetic acid
CC(=O)Nc1ccc(O)cc1 paracetamol
Cn1cnc2c1c(=O)n(C)c(=O)n2C caffeine
C1CC(C invalid
CC(=O)O acetic acid
"""


def test_smi_records_get_hydrogens_and_a_3d_conformer(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text(SMI)
    items = list(iter_records(path))
    assert [i.name for i in items] == ["paracetamol", "caffeine", "invalid", "acetic acid"]
    bad = items[2]
    assert isinstance(bad, Rejection) and "cannot parse the SMILES" in bad.reason
    para = items[0]
    want = Chem.AddHs(Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1"))
    assert sorted(para.numbers.tolist()) == sorted(a.GetAtomicNum() for a in want.GetAtoms())
    assert para.positions.shape == (20, 3) and np.ptp(para.positions, axis=0).min() > 0.5
    # Bonded distances are chemical: every H within 1.2 Å of a heavy atom.
    d = np.linalg.norm(para.positions[:, None] - para.positions[None], axis=-1)
    heavy = para.numbers > 1
    assert np.all(d[~heavy][:, heavy].min(axis=1) < 1.2)
    assert para.info["properties"]["smiles"] == "CC(=O)Nc1ccc(O)cc1"


def test_embedding_depends_on_the_record_not_on_who_parses_it(tmp_path):
    """The seed is fixed by (embed_seed, record, SMILES): parsing one raw record alone, in
    any order or process, gives the same coordinates; another embed_seed differs."""
    path = tmp_path / "mols.smi"
    path.write_text(SMI)
    raws = [r for r in iter_raw_records(path, "smiles")]
    forward = [parse_record(r) for r in raws]
    backward = [parse_record(r) for r in reversed(raws)][::-1]
    for a, b in zip(forward, backward, strict=True):
        if not isinstance(a, Rejection):
            assert_array_equal(a.positions, b.positions)
    other = parse_record(raws[0], ReadOptions(embed_seed=7))
    assert not np.allclose(other.positions, forward[0].positions)


def test_relax_lowers_the_mmff_energy(tmp_path):
    path = tmp_path / "one.smi"
    path.write_text("CC(=O)Nc1ccc(O)cc1 paracetamol\n")
    (raw,) = iter_raw_records(path, "smiles")
    plain, relaxed = parse_record(raw), parse_record(raw, ReadOptions(relax=True))

    def energy(s):
        mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1"))
        AllChem.EmbedMolecule(mol, randomSeed=1)
        conf = mol.GetConformer()
        for i, xyz in enumerate(s.positions):
            conf.SetAtomPosition(i, xyz.tolist())
        props = AllChem.MMFFGetMoleculeProperties(mol)
        return AllChem.MMFFGetMoleculeForceField(mol, props).CalcEnergy()

    assert energy(relaxed) < energy(plain) - 1.0


def test_csv_table_with_properties_and_workers(tmp_path):
    table = tmp_path / "assay.csv"
    table.write_text(
        "name,smiles,pIC50\nparacetamol,CC(=O)Nc1ccc(O)cc1,5.5\ncaffeine,Cn1cnc2c1c(=O)n(C)c(=O)n2C,4.25\n"
    )
    runs = []
    for workers in (0, 2):
        out = tmp_path / f"o{workers}"
        opts = GridOptions(grid_size=12, format="smiles")
        s = grid_files([table], out, opts, workers=workers)
        assert s.written == 2 and s.rejected == 0
        runs.append(ShardSet(out))
    for a, b in zip(*runs, strict=True):
        assert_array_equal(a.grid, b.grid)
        assert_array_equal(a.positions, b.positions)
    first = runs[0][0]
    assert first.name == "paracetamol"
    assert_allclose(first.properties["pIC50"], 5.5)
    assert first.properties["smiles"] == "CC(=O)Nc1ccc(O)cc1"


def test_a_csv_is_only_smiles_when_asked():
    with pytest.raises(ValueError, match="cannot tell the format"):
        list(iter_records("assay.csv"))


def test_embed_turns_2d_sdf_records_into_3d(tmp_path):
    """`--embed`: RDKit's own 2D SDF (first_200.props.sdf) is embedded, not rejected; the
    atoms are the record's heavy atoms plus hydrogens, and the tags stay properties."""
    from rdkit import RDConfig

    nci = Path(RDConfig.RDDataDir) / "NCI" / "first_200.props.sdf"
    if not nci.exists():
        pytest.skip("RDKit's Data/NCI/first_200.props.sdf absent")
    head = nci.read_text().split("$$$$\n")[:5]
    path = tmp_path / "flat.sdf"
    path.write_text("$$$$\n".join(head) + "$$$$\n")
    assert all(
        isinstance(r, Rejection) and r.kind == "no 3D coordinates" for r in iter_records(path)
    )
    items = list(iter_records(path, options=ReadOptions(embed=True)))
    assert not [r for r in items if isinstance(r, Rejection)]
    for s, block in zip(items, head, strict=True):
        mol = Chem.MolFromMolBlock(block)
        heavy = [a.GetAtomicNum() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
        assert sorted(s.numbers[s.numbers > 1].tolist()) == sorted(heavy)
        assert np.ptp(s.positions[:, 2]) > 0.1  # really 3D
        assert "embedded in 3D" in " ".join(s.info["warnings"])
        assert s.info["properties"]  # the record's tags, kept
    again = list(iter_records(path, options=ReadOptions(embed=True)))
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(items, again, strict=True))


def test_conformers_are_records_identical_for_any_worker_count(tmp_path):
    """`--conformers 3`: three records per molecule (property conformer 0, 1, 2; the same
    source and record index), each its own seeded embedding: the same coordinates with 1
    or 2 workers, conformer 0 that of a run without conformers, the others different."""
    path = tmp_path / "mols.smi"
    path.write_text(SMI)
    runs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        opts = GridOptions(grid_size=12, conformers=3, shard_size=4)
        s = grid_files([path], out, opts, workers=workers)
        assert (s.written, s.rejected) == (9, 3)  # the invalid SMILES: once per conformer
        runs.append(list(ShardSet(out)))
    for a, b in zip(*runs, strict=True):
        assert_array_equal(a.positions, b.positions)
        assert_array_equal(a.grid, b.grid)
    recs = runs[0]
    assert [r.properties["conformer"] for r in recs] == [0, 1, 2] * 3
    assert [r.record for r in recs] == [0, 0, 0, 1, 1, 1, 3, 3, 3]
    para = recs[:3]
    for other in para[1:]:
        assert not np.allclose(other.positions, para[0].positions, atol=0.05)
    single = next(iter(iter_records(path)))
    assert_allclose(para[0].positions, single.positions, atol=1e-12)
    errors = [json.loads(x) for x in (tmp_path / "w1" / "errors.jsonl").read_text().splitlines()]
    assert [e["reason"][:12] for e in errors] == ["conformer 0:", "conformer 1:", "conformer 2:"]


def test_conformers_without_a_smiles_input_is_refused(tmp_path):
    from typer.testing import CliRunner

    from pgrid_cli.cli import app

    sdf = Path(__file__).resolve().parents[1] / "sample_data" / "drugs.sdf"
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["grid", str(sdf), "-o", str(out), "--conformers", "3"])
    assert res.exit_code == 2, res.output
    assert "--conformers applies to SMILES inputs" in res.output
    assert "with --embed, to SDF/mol inputs" in res.output
    assert not out.exists()  # refused before any file is touched


def test_conformers_of_sdf_records_with_embed(tmp_path):
    """`--conformers K --embed` on SDF: a 2D record is embedded K times (each seeded;
    conformer 0 is the plain `--embed` one); a 3D record keeps its own coordinates as
    conformer 0 and gets K - 1 new embeddings of the same atoms in the same order. The
    shards are the same for 1 and 2 workers."""
    from rdkit import RDConfig

    drugs = Path(__file__).resolve().parents[1] / "sample_data" / "drugs.sdf"
    three_d = drugs.read_text().split("$$$$\n")[:2]
    nci = Path(RDConfig.RDDataDir) / "NCI" / "first_200.props.sdf"
    if not nci.exists():
        pytest.skip("RDKit's Data/NCI/first_200.props.sdf absent")
    flat = nci.read_text().split("$$$$\n")[:2]
    path = tmp_path / "mixed.sdf"
    path.write_text("$$$$\n".join(three_d + flat) + "$$$$\n")
    opts = ReadOptions(embed=True, conformers=3)
    items = list(iter_records(path, options=opts))
    assert len(items) == 12 and not [r for r in items if isinstance(r, Rejection)]
    assert [r.info["properties"]["conformer"] for r in items] == [0, 1, 2] * 4
    assert [r.record for r in items] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    plain = list(iter_records(path, options=ReadOptions(embed=True)))
    for m in range(4):
        confs = items[3 * m : 3 * m + 3]
        assert_allclose(confs[0].positions, plain[m].positions, atol=0)  # conformer 0
        for c in confs[1:]:
            assert_array_equal(c.numbers, confs[0].numbers)  # the same atoms, in order
            assert not np.allclose(c.positions, confs[0].positions, atol=0.05)
            # a real conformer: the bonded distances of conformer 0, within 0.1 Å
            mol = Chem.MolFromMolBlock(three_d[m], removeHs=False) if m < 2 else None
            if mol is not None:
                for b in mol.GetBonds():
                    i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
                    d0 = np.linalg.norm(confs[0].positions[i] - confs[0].positions[j])
                    d1 = np.linalg.norm(c.positions[i] - c.positions[j])
                    assert abs(d1 - d0) < 0.1
    runs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        g = GridOptions(grid_size=12, conformers=3, embed=True, shard_size=5)
        summary = grid_files([path], out, g, workers=workers)
        assert (summary.written, summary.rejected) == (12, 0)
        runs.append(list(ShardSet(out)))
    for a, b in zip(*runs, strict=True):
        assert_array_equal(a.positions, b.positions)
        assert_array_equal(a.grid, b.grid)
