"""Receptor + ligand complexes: .types lists, pairing, the ligand-centred cube, prefixed
channels, exact receptor cropping, the receptor cache, labels through shards and the
datasets, rotations about the ligand centre."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from pgrid_cli.cli import app
from pgrid_cli.core.complexes import (
    ComplexRecipe,
    assemble_channels,
    ligand_center,
)
from pgrid_cli.core.kernel import grid
from pgrid_cli.core.particles import expand
from pgrid_cli.core.reference import reference_grid
from pgrid_cli.readers import ReadOptions, Rejection, Structure, iter_records
from pgrid_cli.readers import complexes as rc
from pgrid_cli.store.shard import Shard

from .test_pdb import ATOMS, write_pdb

LIGAND = np.array([[3.0, 1.0, 4.0], [4.2, 1.3, 4.1], [4.9, 2.4, 4.0], [2.5, 0.1, 4.0]])
LIGAND_Z = [6, 6, 8, 1]


def write_ligand(path, shift=0.0):
    from rdkit import Chem

    m = Chem.RWMol()
    for z in LIGAND_Z:
        m.AddAtom(Chem.Atom(z))
    conf = Chem.Conformer(len(LIGAND_Z))
    for i, p in enumerate(LIGAND + shift):
        conf.SetAtomPosition(i, p.tolist())
    conf.Set3D(True)
    mol = m.GetMol()
    mol.AddConformer(conf)
    path.write_text(Chem.MolToMolBlock(mol) + "$$$$\n")
    return path


@pytest.fixture
def pairs(tmp_path):
    far = (*ATOMS[0][:5], 60.0, 0.0, 0.0, 1.0, "N")  # far outside any ligand's cube
    write_pdb(tmp_path / "rec.pdb", [*ATOMS, far])
    (tmp_path / "ligs").mkdir()
    write_ligand(tmp_path / "ligs" / "a.sdf")
    write_ligand(tmp_path / "ligs" / "b.sdf", shift=1.5)
    (tmp_path / "pairs.types").write_text(
        "# affinity pose receptor ligand\n"
        "7.5 1 rec.pdb ligs/a.sdf # crystal pose\n"
        "6.25 0 rec.pdb ligs/b.sdf\n"
        "1 x rec.pdb ligs/a.sdf\n"
        "2 0 rec.pdb ligs/missing.sdf\n"
    )
    return tmp_path


def test_types_list_pairs_labels_and_reasons(pairs):
    items = list(iter_records(pairs / "pairs.types"))
    a, b, bad, missing = items
    rec = next(iter_records(pairs / "rec.pdb"))
    for s, label, pose, shift in ((a, 7.5, 1.0, 0.0), (b, 6.25, 0.0, 1.5)):
        assert isinstance(s, Structure)
        n_r = len(rec.numbers)
        assert_allclose(s.positions[:n_r], rec.positions)
        assert_allclose(s.positions[n_r:], LIGAND + shift, atol=1e-4)
        assert list(s.numbers[n_r:]) == LIGAND_Z
        flags = s.info["atom_properties"]["ligand"]
        assert list(flags) == [0.0] * n_r + [1.0] * 4
        p = s.info["properties"]
        assert p["affinity"] == label and p["pose"] == pose and p["ligand_record"] == 0
        assert p["receptor"] == str(pairs / "rec.pdb")
    assert a.info["properties"]["comment"] == "crystal pose"
    assert isinstance(bad, Rejection) and "labels must be numbers" in bad.reason
    assert isinstance(missing, Rejection) and "missing.sdf" in missing.reason
    # --data-root: paths relative to another directory
    (pairs / "lists").mkdir()
    (pairs / "lists" / "p.types").write_text("1 rec.pdb ligs/a.sdf\n")
    (s,) = iter_records(pairs / "lists" / "p.types", options=ReadOptions(data_root=str(pairs)))
    assert isinstance(s, Structure) and s.info["properties"]["label0"] == 1.0


def test_receptor_parsed_once(pairs):
    rc._cache.clear()
    before = rc.RECEPTOR_PARSES[0]
    items = list(iter_records(pairs / "pairs.types"))
    assert sum(isinstance(s, Structure) for s in items) == 2
    assert rc.RECEPTOR_PARSES[0] - before == 1  # three lines name it, one parse
    opts = ReadOptions(receptor=str(pairs / "rec.pdb"))
    (s,) = iter_records(pairs / "ligs" / "b.sdf", options=opts)
    assert rc.RECEPTOR_PARSES[0] - before == 1
    assert s.source == str(pairs / "ligs" / "b.sdf") and s.info["properties"]["ligand_record"] == 0


def test_assemble_channels_block_diagonal():
    m, names = assemble_channels(
        [
            ("receptor", np.eye(2)[[0, 1, 1]], ["C", "O"]),
            ("ligand", np.array([[0.5, 0.5, 0.0]]), ["a", "b", "c"]),
        ]
    )
    assert names == ("receptor:C", "receptor:O", "ligand:a", "ligand:b", "ligand:c")
    expect = np.zeros((4, 5))
    expect[[0, 1, 2], [0, 1, 1]] = 1
    expect[3, 2:4] = 0.5
    assert_allclose(m, expect, atol=0)


def test_complex_grid_centre_channels_cropping(pairs):
    s = next(iter_records(pairs / "pairs.types"))
    recipe = ComplexRecipe(48, 0.5, "C,N,O,*", "cube:24")
    assert recipe.spec.names == tuple(
        f"{p}:{e}" for p in ("receptor", "ligand") for e in ("C", "N", "O", "*")
    )
    (_, box) = recipe.prepare(s)
    heavy = LIGAND[np.array(LIGAND_Z) != 1]
    assert_allclose(box.center, heavy.mean(axis=0), atol=1e-12)  # heavy-atom centre
    assert_allclose(ligand_center(LIGAND, LIGAND_Z), heavy.mean(axis=0), atol=1e-12)
    assert_allclose(box.lengths, [24.0] * 3, atol=1e-12)
    g = recipe.grid_structures([s])[0]
    assert g.shape == (8, 48, 48, 48)
    # independent truth: the float64 reference, each part in its own channels, every
    # receptor atom (the far one included: it must not matter)
    lig = s.info["atom_properties"]["ligand"] > 0.5
    spec = recipe.part_spec
    chans = spec.assign(s.numbers) + np.where(lig, spec.n_channels, 0)
    ref = reference_grid(s.positions, box, 0.5, channels=chans, n_channels=8)
    assert_allclose(g, ref, atol=2e-6)
    # cropping is exact: the same grid bit for bit without the cropped atom
    full = grid(s.positions, box, 0.5, channels=chans, n_channels=8, threads=1)
    np.testing.assert_array_equal(recipe.grid_structures([s], threads=1)[0], full)
    # the element fast path = the general one (memberships assembled, then expanded)
    mask, m = recipe.memberships(s)
    fast = recipe.element_particles(s, mask, np.ones(len(mask), bool))
    general = expand(m, s.positions, s.weights)
    for key in ("positions", "channels", "weights", "atoms"):
        np.testing.assert_array_equal(getattr(general, key), getattr(fast, key))
    assert m.shape == (len(s.numbers), 8) and np.all(m[lig, :4] == 0) and np.all(m[~lig, 4:] == 0)
    assert_allclose(g[4:].sum(), 4.0, atol=1e-4)  # the ligand, whole, in ligand channels
    assert_allclose(recipe.captured(g, s), 1.0, atol=1e-4)


def test_cli_receptor_ligand_and_types_through_shards(pairs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "grid",
            str(pairs / "pairs.types"),
            "-o",
            str(out),
            "--workers",
            "0",
            "-q",
            "--channels",
            "C,N,O,*",
        ],
    )
    assert r.exit_code == 0, r.output
    shard = Shard(out / "shard-00000.h5")
    try:
        assert shard.file["grids"].shape == (2, 8, 48, 48, 48)  # default cube:24 at 48³
        assert [str(c) for c in shard.file.attrs["channels"]][:1] == ["receptor:C"]
        props = shard.file["properties"]
        assert_allclose(props["affinity"][:], [7.5, 6.25])
        assert_allclose(props["pose"][:], [1, 0])
        stored = shard[1].grid
        box = shard[1].box
    finally:
        shard.close()
    # export and show read complex shards: one file per non-empty channel, named after it
    # ("receptor:C" → g.receptor-C.cube), read back by ASE as amount / voxel volume (Bohr³)
    from ase.io.cube import read_cube
    from ase.units import Bohr

    r = runner.invoke(app, ["export", str(out), "--index", "1", "-o", str(tmp_path / "g.cube")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.receptor-C.cube").exists() and (tmp_path / "g.ligand-C.cube").exists()
    with open(tmp_path / "g.ligand-C.cube") as fh:
        back = read_cube(fh)["data"]
    assert_allclose(back, stored[4] / (box.voxel_volume / Bohr**3), rtol=1e-5, atol=1e-9)
    r = runner.invoke(app, ["show", str(out), "--index", "0", "-o", str(tmp_path / "c.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c.png").stat().st_size > 1000
    out2 = tmp_path / "out2"
    r = runner.invoke(
        app,
        [
            "grid",
            "--receptor",
            str(pairs / "rec.pdb"),
            "--ligand",
            str(pairs / "ligs" / "a.sdf"),
            "--ligand",
            str(pairs / "ligs" / "b.sdf"),
            "-o",
            str(out2),
            "--workers",
            "0",
            "-q",
            "--box",
            "cube:16",
            "--grid-size",
            "32",
        ],
    )
    assert r.exit_code == 0, r.output
    shard = Shard(out2 / "shard-00000.h5")
    try:
        assert shard.file["grids"].shape == (2, 22, 32, 32, 32)
    finally:
        shard.close()
    r = runner.invoke(app, ["grid", "--ligand", "x.sdf", "-o", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "--ligand needs --receptor" in r.output


def test_dataset_labels_and_rotation_about_ligand_centre(pairs):
    from pgrid_cli.torch import StructureDataset

    recipe = ComplexRecipe(32, 0.5, "C,N,O,*", "cube:16")
    ds = StructureDataset.from_files(
        pairs / "pairs.types",
        recipe,
        rotate=True,
        seed=3,
        targets=["affinity", "pose"],
        errors="ignore",
    )
    assert len(ds) == 2
    item = ds[0]
    assert_allclose(item["targets"].numpy(), [7.5, 1.0])
    n_r = len(item["positions"]) - 4
    moved = item["positions"].numpy()[n_r:]
    heavy = np.array(LIGAND_Z) != 1
    assert_allclose(moved[heavy].mean(axis=0), LIGAND[heavy].mean(axis=0), atol=1e-9)
    assert not np.allclose(moved, LIGAND, atol=1e-3)  # it did rotate
    assert_allclose(item["grid"][4:].sum().item(), 4.0, atol=1e-4)
    again = StructureDataset.from_files(
        pairs / "pairs.types", recipe, rotate=True, seed=3, errors="ignore"
    )[0]
    np.testing.assert_array_equal(item["grid"].numpy(), again["grid"].numpy())  # seeded


def test_structures_shards_regrid_complexes_with_rotation(pairs, tmp_path):
    """`--store structures` keeps the ligand flags: StructureShardDataset regrids the pairs
    as StructureDataset does from the list, rotation for rotation."""
    from pgrid_cli.torch import StructureDataset, StructureShardDataset

    out = tmp_path / "structs"
    r = CliRunner().invoke(
        app,
        [
            "grid",
            str(pairs / "pairs.types"),
            "-o",
            str(out),
            "--store",
            "structures",
            "--workers",
            "0",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    recipe = ComplexRecipe(32, 0.5, "C,N,O,*", "cube:16")
    kw = {"rotate": True, "translate": 1.0, "seed": 5}
    stored = StructureShardDataset(out, recipe, targets=["affinity"], **kw)
    listed = StructureDataset.from_files(pairs / "pairs.types", recipe, errors="ignore", **kw)
    assert len(stored) == len(listed) == 2
    for k in range(2):
        a, b = stored[k], listed[k]
        assert_allclose(a["positions"].numpy(), b["positions"].numpy(), atol=1e-12)
        assert_allclose(a["grid"].numpy(), b["grid"].numpy(), atol=1e-6)
    assert_allclose(stored[1]["targets"].numpy(), [6.25])
    stored.close()


def test_a_molecule_beside_a_list_is_rejected_with_its_reason(pairs, tmp_path):
    from pgrid_cli.runs.grid import GridOptions, grid_files

    out = tmp_path / "mixed"
    summary = grid_files(
        [pairs / "pairs.types", pairs / "ligs" / "a.sdf"],
        out,
        GridOptions(grid_size=16, box="cube:12"),
        workers=0,
    )
    assert summary.written == 2
    errors = (out / "errors.jsonl").read_text()
    assert "not a receptor + ligand complex" in errors and "a.sdf" in errors


class _Counting:
    """A typer that counts the structures it types (to see the receptor typed once)."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.channels = inner.channels
        self.signed = inner.signed
        self.sizes: list[int] = []

    def memberships(self, structure):
        self.sizes.append(len(structure))
        return self.inner.memberships(structure)


