"""Lennard-Jones energy grids (pgrid_cli.core.energy, native pgrid/energy.hpp).

The truth is a float64 brute force in NumPy over every lattice image within the cutoff
(not the minimum image), written here independently of the native cell lists.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.io import read, write
from numpy.testing import assert_allclose, assert_array_equal
from typer.testing import CliRunner

from pgrid_cli import _core
from pgrid_cli.cli import app
from pgrid_cli.core.box import Box
from pgrid_cli.core.energy import (
    KCAL_PER_MOL_IN_K,
    UFF_VDW,
    EnergySpec,
    Probe,
    lj_grid,
    uff_sigma_epsilon,
)
from pgrid_cli.core.errors import ParameterError
from pgrid_cli.core.recipe import GridRecipe
from pgrid_cli.core.structure import Structure
from pgrid_cli.store import Shard

#: float32 output against the float64 reference (the brief's tolerance); atol covers the
#: float64 summation's cancellation where E crosses zero (terms of up to ~1e4 K).
RTOL, ATOL = 1e-5, 1e-4


# ---------------------------------------------------------------------- the reference
def reference(points, positions, sig, eps, lattice, cutoff, max_energy=math.inf):
    """E (K) at points (P, 3): every atom image within the cutoff, float64."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pos = np.asarray(positions, dtype=np.float64)
    if lattice is None:
        trans = np.zeros((1, 3))
    else:
        lat = np.asarray(lattice, dtype=np.float64)
        # Wrap atoms and points into the cell; then |n_d| <= cutoff / height_d + 1.
        inv = np.linalg.inv(lat)
        pos = (pos @ inv - np.floor(pos @ inv)) @ lat
        fp = points @ inv
        points = (fp - np.floor(fp)) @ lat
        vol = abs(np.linalg.det(lat))
        heights = [
            vol / np.linalg.norm(np.cross(lat[(d + 1) % 3], lat[(d + 2) % 3])) for d in range(3)
        ]
        reach = [math.ceil(cutoff / h) + 1 for h in heights]
        n = np.array(list(itertools.product(*[range(-r, r + 1) for r in reach])), float)
        trans = n @ lat
    e = np.zeros(len(points))
    for a in range(len(pos)):
        img = pos[a] + trans
        r2 = ((points[:, None, :] - img[None]) ** 2).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            s6 = (sig[a] ** 2 / r2) ** 3
            term = np.where(r2 == 0, np.inf, 4.0 * eps[a] * (s6 * s6 - s6))  # on an atom: +inf
        e += np.where(r2 <= cutoff**2, term, 0.0).sum(1)
    return np.minimum(e, max_energy)


def centres(box: Box) -> np.ndarray:
    return box.voxel_centers().reshape(-1, 3)


def structure_of(atoms) -> Structure:
    lat = np.asarray(atoms.cell[:]) if atoms.pbc.any() else None
    return Structure(atoms.numbers, atoms.positions.copy(), lat)


def check_against_reference(s: Structure, box: Box, spec: EnergySpec, **kw) -> np.ndarray:
    got = spec.grid_box(s.positions, s.numbers, box, s.lattice, **kw)
    sig, eps = spec.mixed(s.numbers)
    want = reference(centres(box), s.positions, sig, eps, s.lattice, spec.cutoff, spec.max_energy)
    assert_allclose(got.reshape(-1), want, rtol=RTOL, atol=ATOL)
    return got


# ---------------------------------------------------------------------- UFF parameters
def test_uff_table_has_every_element_and_the_papers_values() -> None:
    assert len(UFF_VDW) == 103
    # Rappé et al. 1992, Table 1 (x_I Å, D_I kcal/mol).
    paper = {
        "H": (2.886, 0.044),
        "C": (3.851, 0.105),
        "N": (3.660, 0.069),
        "O": (3.500, 0.060),
        "Ar": (3.868, 0.185),
        "Cu": (3.495, 0.005),
        "Zn": (2.763, 0.124),
        "U": (3.395, 0.022),
    }
    for sym, (x, d) in paper.items():
        assert UFF_VDW[sym] == (x, d)
        sigma, eps = uff_sigma_epsilon(sym)
        assert_allclose(sigma, x / 2 ** (1 / 6), rtol=1e-15)
        assert_allclose(eps, d * 503.2195, rtol=1e-6)  # 1 kcal/mol = 503.22 K
    assert_allclose(KCAL_PER_MOL_IN_K, 503.2195, rtol=1e-6)


