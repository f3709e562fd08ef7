"""Typed channels (issue 13, items 4 and 5): pharmacophore and XS types against
hand-assigned atoms, partial charges whose grids sum to the total charge, the typer
registry, and typed runs of ``pgrid grid``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from rdkit import Chem
from rdkit.Chem import AllChem
from typer.testing import CliRunner

from pgrid_cli import GridRecipe
from pgrid_cli.cli import app
from pgrid_cli.core.channels import TypingError
from pgrid_cli.core.errors import ParameterError
from pgrid_cli.core.kernel import Batch, render_batch
from pgrid_cli.core.structure import Structure
from pgrid_cli.readers import Rejection, iter_records
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.store import ShardSet
from pgrid_cli.typers import (
    ElementsTyper,
    FunctionTyper,
    channel_typer,
    combine,
    get_typer,
    register,
    typer_names,
)
from pgrid_cli.typers.pharmacophore import CHANNELS as PHARMACOPHORE
from pgrid_cli.typers.xs import CHANNELS as XS

from .conftest import SAMPLE

runner = CliRunner()


def structure(smiles: str, hydrogens: bool = True, seed: int = 7) -> Structure:
    """A 3D structure of ``smiles`` built with RDKit (atom order: the SMILES', then H)."""
    mol = Chem.MolFromSmiles(smiles)
    if hydrogens:
        mol = Chem.AddHs(mol)
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return Structure(z, mol.GetConformer().GetPositions(), name=smiles, mol=mol)


def members(typer_name: str, s: Structure, channel: str) -> set[int]:
    t = get_typer(typer_name)
    m = t.memberships(s)
    return set(np.flatnonzero(m[:, t.channels.index(channel)]).tolist())


# ---------------------------------------------------------------- pharmacophore
# Paracetamol CC(=O)Nc1ccc(O)cc1: 0 CH3, 1 C=O carbon, 2 carbonyl O, 3 amide N, 4–7 and
# 9–10 ring carbons (7 carries the OH), 8 hydroxyl O; hydrogens from 11.
PARACETAMOL = "CC(=O)Nc1ccc(O)cc1"
PARACETAMOL_HAND = {
    "donor": {3, 8},  # amide N-H, phenol O-H
    "acceptor": {2, 8},  # carbonyl O, phenol O (the amide N is planar: no lone pair)
    "aromatic": {4, 5, 6, 7, 9, 10},  # the ring's atoms
    "hydrophobe": {0, 5, 6, 9, 10},  # carbons bonded to carbons and hydrogens only
    "pos_ionizable": set(),
    "neg_ionizable": set(),
    "metal": set(),
    "occupancy": set(range(11)),  # the heavy atoms
}
# Acetate CC(=O)[O-]: both oxygens accept, the carboxylate group is negative-ionizable.
ACETATE_HAND = {
    "donor": set(),
    "acceptor": {2, 3},
    "aromatic": set(),
    "hydrophobe": {0},
    "pos_ionizable": set(),
    "neg_ionizable": {1, 2, 3},
    "metal": set(),
    "occupancy": {0, 1, 2, 3},
}


@pytest.mark.parametrize(
    ("smiles", "hand"), [(PARACETAMOL, PARACETAMOL_HAND), ("CC(=O)[O-]", ACETATE_HAND)]
)
def test_pharmacophore_channels_match_hand_assigned_atoms(smiles, hand):
    s = structure(smiles)
    assert get_typer("pharmacophore").channels == PHARMACOPHORE
    for channel, atoms in hand.items():
        assert members("pharmacophore", s, channel) == atoms, channel


def test_pharmacophore_agrees_with_rdkit_features_and_implicit_hydrogens():
    """Every donor/acceptor/ionizable atom RDKit's own factory reports is in the channel
    (the typer adds only the anionic-oxygen acceptors); typing without explicit hydrogens
    gives the same heavy-atom channels."""
    from pgrid_cli.typers.pharmacophore import FAMILIES, feature_factory

    for smiles in (PARACETAMOL, "NCC(=O)O", "c1ccncc1", "C[NH3+]", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"):
        s = structure(smiles)
        mol = Chem.Mol(s.mol)
        Chem.SanitizeMol(mol)
        m = get_typer("pharmacophore").memberships(s)
        for f in feature_factory().GetFeaturesForMol(mol):
            channel = FAMILIES.get(f.GetFamily())
            if channel:
                assert m[list(f.GetAtomIds()), PHARMACOPHORE.index(channel)].all()
        light = structure(smiles, hydrogens=False)
        n = light.numbers.size
        assert_array_equal(get_typer("pharmacophore").memberships(light), m[:n])
        assert not m[n:].any()  # hydrogens are in no channel


def test_glycine_zwitterion_and_a_zinc_ion():
    s = structure("[NH3+]CC(=O)[O-]")
    assert members("pharmacophore", s, "pos_ionizable") == {0}
    assert members("pharmacophore", s, "neg_ionizable") == {2, 3, 4}
    assert members("pharmacophore", s, "acceptor") == {3, 4}
    zn = Structure(np.array([30]), np.zeros((1, 3)), mol=Chem.MolFromSmiles("[Zn+2]"))
    assert members("pharmacophore", zn, "metal") == {0}
    assert members("xs", zn, "Met_D") == {0}


# ---------------------------------------------------------------- XS types
XS_HAND = {
    PARACETAMOL: ["C_H", "C_P", "O_A", "N_D", "C_P", "C_H", "C_H", "C_P", "O_DA", "C_H", "C_H"],
    "c1ccncc1": ["C_H", "C_H", "C_P", "N_A", "C_P", "C_H"],  # pyridine
    "c1cc[nH]c1": ["C_H", "C_H", "C_P", "N_D", "C_P"],  # pyrrole: the NH is planar
    "CN": ["C_P", "N_DA"],  # methylamine
    "CN(C)C": ["C_P", "N_A", "C_P", "C_P"],  # trimethylamine
    "C[NH3+]": ["C_P", "N_D"],  # methylammonium: no lone pair
    "CC#N": ["C_H", "C_P", "N_A"],  # acetonitrile
    "CO": ["C_P", "O_DA"],
    "COC": ["C_P", "O_A", "C_P"],
    "Clc1ccsc1": ["Cl_H", "C_P", "C_H", "C_P", "S_P", "C_P"],  # 3-chlorothiophene
    "FC(F)(F)P": ["F_H", "C_P", "F_H", "F_H", "P_P"],
    "O=[N+]([O-])c1ccccc1": ["O_A", "N_P", "O_A", "C_P", "C_H", "C_H", "C_H", "C_H", "C_H"],
    "CB(C)C": ["C_P", "other", "C_P", "C_P"],  # B: a heteroatom without an XS type
}


@pytest.mark.parametrize("smiles", list(XS_HAND))
def test_xs_types_match_hand_typed_atoms(smiles):
    s = structure(smiles)
    m = get_typer("xs").memberships(s)
    heavy = s.numbers > 1
    assert_array_equal(m.sum(axis=1), heavy.astype(float))  # one type per heavy atom
    got = [XS[int(np.argmax(row))] for row in m[heavy]]
    assert got == XS_HAND[smiles]


# ---------------------------------------------------------------- charges
@pytest.mark.parametrize(
    ("smiles", "total"),
    [("CC(=O)[O-]", -1), ("[NH3+]CC(=O)[O-]", 0), ("C[NH3+]", 1), (PARACETAMOL, 0)],
)
def test_charge_grid_sums_to_the_total_formal_charge(smiles, total):
    s = structure(smiles)
    assert Chem.GetFormalCharge(s.mol) == total
    q = get_typer("gasteiger").memberships(s)[:, 0]
    assert (q < 0).any() and (q > 0).any()  # really signed
    recipe = GridRecipe(64, 0.5, box="cube:32", typer=get_typer("gasteiger"))
    g = recipe.grid_structures([s])[0]
    assert g.shape == (1, 64, 64, 64)
    assert_allclose(g.sum(dtype=np.float64), total, atol=1e-4)
    assert_allclose(g.sum(dtype=np.float64), q.sum(), atol=1e-4)
    light = structure(smiles, hydrogens=False)  # implicit hydrogens' charge folded in
    assert_allclose(get_typer("gasteiger").memberships(light).sum(), total, atol=1e-6)


def test_negative_weights_reach_the_kernel():
    """The native kernel grids negative weights as the mirror image of positive ones."""
    from pgrid_cli.core.box import Box

    box = Box.for_molecule("cube:8", np.zeros((1, 3)), (16, 16, 16))
    grids = [
        render_batch(Batch.from_structures([np.zeros((1, 3))], [box], 0.5, weights=[[w]]))
        for w in (-0.7, 0.7)
    ]
    assert_allclose(grids[0], -grids[1], rtol=0, atol=0)
    assert_allclose(grids[0].sum(dtype=np.float64), -0.7, atol=1e-5)


def test_file_charges_from_an_sdf_atom_property_list(tmp_path):
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)[O-]"))
    AllChem.EmbedMolecule(mol, randomSeed=3)
    AllChem.ComputeGasteigerCharges(mol)
    q = np.array([a.GetDoubleProp("_GasteigerCharge") for a in mol.GetAtoms()])
    for a, v in zip(mol.GetAtoms(), q, strict=True):
        a.SetDoubleProp("PartialCharge", float(v))
    Chem.CreateAtomDoublePropertyList(mol, "PartialCharge")
    path = tmp_path / "acetate.sdf"
    with Chem.SDWriter(str(path)) as w:
        w.write(mol)
    (s,) = list(iter_records(path))
    got = get_typer("file").memberships(s)[:, 0]
    assert_allclose(got, q, atol=1e-6)  # the SDF stores them with 6+ digits
    no_charges = structure("CCO")
    with pytest.raises(TypingError, match="no partial charges"):
        get_typer("file").memberships(no_charges)


# ---------------------------------------------------------------- interface, registry
def test_registry_elements_and_combinations():
    assert {"pharmacophore", "xs", "gasteiger", "file", "elements", "single"} <= set(typer_names())
    e = get_typer("C,H,O,*")
    assert isinstance(e, ElementsTyper) and e.channels == ("C", "H", "O", "*")
    s = structure("CCO")
    m = e.memberships(s)
    assert_array_equal(m.argmax(axis=1), [0, 0, 2] + [1] * 6)
    both = combine([get_typer("xs"), get_typer("gasteiger")])
    assert both.channels == (*XS, "charge") and both.signed
    assert both.signed_channels == (False,) * len(XS) + (True,)
    assert channel_typer("elements") is None  # the element path, no typer
    assert channel_typer("pharmacophore").name == "pharmacophore"
    assert channel_typer("elements", "gasteiger").channels[-1] == "charge"
    with pytest.raises(ParameterError, match="charge_channel"):
        channel_typer("xs", "mulliken")
    with pytest.raises(ParameterError, match="neither a typer"):
        get_typer("pharmacophores")


def test_the_elements_typer_grids_like_the_element_channels():
    """Typed gridding (particles) and the element path give the same grids."""
    s = structure(PARACETAMOL)
    plain = GridRecipe(24, 0.5, "elements")
    typed = GridRecipe(24, 0.5, typer=get_typer("elements"))
    assert typed.channel_names == plain.channel_names
    assert_allclose(typed.grid_structures([s]), plain.grid_structures([s]), atol=1e-6)


def test_a_user_typer_and_bad_memberships():
    def polar_h(st: Structure) -> np.ndarray:
        """Hydrogens bonded to N or O, in one channel."""
        out = np.zeros((len(st), 1))
        for a in st.mol.GetAtoms():
            if a.GetAtomicNum() == 1 and a.GetNeighbors()[0].GetAtomicNum() in (7, 8):
                out[a.GetIdx(), 0] = 1.0
        return out

    register(FunctionTyper("polar_h_test", ("polar_h",), polar_h))
    s = structure(PARACETAMOL)
    recipe = GridRecipe(32, 0.4, box="cube:20", typer=get_typer("polar_h_test"))
    assert_allclose(recipe.grid_structures([s]).sum(dtype=np.float64), 2.0, atol=1e-4)
    negative = FunctionTyper("neg", ("x",), lambda st: -np.ones((len(st), 1)))
    with pytest.raises(TypingError, match="negative weight"):
        GridRecipe(8, typer=negative).prepare(s)
    wrong = FunctionTyper("wrong", ("x", "y"), lambda st: np.ones((len(st), 1)))
    with pytest.raises(TypingError, match="shape"):
        GridRecipe(8, typer=wrong).prepare(s)
    no_mol = Structure(s.numbers, s.positions)
    with pytest.raises(TypingError, match="no bonds"):
        get_typer("xs").memberships(no_mol)


# ---------------------------------------------------------------- pgrid grid
SMI = """CC(=O)Nc1ccc(O)cc1 paracetamol
CC(=O)[O-] acetate
[NH3+]CC(=O)[O-] glycine
C[NH3+] methylammonium
"""


def test_cli_pharmacophore_with_gasteiger_charges(tmp_path):
    path = tmp_path / "m.smi"
    path.write_text(SMI)
    out = tmp_path / "out"
    args = ["grid", str(path), "-o", str(out), "--channels", "pharmacophore"]
    args += ["--charge-channel", "gasteiger", "--box", "cube:24", "--grid-size", "48", "-q"]
    res = runner.invoke(app, [*args, "--workers", "0"])
    assert res.exit_code == 0, res.output
    shards = ShardSet(out)
    assert tuple(shards.shards[0].channels.names) == (*PHARMACOPHORE, "charge")
    totals = {"paracetamol": 0, "acetate": -1, "glycine": 0, "methylammonium": 1}
    for rec in shards:
        g = rec.grid.astype(np.float64)
        assert_allclose(g[-1].sum(), totals[rec.name], atol=1e-4)  # after rounding too
        s = structure(rec.properties["smiles"])
        want = get_typer("pharmacophore").memberships(s).sum(axis=0)
        assert_allclose(g[:-1].sum(axis=(1, 2, 3)), want, atol=1e-3)  # counts per channel
    assert shards.shards[0].file.attrs["typer"] == "pharmacophore+gasteiger"
    info = runner.invoke(app, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["parameters"]["channels"][-1] == "charge"


def test_cli_typed_inputs_without_bonds_are_rejected_and_sdf_is_typed(tmp_path):
    xyz = tmp_path / "w.xyz"
    xyz.write_text("3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    out = tmp_path / "x"
    res = runner.invoke(app, ["grid", str(xyz), "-o", str(out), "--channels", "xs", "-q"])
    assert res.exit_code == 3, res.output  # nothing written
    (err,) = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert err["kind"] == "cannot type" and "no bonds" in err["reason"]
    sdf = tmp_path / "s"
    opts = GridOptions(grid_size=16, channels="xs", exclude="H")
    summary = grid_files([SAMPLE / "drugs.sdf"], sdf, opts, workers=0)
    assert summary.written > 0 and summary.rejected == 0
    # structures shards type their records too (the memberships are stored): the same
    # rejection, nothing written
    res = runner.invoke(
        app, ["grid", str(xyz), "-o", str(tmp_path / "t"), "--channels", "xs", "--store",
              "structures", "-q"],
    )  # fmt: skip
    assert res.exit_code == 3, res.output
    (err,) = [json.loads(x) for x in (tmp_path / "t" / "errors.jsonl").read_text().splitlines()]
    assert err["kind"] == "cannot type" and "no bonds" in err["reason"]


def test_typed_records_from_rdkit_sdf_match_the_typer(tmp_path):
    """Each gridded SDF record's xs channels hold its heavy atoms by type (channel sums)."""
    out = tmp_path / "o"
    opts = GridOptions(grid_size=32, channels="xs", box="cube:24", lossless=True)
    grid_files([SAMPLE / "drugs.sdf"], out, opts, workers=0)
    records = {(s.source, s.record): s for s in iter_records(SAMPLE / "drugs.sdf")}
    for rec in list(ShardSet(out))[:5]:
        s = records[(rec.source, rec.record)]
        want = get_typer("xs").memberships(s).sum(axis=0)
        got = rec.grid.astype(np.float64).sum(axis=(1, 2, 3))
        assert_allclose(got, want, atol=2e-2 * max(1.0, want.max()))
        assert not isinstance(s, Rejection)


def test_element_channels_with_a_charge_channel_and_auto(tmp_path):
    """`--channels elements|auto --charge-channel gasteiger`: the element channels (the
    catch-all `*` included) and `charge` after them."""
    path = tmp_path / "m.smi"
    path.write_text(SMI)
    for channels, names in (
        ("elements", ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I", "*", "charge")),
        ("auto", ("H", "C", "N", "O", "charge")),
    ):
        out = tmp_path / channels
        opts = GridOptions(
            grid_size=32, box="cube:24", channels=channels, charge_channel="gasteiger"
        )
        summary = grid_files([path], out, opts, workers=0)
        assert summary.written == 4
        shards = ShardSet(out)
        assert shards.shards[0].channels.names == names
        for rec in shards:
            g = rec.grid.astype(np.float64).sum(axis=(1, 2, 3))
            counts = [np.sum(rec.numbers == z) for z in (1, 6, 7, 8)]
            assert_allclose(g[[0, 1, 2, 3]], counts, atol=1e-3)
        assert_allclose(
            [r.grid[-1].astype(np.float64).sum() for r in shards], [0, -1, 0, 1], atol=1e-4
        )


def test_file_charges_need_no_bonds_extended_xyz(tmp_path):
    """`--charge-channel file` reads an extended-XYZ `charges` column (no molecule needed)."""
    path = tmp_path / "hydroxide.extxyz"
    path.write_text(
        "2\nProperties=species:S:1:pos:R:3:charges:R:1\nO 0.0 0.0 0.0 -1.3\nH 0.97 0.0 0.0 0.3\n"
    )
    out = tmp_path / "o"
    args = ["grid", str(path), "-o", str(out), "--charge-channel", "file", "--channels", "O,H"]
    res = runner.invoke(app, [*args, "--box", "cube:16", "--grid-size", "32", "-q"])
    assert res.exit_code == 0, res.output
    (rec,) = list(ShardSet(out))
    assert_allclose(rec.grid.astype(np.float64).sum(axis=(1, 2, 3)), [1, 1, -1.0], atol=1e-4)