def test_typed_complex_types_each_part_on_its_own_molecule(pairs):
    from pgrid_cli.core.complexes import PARTS_KEY
    from pgrid_cli.typers import get_typer

    typer = _Counting(get_typer("pharmacophore"))
    recipe = ComplexRecipe(48, 0.5, "single", "cube:24", typer=typer)
    names = tuple(typer.channels)
    assert recipe.spec.names == tuple(f"{p}:{n}" for p in ("receptor", "ligand") for n in names)
    first, second = list(iter_records(pairs / "pairs.types"))[:2]
    g = recipe.grid_structures([first], threads=1)[0]
    _, box = recipe.prepare(first)
    # truth: each part typed alone, its particles gridded by the float64 reference
    c = len(names)
    for k, part in enumerate(first.info[PARTS_KEY]):
        m = np.asarray(typer.inner.memberships(part))
        atom, chan = np.nonzero(m)
        ref = reference_grid(
            part.positions[atom], box, 0.5, channels=chan, n_channels=c, weights=m[atom, chan]
        )
        assert_allclose(g[k * c : (k + 1) * c], ref, atol=2e-6)
    assert g[c:].sum() > 0 and g[:c].sum() > 0
    # the receptor (shared by both lines) is typed once; each ligand once
    recipe.grid_structures([second], threads=1)
    n_rec = len(first.info[PARTS_KEY][0])
    assert typer.sizes.count(n_rec) == 1
    assert 0 < recipe.captured(g, first) <= 1.0 + 1e-6


def test_cli_typed_complexes_with_a_charge_channel(pairs, tmp_path):
    out = tmp_path / "typed"
    args = ["grid", str(pairs / "pairs.types"), "-o", str(out), "--workers", "0", "-q"]
    r = CliRunner().invoke(
        app, [*args, "--channels", "pharmacophore", "--charge-channel", "gasteiger"]
    )
    assert r.exit_code == 0, r.output
    shard = Shard(out / "shard-00000.h5")
    try:
        names = [str(c) for c in shard.file.attrs["channels"]]
        assert names[0] == "receptor:donor" and "ligand:charge" in names
        assert shard.file["grids"].shape == (2, len(names), 48, 48, 48)
        # the ligand's charge channel sums to its formal charge (a neutral molecule: 0)
        lig_charge = shard.file["grids"][0, names.index("ligand:charge")]
        assert_allclose(lig_charge.sum(dtype=np.float64), 0.0, atol=1e-3)
    finally:
        shard.close()