def test_uff_table_matches_rdkit() -> None:
    """Every element RDKit's UFF typer can type has RDKit's own (x_I, D_I)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdForceFieldHelpers

    RDLogger.DisableLog("rdApp.*")
    checked = 0
    for sym, xd in UFF_VDW.items():
        found = None
        for nh, q in itertools.product(range(7), (0, 1, 2, 3, 4, 5, 6, -1, -2, 7)):
            hs = "" if nh == 0 else ("H" if nh == 1 else f"H{nh}")
            qs = "" if q == 0 else (f"+{q}" if q > 0 else f"-{-q}")
            m = Chem.MolFromSmiles(f"[{sym}{hs}{qs}]", sanitize=False)
            if m is None:
                continue
            m.UpdatePropertyCache(strict=False)
            Chem.SanitizeMol(
                m,
                Chem.SanitizeFlags.SANITIZE_ALL ^ Chem.SanitizeFlags.SANITIZE_PROPERTIES,
                catchErrors=True,
            )
            found = rdForceFieldHelpers.GetUFFVdWParams(m, 0, 0)
            if found:
                break
        if found:
            assert_allclose(found, xd, rtol=1e-12, err_msg=sym)
            checked += 1
    assert checked >= 75  # RDKit types 79 of the 103 elements this way


def test_probe_and_mixing() -> None:
    spec = EnergySpec()
    assert (spec.probe_params.sigma, spec.probe_params.epsilon) == (3.73, 148.0)
    assert spec.channel == "lj:CH4"
    assert Probe.parse("methane") == Probe.parse("CH4")
    ar = EnergySpec(probe="ar")
    assert ar.probe == "Ar" and ar.channel == "lj:Ar"
    s_ar, e_ar = uff_sigma_epsilon("Ar")
    s_c, e_c = uff_sigma_epsilon("C")
    sig, eps = ar.mixed([6])
    assert_allclose(sig, [(s_c + s_ar) / 2], rtol=1e-15)  # Lorentz
    assert_allclose(eps, [math.sqrt(e_c * e_ar)], rtol=1e-15)  # Berthelot


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"probe": "Xx"}, "probe"),
        ({"cutoff": 0}, "energy_cutoff"),
        ({"cutoff": float("nan")}, "energy_cutoff"),
        ({"max_energy": -5}, "energy_max"),
        ({"transform": "log"}, "energy_transform"),
        ({"temperature": 0}, "temperature"),
        ({"kind": "coulomb"}, "energy"),
    ],
)
def test_spec_is_validated_once(kwargs: dict, param: str) -> None:
    with pytest.raises(ParameterError) as err:
        EnergySpec(**kwargs)
    assert "{" + param + "}" in err.value.template


# ---------------------------------------------------------------------- exact grids
def test_cubic_cell_every_image() -> None:
    """NaCl (a = 5.64 Å, far below 2 × 12 Å: many images per atom) at the cell's voxel
    centres, against the brute force."""
    s = structure_of(bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    box = GridRecipe(10).box_for(s.positions, s.lattice)
    got = check_against_reference(s, box, EnergySpec(max_energy=1e30))
    assert got.min() > 1e5  # rock salt leaves no room for methane
    # lj_grid through a recipe gives the same grid.
    assert_array_equal(lj_grid(s, GridRecipe(10), EnergySpec(max_energy=1e30)), got)


@pytest.mark.parametrize("isa", _core.supported_isas())
def test_triclinic_cells(isa: str) -> None:
    """fcc Cu's primitive cell (60° angles, one atom, 2.55 Å edges: ~1000 images) and a
    skewed random cell, on every instruction set."""
    cu = structure_of(bulk("Cu", "fcc", a=3.61))
    check_against_reference(
        cu, Box.from_lattice(cu.lattice, (7, 6, 5)), EnergySpec(max_energy=1e30), isa=isa
    )
    rng = np.random.default_rng(7)
    lat = np.array([[7.0, 0, 0], [2.5, 6.0, 0], [-1.5, 2.0, 5.5]])
    s = Structure(rng.choice([1, 6, 8, 30], 9), rng.random((9, 3)) @ lat, lat)
    check_against_reference(
        s, Box.from_lattice(lat, (9, 8, 7)), EnergySpec(probe="Ar", cutoff=9.0), isa=isa
    )


def test_pair_minimum_is_minus_epsilon() -> None:
    """One atom, open boundary: E = −ε at r = 2^(1/6) σ, 0 at r = σ (mixed values)."""
    spec = EnergySpec(max_energy=1e30)
    sig, eps = spec.mixed([6])
    r = np.array([2 ** (1 / 6) * sig[0], sig[0]])
    got = spec.grid_points(
        [[0.0, 0, 0]], [6], [r[0], 0, 0], [[r[1] - r[0], 0, 0], [0, 1, 0], [0, 0, 1]], (2, 1, 1)
    )
    assert_allclose(got.reshape(-1), [-eps[0], 0.0], rtol=1e-6, atol=1e-5)


def test_molecule_open_boundary() -> None:
    atoms = molecule("C6H6")
    s = Structure(atoms.numbers, atoms.positions.copy())
    recipe = GridRecipe(12, box="fit", padding=3.0)
    box = recipe.box_for(s.positions)
    got = check_against_reference(s, box, EnergySpec(max_energy=1e30))
    assert_array_equal(lj_grid(s, recipe, EnergySpec(max_energy=1e30)), got)


def test_cartesian_window_of_a_crystal() -> None:
    """Points need not be the cell: an axis-aligned window larger than the cell."""
    s = structure_of(bulk("Cu", "fcc", a=3.61))
    spec = EnergySpec(max_energy=1e30)
    origin, steps, shape = np.array([-3.0, -2.0, -1.0]), np.eye(3) * 0.9, (9, 8, 7)
    got = spec.grid_points(s.positions, s.numbers, origin, steps, shape, s.lattice)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    pts = origin + np.stack([i, j, k], -1) @ steps
    sig, eps = spec.mixed(s.numbers)
    want = reference(pts.reshape(-1, 3), s.positions, sig, eps, s.lattice, spec.cutoff)
    assert_allclose(got.reshape(-1), want, rtol=RTOL, atol=ATOL)


def test_cutoff_includes_the_image_just_inside() -> None:
    """One atom in a 20 Å cubic cell: its image at x = 20 Å is 12 ± 1e-6 Å from the points
    x = 8 ∓ 1e-6 Å, so only x = 8 + 1e-6 has it; their difference is that pair term
    (the atom itself, 8 Å away, changes by ~1e-5 K over 2e-6 Å)."""
    lat = np.eye(3) * 20.0
    spec = EnergySpec(probe="Ar", cutoff=12.0, max_energy=1e30)
    sig, eps = spec.mixed([18])
    d = 1e-6
    steps = np.diag([2 * d, 1.0, 1.0])
    got = spec.grid_points([[0.0, 0, 0]], [18], [8.0 - d, 0, 0], steps, (2, 1, 1), lat)
    got = got.reshape(-1)
    pts = np.array([[8.0 - d, 0, 0], [8.0 + d, 0, 0]])
    want = reference(pts, [[0.0, 0, 0]], sig, eps, lat, 12.0)
    assert_allclose(got, want, rtol=RTOL)
    s6 = (sig[0] / 12.0) ** 6
    term = 4 * eps[0] * (s6 * s6 - s6)
    assert_allclose(float(got[1]) - float(got[0]), term, rtol=1e-3)
    # Open boundary: the same atom alone, a point just inside and one just outside.
    out = spec.grid_points([[0.0, 0, 0]], [18], [12.0 - d, 0, 0], steps, (2, 1, 1)).reshape(-1)
    assert out[1] == 0.0
    assert_allclose(out[0], term, rtol=1e-5)


def test_clipping() -> None:
    """An atom on a grid point (r = 0) gives the clip value, never inf or NaN; the rest
    is the reference clipped."""
    s = structure_of(bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    box = Box.from_lattice(s.lattice, 8)
    s.positions[0] = box.voxel_centers()[0, 0, 0]
    spec = EnergySpec(max_energy=500.0)
    got = check_against_reference(s, box, spec)
    assert got[0, 0, 0] == np.float32(500.0)
    assert (got == np.float32(500.0)).mean() > 0.2
    assert np.isfinite(got).all()


def test_boltzmann_transform() -> None:
    s = structure_of(bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    box = Box.from_lattice(s.lattice, 8)
    plain = EnergySpec().grid_box(s.positions, s.numbers, box, s.lattice)
    b = EnergySpec(transform="boltzmann", temperature=250.0)
    got = b.grid_box(s.positions, s.numbers, box, s.lattice)
    sig, eps = b.mixed(s.numbers)
    e = reference(centres(box), s.positions, sig, eps, s.lattice, 12.0, 1e4)
    assert_allclose(got.reshape(-1), np.exp(-e / 250.0), rtol=RTOL, atol=1e-30)
    assert_allclose(got, np.exp(-plain.astype(np.float64) / 250.0), rtol=1e-6)
    assert b.units == "1" and EnergySpec().units == "K"


def test_threads_do_not_change_the_result() -> None:
    s = structure_of(bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    box = Box.from_lattice(s.lattice, 20)
    one = EnergySpec().grid_box(s.positions, s.numbers, box, s.lattice, threads=1)
    two = EnergySpec().grid_box(s.positions, s.numbers, box, s.lattice, threads=2)
    assert_array_equal(one, two)


# ---------------------------------------------------------------------- the boundary
def _call(**over):
    args = {
        "positions": np.zeros((1, 3)),
        "sigmas": np.ones(1) * 3.0,
        "epsilons": np.ones(1) * 50.0,
        "lattice": None,
        "origin": np.zeros(3),
        "steps": np.eye(3),
        "cutoff": 12.0,
        "max_energy": 1e4,
        "out": np.empty((2, 2, 2), np.float32),
    }
    args.update(over)
    _core.lj_energy_grid(*args.values())


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"positions": np.full((1, 3), np.nan)}, "positions\\[0\\]"),
        ({"sigmas": np.zeros(1)}, "sigmas\\[0\\]"),
        ({"epsilons": -np.ones(1)}, "epsilons\\[0\\]"),
        ({"cutoff": 0.0}, "cutoff"),
        ({"cutoff": float("inf")}, "cutoff"),
        ({"max_energy": float("nan")}, "max_energy"),
        ({"lattice": np.zeros((3, 3))}, "degenerate"),
        ({"lattice": np.eye(3) * 0.01}, "too small"),  # ~10^11 images: refused, not enumerated
        ({"origin": np.array([np.inf, 0, 0])}, "finite"),
        ({"sigmas": np.ones(2)}, "sigmas"),
        ({"out": np.empty((2, 2), np.float32)}, "out"),
        ({"out": np.empty((2, 2, 2), np.float64)}, "out"),
    ],
)
def test_native_boundary(over: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _call(**over)


def test_no_atoms_is_zero() -> None:
    out = np.full((2, 2, 2), 7.0, np.float32)
    _call(positions=np.zeros((0, 3)), sigmas=np.zeros(0), epsilons=np.zeros(0), out=out)
    assert (out == 0).all()


# ---------------------------------------------------------------------- pgrid grid
def test_cli_round_trip(tmp_path: Path) -> None:
    write(tmp_path / "nacl.cif", bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    write(tmp_path / "water.xyz", molecule("H2O"))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "grid", str(tmp_path / "nacl.cif"), str(tmp_path / "water.xyz"), "-o", str(out),
            "--grid-size", "8", "--channels", "single", "--energy", "lj", "--probe", "Ar",
            "--energy-cutoff", "10", "--energy-max", "2000", "--workers", "0",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    shard = Shard(out / "shard-00000.h5")
    assert list(shard.attrs["channels"]) == ["all", "lj:Ar"]
    assert shard.channels.names == ("all",)  # the density channels
    params = json.loads(shard.attrs["energy"])
    assert params["probe"] == {
        "name": "Ar",
        "sigma": uff_sigma_epsilon("Ar")[0],
        "epsilon": uff_sigma_epsilon("Ar")[1],
    }
    assert set(params["framework"]) == {"Na", "Cl", "H", "O"}
    assert params["framework"]["Na"]["sigma"] == uff_sigma_epsilon("Na")[0]
    assert (params["cutoff"], params["max_energy"], params["transform"]) == (10.0, 2000.0, "none")
    assert params["mixing"] == "Lorentz-Berthelot" and params["units"]["energy"] == "K"
    recipe = GridRecipe(
        8, channels="single", energy=EnergySpec(probe="Ar", cutoff=10, max_energy=2000)
    )
    assert EnergySpec.from_attribute(shard.attrs["energy"]) == recipe.energy
    for i in range(2):
        rec = shard[i]
        s = Structure(rec.numbers, rec.positions, rec.box.axes if rec.box.periodic else None)
        want = lj_grid(s, recipe)
        assert rec.grid.shape == (2, 8, 8, 8)
        assert_allclose(rec.grid[1], want, rtol=1e-6, atol=1e-6)  # rounding: 2^-21
        assert_allclose(
            rec.grid[0], recipe.grid(s.positions, s.numbers, lattice=s.lattice)[0], atol=1e-6
        )
    info = CliRunner().invoke(app, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["parameters"]["energy"]["channel"] == "lj:Ar"
    text = CliRunner().invoke(app, ["info", str(out)], terminal_width=200).output
    assert "2: all, lj:Ar" in text and "Ar probe" in text and "cutoff 10.0 Å" in text
    # export writes the density channels (the energy one is not a density); read back by ASE
    cube = tmp_path / "w.cube"
    res = CliRunner().invoke(app, ["export", str(out), "--index", "1", "-o", str(cube)])
    assert res.exit_code == 0, res.output
    data = read(cube, format="cube", read_data=True, full_output=True)["data"]
    assert data.shape == (8, 8, 8) and np.isfinite(data).all()
    # --channel energy writes the energy channel itself, in K as stored (not divided by
    # the voxel volume): read back by ASE (cube) and GridDataFormats (dx)
    stored = shard[1].grid[1]
    for name in ("energy", "lj:Ar"):
        e_cube = tmp_path / f"e-{name.replace(':', '')}.cube"
        args = ["export", str(out), "--index", "1", "-o", str(e_cube), "--channel", name]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        back = read(e_cube, format="cube", read_data=True, full_output=True)["data"]
        assert_allclose(back, stored, rtol=1e-5, atol=1e-3)
    from gridData import Grid

    e_dx = tmp_path / "e.dx"
    args = ["export", str(out), "--index", "1", "-o", str(e_dx), "--channel", "energy"]
    assert CliRunner().invoke(app, args).exit_code == 0
    dx = Grid(str(e_dx))
    assert_allclose(dx.grid, stored, rtol=1e-5, atol=1e-3)
    assert dx.grid.max() > 100 and dx.grid.min() < 0  # the water's core and its well
    res = CliRunner().invoke(
        app, ["export", str(out), "-o", str(tmp_path / "CHGCAR"), "--channel", "energy"]
    )
    assert res.exit_code != 0 and "CHGCAR stores ρ·V of a density" in res.output


def test_shard_dataset_recipe_keeps_the_energy(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from pgrid_cli.torch import ShardDataset

    write(tmp_path / "nacl.cif", bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    args = ["grid", str(tmp_path / "nacl.cif"), "-o", str(tmp_path / "o"), "--grid-size", "8",
            "--energy", "lj", "--energy-transform", "boltzmann", "--temperature", "77"]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    recipe = ShardDataset(tmp_path / "o").recipe
    assert recipe.energy == EnergySpec(transform="boltzmann", temperature=77)
    assert recipe.channel_names[-1] == "lj:CH4" and "lj:CH4" not in recipe.spec.names


def test_invert_reads_the_density_channels_of_an_energy_shard(tmp_path: Path) -> None:
    water = molecule("H2O")
    write(tmp_path / "water.xyz", water)
    out = tmp_path / "o"
    grid = ["grid", str(tmp_path / "water.xyz"), "-o", str(out), "--energy", "lj"]
    assert CliRunner().invoke(app, grid).exit_code == 0
    res = CliRunner().invoke(app, ["invert", str(out), "-o", str(tmp_path / "inv.xyz")])
    assert res.exit_code == 0, res.output
    back = read(tmp_path / "inv.xyz")
    assert sorted(back.get_chemical_symbols()) == ["H", "H", "O"]
    order = np.argsort(back.numbers, kind="stable")
    ref = np.argsort(water.numbers, kind="stable")
    assert_allclose(back.positions[order][-1], water.positions[ref][-1], atol=1e-3)  # the O


def test_a_structure_without_energy_is_rejected_not_lost(tmp_path: Path) -> None:
    """An element beyond UFF's table (Og) is a rejection with its reason; the others of
    the task are written."""
    og = "2\n\nOg 0 0 0\nC 2 0 0\n"
    water = "3\n\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"
    (tmp_path / "two.xyz").write_text(og + water)
    out = tmp_path / "o"
    args = ["grid", str(tmp_path / "two.xyz"), "-o", str(out), "--grid-size", "8"]
    args += ["--energy", "lj"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert len(Shard(out / "shard-00000.h5")) == 1
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and "no UFF parameters" in errors[0]["reason"]


def test_cli_rejects_bad_energy_options(tmp_path: Path) -> None:
    write(tmp_path / "nacl.cif", bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    res = CliRunner().invoke(
        app, ["grid", str(tmp_path / "nacl.cif"), "-o", str(tmp_path / "o"), "--energy", "lj",
              "--energy-transform", "log"],
    )  # fmt: skip
    assert res.exit_code != 0
    assert "--energy-transform must be one of none, boltzmann" in res.output


def test_datasets_append_the_energy_channel_per_item() -> None:
    """StructureDataset grids the energy channel too, at each (rotated, translated) item's
    voxel centres: a rotated crystal's cube view and a molecule, against the brute force."""
    pytest.importorskip("torch")
    from pgrid_cli.torch import StructureDataset

    nacl = structure_of(bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    water = structure_of(molecule("H2O"))
    spec = EnergySpec(cutoff=8.0, max_energy=5e3)
    recipe = GridRecipe(8, 0.5, "elements", crystal_view="cube:6", energy=spec)
    ds = StructureDataset.from_structures([nacl, water], recipe, rotate=True, translate=0.5, seed=4)
    for k, s in enumerate((nacl, water)):
        item = ds[k]
        g = item["grid"].numpy()
        assert g.shape == (recipe.n_channels + 1, 8, 8, 8)
        box = Box(item["origin"].numpy(), item["axes"].numpy(), (8, 8, 8), bool(item["periodic"]))
        rot = item["rotation"].numpy()
        assert not np.allclose(rot, np.eye(3))
        lat = None if s.lattice is None else s.lattice @ rot.T
        sig, eps = spec.mixed(s.numbers)
        pos = item["positions"].numpy()
        want = reference(centres(box), pos, sig, eps, lat, spec.cutoff, spec.max_energy)
        assert_allclose(g[-1].reshape(-1), want, rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="render='item'"):
        StructureDataset.from_structures([water], recipe, render="batch")
