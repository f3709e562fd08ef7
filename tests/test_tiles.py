"""Tiles (core/tiles.py): focus regions partition the parent grid exactly, and each
tile's context is the true density around it — the periodic wrap of a crystal's cell,
the infinite crystal of a cube view, the empty space (and the molecule's own density)
around a molecule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose

from pgrid_cli import GridRecipe, Structure
from pgrid_cli.core.box import Box
from pgrid_cli.core.errors import ParameterError
from pgrid_cli.core.kernel import grid
from pgrid_cli.core.reference import reference_grid
from pgrid_cli.core.tiles import assemble, grid_tiles, plan_tiles

ORTHO = np.diag([6.0, 7.0, 8.0])
TRICLINIC = np.array([[5.0, 0.0, 0.0], [1.7, 4.4, 0.0], [-1.1, 0.8, 5.6]])
RECIPE = GridRecipe(8, 0.5, "C,H,N,O")


def _crystal(lattice, seed=0) -> Structure:
    rng = np.random.default_rng(seed)
    return Structure(np.array([6, 8, 1, 6, 7, 8]), rng.random((6, 3)) @ lattice, lattice)


def _wrapped(parent: np.ndarray, ranges) -> np.ndarray:
    out = parent
    for axis, r in enumerate(ranges):
        out = np.take(out, r, axis=axis + 1, mode="wrap")
    return out


def _window_ranges(plan, index):
    n, m = plan.tile, plan.context
    return [np.arange(i * n - m, (i + 1) * n + m) for i in index]


@pytest.mark.parametrize("lattice", [ORTHO, TRICLINIC], ids=["orthorhombic", "triclinic"])
def test_cell_tiles_partition_the_cell_and_wrap_around(lattice):
    s = _crystal(lattice)
    plan, tiles, grids = grid_tiles(RECIPE, s, 0.4, 6, 3)
    shape = plan.parent.shape
    assert all(n % 6 == 0 for n in shape) and plan.parent.periodic
    assert np.all(plan.parent.lengths / shape <= 0.4 + 1e-12)  # voxel edge at most H
    assert grids.shape == (plan.n_tiles, 4, 12, 12, 12) and len(tiles) == plan.n_tiles
    parent = grid(
        s.positions, plan.parent, 0.5, channels=RECIPE.spec.assign(s.numbers), n_channels=4
    )
    # The focus parts reproduce the parent grid (the same kernel, two paths: 1e-6).
    assert_allclose(assemble(plan, grids), parent, atol=1e-6, rtol=0)
    # Every focus voxel is in exactly one tile.
    seen = np.zeros(shape, dtype=int)
    for t in tiles:
        (x0, x1), (y0, y1), (z0, z1) = t.focus
        seen[x0:x1, y0:y1, z0:z1] += 1
    assert np.all(seen == 1)
    # Focus and context equal the parent's voxels, wrapped periodically at the cell's edges.
    for t, g in zip(tiles, grids, strict=True):
        assert_allclose(g, _wrapped(parent, _window_ranges(plan, t.index)), atol=1e-6, rtol=0)
    assert parent.sum() == pytest.approx(len(s), rel=1e-5)


def test_cube_view_tiles_see_the_infinite_crystal():
    s = _crystal(TRICLINIC, seed=4)
    recipe = GridRecipe(8, 0.5, "C,H,N,O", crystal_view="cube:9")
    plan, tiles, grids = grid_tiles(recipe, s, 0.5, 5, 2)
    # 9 Å at 0.5 Å is 18 voxels: rounded up to 20 (a multiple of 5), the cube grows to 10 Å.
    assert plan.parent.shape == (20, 20, 20) and not plan.parent.periodic
    assert_allclose(plan.parent.axes, np.eye(3) * 10.0)
    assert_allclose(plan.parent.center, 0.5 * TRICLINIC.sum(axis=0))
    # Independent truth: a larger cube (parent + context on every side) of the crystal.
    big = GridRecipe(24, 0.5, "C,H,N,O", crystal_view="cube:12")
    whole = big.grid(s.positions, s.numbers, lattice=s.lattice)
    assert_allclose(big.box_for(s.positions, s.lattice).origin, plan.parent.origin - 1.0)
    for t, g in zip(tiles, grids, strict=True):
        sl = tuple(slice(i * 5, i * 5 + 9) for i in t.index)
        assert_allclose(g, whole[(slice(None), *sl)], atol=1e-6, rtol=0)


def test_molecule_tiles_context_is_the_empty_space_around():
    rng = np.random.default_rng(2)
    mol = Structure(np.array([6, 6, 8, 1, 1, 7]), rng.random((6, 3)) * [9.0, 4.0, 6.0])
    plan, tiles, grids = grid_tiles(RECIPE, mol, 0.5, 8, 4)
    lo, hi = mol.positions.min(0), mol.positions.max(0)
    assert np.all(plan.parent.lengths >= hi - lo + 4.0) and not plan.parent.periodic
    assert all(n % 8 == 0 for n in plan.parent.shape)
    assert_allclose(plan.parent.voxel_axes, np.eye(3) * 0.5)
    # Truth: the float64 reference on the parent box grown by the context on every side.
    grown = Box(
        plan.parent.origin - 4 * 0.5,
        plan.parent.axes + np.eye(3) * 8 * 0.5,
        tuple(n + 8 for n in plan.parent.shape),
    )
    ref = reference_grid(mol.positions, grown, 0.5, RECIPE.spec.assign(mol.numbers), 4)
    for t, g in zip(tiles, grids, strict=True):
        sl = tuple(slice(i * 8, i * 8 + 16) for i in t.index)
        assert_allclose(g, ref[(slice(None), *sl)], atol=1e-6, rtol=0)
    # Per-tile sums of the focus add up to the parent's (an extensive property): nearly
    # every atom (2 Å = 4σ of padding leaves ~3e-5 of an atom outside).
    focus = grids[:, :, 4:12, 4:12, 4:12].sum(axis=(1, 2, 3, 4), dtype=np.float64)
    assert focus.sum() == pytest.approx(ref[:, 4:-4, 4:-4, 4:-4].sum(), rel=1e-6)
    assert focus.sum() == pytest.approx(len(mol), rel=1e-4)


def test_tile_indices_focus_and_boxes():
    plan = plan_tiles(_crystal(ORTHO), 0.5, 4, 1)
    assert plan.counts == (3, 4, 4) and plan.tile_shape == (6, 6, 6)
    assert plan.indices()[:2] == [(0, 0, 0), (0, 0, 1)]
    assert plan.focus((2, 1, 3)) == ((8, 12), (4, 8), (12, 16))
    box = plan.tile_box((0, 0, 0))
    assert_allclose(box.origin, -plan.parent.voxel_axes.sum(axis=0))
    assert list(itertools.chain(*plan.focus((2, 3, 3)))) == [8, 12, 12, 16, 12, 16]


def test_bad_tiles():
    for tile, context in ((0, 1), (4, -1), (2.5, 1)):
        with pytest.raises(ParameterError, match="tiles"):
            plan_tiles(_crystal(ORTHO), 0.5, tile, context)
    with pytest.raises(ParameterError, match="spacing"):
        plan_tiles(_crystal(ORTHO), 0.0, 4, 1)
