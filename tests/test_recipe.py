"""GridRecipe's native per-call path (_core.grid_structures) against the Python path it
replaces: the same boxes bit for bit, the same grids bit for bit, the same errors."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from pgrid_cli import Box, GridRecipe, UnknownElementError, _core, render_batch
from pgrid_cli.core.recipe import OutsideBoxError
from pgrid_cli.core.structure import Structure

from .conftest import triclinic_lattice

BOXES = ["fit", "tight", "cube:14", "cube:7.5"]


def _molecule(rng, m=17, spread=2.0):
    pos = rng.normal(size=(m, 3)) * spread + rng.uniform(-50, 50, 3)
    return pos, rng.choice([1, 6, 7, 8, 16], m)


def _python_grids(recipe, structures, isa=None, threads=None):
    """The Python path: prepare() (Box.fit / tight / cube / from_lattice), batch(), render."""
    return render_batch(recipe.batch(structures), threads=threads, isa=isa)


@pytest.mark.parametrize("box", BOXES)
@pytest.mark.parametrize("padding", [0.0, 1.7, 2.0])
def test_native_boxes_are_the_python_boxes_bitwise(box, padding):
    rng = np.random.default_rng(len(box) + int(10 * padding))
    recipe = GridRecipe(grid_size=(6, 7, 8), channels="elements", box=box, padding=padding)
    mols = [_molecule(rng, m=int(rng.integers(2, 30))) for _ in range(8)]
    pos = np.concatenate([p for p, _ in mols])
    z = np.concatenate([n for _, n in mols])
    offsets = np.zeros(len(mols) + 1, np.int64)
    np.cumsum([len(n) for _, n in mols], out=offsets[1:])
    out = np.empty((len(mols), recipe.n_channels, 6, 7, 8), np.float32)
    origins = np.empty((len(mols), 3))
    axes = np.empty((len(mols), 3, 3))
    _core.grid_structures(
        pos, z, offsets, None, None, None, recipe._element_channel, recipe.sigma,
        recipe._box_code, recipe.padding, recipe._cube_side, -1.0, out, origins, axes,
    )  # fmt: skip
    for s, (p, _) in enumerate(mols):
        want = Box.for_molecule(recipe.box, p, recipe.shape, recipe.padding)
        assert_array_equal(origins[s], want.origin)
        assert_array_equal(axes[s], want.axes)
        assert origins[s].tobytes() == want.origin.tobytes()


def _structures(rng):
    out = []
    for k in range(6):
        pos, z = _molecule(rng, m=int(rng.integers(1, 25)))
        w = rng.uniform(0.2, 2.0, len(z)) if k % 3 == 1 else None
        out.append(Structure(z, pos, None, w))
    lattice = triclinic_lattice()
    pos = rng.uniform(0, 1, (9, 3)) @ lattice
    out.append(Structure(rng.choice([6, 8], 9), pos, lattice))
    cell = np.diag([5.0, 6.0, 7.0])
    out.append(Structure(np.array([6, 1, 1]), rng.uniform(0, 5, (3, 3)), cell))
    return out


@pytest.mark.parametrize("box", BOXES[:3])
def test_recipe_grids_match_the_python_path_bitwise(isa, box):
    rng = np.random.default_rng(7)
    recipe = GridRecipe(grid_size=(10, 11, 12), channels="C,H,O,*", box=box, sigma=0.6)
    structures = [s for s in _structures(rng) if box[:4] != "cube" or s.lattice is not None]
    structures = structures or _structures(rng)[-2:]
    want = _python_grids(recipe, structures, isa=isa, threads=1)
    for threads in (1, 2, None):
        got = recipe.grid_structures(structures, threads=threads, isa=isa)
        bad = [s for s in range(len(got)) if got[s].tobytes() != want[s].tobytes()]
        assert not bad, (threads, bad, [float(np.abs(got[s] - want[s]).max()) for s in bad])
    # One call per structure (the per-call path) equals its row of the batch.
    for s, st in enumerate(structures):
        one = recipe.grid(st.positions, st.numbers, lattice=st.lattice, weights=st.weights, isa=isa)
        assert one.tobytes() == want[s].tobytes()
        out = np.full(want.shape[1:], np.nan, np.float32)
        got = recipe.grid(
            st.positions, st.numbers, lattice=st.lattice, weights=st.weights, out=out, isa=isa
        )
        assert np.shares_memory(got, out)
        assert out.tobytes() == want[s].tobytes()


def test_recipe_cube_matches_python_path(isa):
    rng = np.random.default_rng(3)
    recipe = GridRecipe(grid_size=9, channels="single", box="cube:12")
    pos, z = _molecule(rng, m=12, spread=1.5)
    want = _python_grids(recipe, [Structure(z, pos)], isa=isa)[0]
    assert recipe.grid(pos, z, isa=isa).tobytes() == want.tobytes()
    assert recipe.grid(pos, z.astype(np.int32), isa=isa).tobytes() == want.tobytes()
    assert recipe.grid(pos.tolist(), z.tolist(), isa=isa).tobytes() == want.tobytes()


def test_recipe_errors_are_the_python_paths():
    recipe = GridRecipe(grid_size=6, channels="C,H")
    with pytest.raises(UnknownElementError, match="element O has no channel"):
        recipe.grid(np.zeros((2, 3)), [6, 8])
    with pytest.raises(ValueError, match="cannot place a box around a structure with no atoms"):
        recipe.grid(np.zeros((0, 3)), [])
    with pytest.raises(ValueError, match="positions contain NaN or infinite coordinates"):
        recipe.grid(np.array([[0.0, np.nan, 0.0]]), [6])
    with pytest.raises(ValueError, match="degenerate"):
        GridRecipe(grid_size=6, channels="C", padding=0.0).grid(np.zeros((1, 3)), [6])
    with pytest.raises(ValueError, match="tight box with zero padding"):
        GridRecipe(grid_size=6, channels="C", box="tight", padding=0.0).grid(
            np.array([[0.0, 0, 0], [1, 1, 0]]), [6, 6]
        )
    cube = GridRecipe(grid_size=6, channels="C", box="cube:4")
    with pytest.raises(OutsideBoxError, match="outside the 4 Å cube"):
        cube.grid(np.array([[0.0, 0, 0], [9.0, 0, 0]]), [6, 6])
    with pytest.raises(ValueError, match="threads must be between 1 and"):
        recipe.grid(np.zeros((1, 3)), [6], threads=-1)
    with pytest.raises(ValueError, match="out has shape"):
        recipe.grid(np.zeros((1, 3)), [6], out=np.zeros((3, 6, 6, 6), np.float32))


def test_recipe_memory_cap(monkeypatch):
    monkeypatch.setenv("PGRID_MAX_GRID_BYTES", "1000")
    with pytest.raises(ValueError, match="more than the"):
        GridRecipe(grid_size=16, channels="C").grid(np.zeros((1, 3)), [6])
