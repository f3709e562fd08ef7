"""Crystal views (core/crystalview.py): the cube:L window of the infinite periodic density,
checked against the float64 reference with independently enumerated images, an exact
analytic sum, and through GridOptions and the command line."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from pgrid_cli import GridRecipe, Structure
from pgrid_cli.cli import app
from pgrid_cli.core.crystalview import cell_centre, cube_window, parse_crystal_view
from pgrid_cli.core.errors import ParameterError
from pgrid_cli.core.reference import CUTOFF_SIGMAS, reference_grid
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.store.shard import Shard

from .conftest import SAMPLE

CUBIC = np.eye(3) * 4.2
TRICLINIC = np.array([[5.0, 0.0, 0.0], [1.7, 4.4, 0.0], [-1.1, 0.8, 5.6]])


def _atoms(lattice: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frac = rng.random((5, 3)) * 1.4 - 0.2  # some atoms outside the cell: not wrapped
    return frac @ lattice, np.array([6, 8, 1, 6, 7])


def _brute_force_images(pos, chans, lattice, box, sigma, span=8):
    """Every image n in [-span, span]³ within CUTOFF_SIGMAS·σ (9σ) of the box per axis."""
    reach = CUTOFF_SIGMAS * sigma
    lo, hi = box.origin - reach, box.origin + np.diag(box.axes) + reach
    p, c = [], []
    for n in itertools.product(range(-span, span + 1), repeat=3):
        img = pos + np.asarray(n) @ lattice
        ok = np.all((img >= lo) & (img <= hi), axis=1)
        p.append(img[ok])
        c.append(chans[ok])
    return np.concatenate(p), np.concatenate(c)


@pytest.mark.parametrize("lattice", [CUBIC, TRICLINIC], ids=["cubic", "triclinic"])
@pytest.mark.parametrize("sigma", [0.4, 0.9])
def test_cube_view_matches_the_float64_reference(lattice, sigma, isa):
    pos, z = _atoms(lattice)
    recipe = GridRecipe(20, sigma, "C,H,N,O", crystal_view="cube:11")
    g = recipe.grid(pos, z, lattice=lattice, isa=isa)
    box = recipe.box_for(pos, lattice)
    assert not box.periodic and box.is_orthogonal and box.shape == (20, 20, 20)
    assert_allclose(box.origin + 5.5, cell_centre(lattice), atol=1e-12)
    p, c = _brute_force_images(pos, recipe.spec.assign(z), lattice, box, sigma)
    ref = reference_grid(p, box, sigma, c, recipe.n_channels)
    assert_allclose(g, ref, atol=1e-6, rtol=0)
    assert ref.max() > 0.01  # the cube holds real density


def test_a_whole_number_of_cells_holds_exactly_their_atoms():
    # ∫ of a periodic density over any axis-aligned box that spans whole periods along
    # every axis of a cubic lattice = atoms per cell × cells, wherever the box sits.
    pos, z = _atoms(CUBIC, seed=3)
    recipe = GridRecipe(48, 0.5, "single", crystal_view=f"cube:{6 * 4.2}")
    for centre in (None, np.array([0.3, -1.7, 2.2])):
        window = recipe.crystal_window(pos, CUBIC, centre)
        g = reference_grid(window.positions, window.box, 0.5)
        assert_allclose(g.sum(), len(pos) * 6**3, rtol=1e-9)
    g = recipe.grid(pos, z, lattice=CUBIC)
    assert_allclose(g.sum(dtype=np.float64), len(pos) * 6**3, rtol=1e-5)


def test_a_large_cube_holds_atoms_per_volume_times_its_volume():
    pos, z = _atoms(TRICLINIC, seed=5)
    side = 60.0
    recipe = GridRecipe(40, 0.6, "single", crystal_view=f"cube:{side}")
    g = recipe.grid(pos, z, lattice=TRICLINIC)
    expected = len(pos) / abs(np.linalg.det(TRICLINIC)) * side**3
    assert expected == pytest.approx(recipe.expected_sum(Structure(z, pos, TRICLINIC)))
    # The surface cuts cells: the error is of order (cell size / side) — 3 % is generous.
    assert g.sum(dtype=np.float64) == pytest.approx(expected, rel=0.03)


def test_every_cell_gets_the_same_shape_and_voxels():
    recipe = GridRecipe(16, 0.5, "elements", crystal_view="cube:12")
    lattices = [CUBIC, TRICLINIC, np.diag([2.5, 9.0, 3.1])]
    structures = [Structure(_atoms(lat)[1], _atoms(lat)[0], lat) for lat in lattices]
    grids = recipe.grid_structures(structures)
    assert grids.shape == (3, recipe.n_channels, 16, 16, 16)
    for s, g in zip(structures, grids, strict=True):
        _, box = recipe.prepare(s)
        assert_allclose(box.axes, np.eye(3) * 12)
        assert_allclose(g, recipe.grid(s.positions, s.numbers, lattice=s.lattice), atol=0)


def test_images_of_a_window_are_the_cells_atoms_moved_by_lattice_vectors():
    pos, _ = _atoms(TRICLINIC)
    w = cube_window(pos, TRICLINIC, 9.0, 8, 0.5)
    assert_allclose(w.positions, pos[w.index] + w.shifts @ TRICLINIC, atol=1e-12)
    assert len(np.unique(np.c_[w.index, w.shifts], axis=0)) == len(w.index)


def test_view_choices_and_errors():
    assert parse_crystal_view(" Cell ") == ("cell", 0.0)
    assert parse_crystal_view("cube:20") == ("cube", 20.0)
    for bad in ("cube", "cube:x", "cube:-2", "box"):
        with pytest.raises(ParameterError, match="crystal_view"):
            parse_crystal_view(bad)
    assert GridRecipe(crystal_view="cube:20.0").crystal_view == "cube:20"
    assert "crystal_view" not in GridRecipe().parameters()  # cell: run ids unchanged
    assert (
        GridOptions(grid_size=16, spacing=0.5, crystal_view="cube").resolve().recipe.crystal_view
        == "cube:8"
    )
    with pytest.raises(ParameterError, match="crystal_view cube needs spacing"):
        GridOptions(crystal_view="cube").resolve()
    with pytest.raises(ParameterError, match="spacing sets the cube"):
        GridOptions(spacing=0.5, crystal_view="cube:10").resolve()


def test_shards_record_the_view(tmp_path):
    inputs = [str(SAMPLE / "crystals" / n) for n in ("NaCl.cif", "Si.cif", "TiO2_rutile.cif")]
    opts = GridOptions(grid_size=24, sigma=0.5, spacing=0.5, crystal_view="cube", channels="auto")
    summary = grid_files(inputs, tmp_path / "out", opts, workers=0)
    assert summary.written == 3 and summary.low_capture == 0
    shard = Shard(tmp_path / "out" / "shard-00000.h5")
    assert shard.attrs["crystal_view"] == "cube:12" and shard.attrs["crystal_view_centre"] == "cell"
    for i in range(3):
        box = shard.box(i)
        assert not box.periodic
        assert_allclose(box.axes, np.eye(3) * 12)
        assert_allclose(shard.voxel_size(i), [0.5, 0.5, 0.5])
    # captured = Σ grid ÷ (Σ weights × cube volume ÷ cell volume): near 1, not exactly (a
    # 12 Å cube cuts cells of 4-6 Å), and never a low-capture warning
    cap = shard.file["captured"][:]
    assert np.all(np.abs(cap - 1) < 0.3)


def test_command_line_flag(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "grid",
            str(SAMPLE / "crystals" / "Si.cif"),
            "-o",
            str(out),
            "--grid-size",
            "16",
            "--crystal-view",
            "cube:10",
            "--workers",
            "0",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert Shard(out / "shard-00000.h5").attrs["crystal_view"] == "cube:10"
    res = CliRunner().invoke(
        app, ["grid", str(SAMPLE / "crystals" / "Si.cif"), "-o", str(out), "--crystal-view", "cube"]
    )
    assert res.exit_code == 2 and "--crystal-view cube needs --spacing" in res.output
