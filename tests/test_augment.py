"""Crystal augmentation (torch/augment.py, StructureDataset): rotations of a cube:L view
(lattice and atoms turn, the cube stays axis-aligned) and lattice translations, against
the float64 reference, an analytic sum and periodicity; seeded like the molecules'."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.spatial.transform import Rotation

from pgrid_cli import GridRecipe, Structure
from pgrid_cli.core.box import Box
from pgrid_cli.core.kernel import grid
from pgrid_cli.core.reference import CUTOFF_SIGMAS, reference_grid
from pgrid_cli.torch import Augmentation, StructureDataset, Transform

TRICLINIC = np.array([[5.0, 0.0, 0.0], [1.7, 4.4, 0.0], [-1.1, 0.8, 5.6]])
CUBIC = np.eye(3) * 4.0


def _crystal(lattice, seed=0, name="x") -> Structure:
    rng = np.random.default_rng(seed)
    return Structure(np.array([6, 8, 1, 7]), rng.random((4, 3)) @ lattice, lattice, name=name)


def _dataset(structures, view="cube:10", grid_size=20, sigma=0.5, **kw) -> StructureDataset:
    recipe = GridRecipe(grid_size, sigma, "C,H,N,O", crystal_view=view)
    return StructureDataset.from_structures(structures, recipe, **kw)


def _reference(positions, lattice, box, chans, sigma, n_channels, span=7):
    """Float64 grid of the crystal on ``box``, its images enumerated by brute force."""
    reach = CUTOFF_SIGMAS * sigma
    lo, hi = box.origin - reach, box.origin + np.diag(box.axes) + reach
    p, c = [], []
    for n in itertools.product(range(-span, span + 1), repeat=3):
        img = positions + np.asarray(n) @ lattice
        ok = np.all((img >= lo) & (img <= hi), axis=1)
        p.append(img[ok])
        c.append(chans[ok])
    return reference_grid(np.concatenate(p), box, sigma, np.concatenate(c), n_channels)


def test_a_rotated_window_is_the_rotated_crystal_seen_through_an_axis_aligned_cube():
    s = _crystal(TRICLINIC)
    ds = _dataset([s], rotate=True, shift_lattice=True, seed=3)
    item = ds[0]
    R, shift = item["rotation"].numpy(), item["shift"].numpy()
    assert not np.allclose(R, np.eye(3)) and np.all((shift >= 0) & (shift < 1))
    assert_allclose(item["axes"].numpy(), np.eye(3) * 10)  # the cube stays axis-aligned
    assert item["periodic"] is False
    # The cube stays centred on the (unrotated) cell centre.
    centre = 0.5 * TRICLINIC.sum(axis=0)
    assert_allclose(item["origin"].numpy() + 5.0, centre, atol=1e-12)
    # Independent truth: rotate lattice and atoms about the centre, add the lattice shift.
    lattice = TRICLINIC @ R.T
    positions = (s.positions - centre) @ R.T + centre + shift @ lattice
    assert_allclose(item["positions"].numpy(), positions, atol=1e-12)
    box = Box(item["origin"].numpy(), item["axes"].numpy(), 20)
    ref = _reference(positions, lattice, box, ds.recipe.spec.assign(s.numbers), 0.5, 4)
    assert_allclose(item["grid"].numpy(), ref, atol=1e-6, rtol=0)


def test_a_whole_lattice_vector_changes_nothing():
    s = _crystal(TRICLINIC, seed=1)
    ds = _dataset([s])
    R = Rotation.from_euler("zyx", [40, -25, 70], degrees=True).as_matrix()
    centre = 0.5 * TRICLINIC.sum(axis=0)
    base = ds._item(0, Transform(R, np.zeros(3), centre, np.array([0.3, 0.6, 0.1])))
    for n in ([1, 0, 0], [0, -2, 1], [3, 1, -1]):
        moved = Transform(R, np.zeros(3), centre, np.array([0.3, 0.6, 0.1]) + n)
        assert_allclose(ds._item(0, moved)["grid"].numpy(), base["grid"].numpy(), atol=1e-6)
    # ... while a fraction of one moves the density.
    half = ds._item(0, Transform(R, np.zeros(3), centre, np.array([0.8, 0.6, 0.1])))
    assert not np.allclose(half["grid"].numpy(), base["grid"].numpy(), atol=1e-3)


def test_rotations_keep_the_sum_of_a_large_cube():
    s = _crystal(CUBIC, seed=2)
    side = 48.0
    ds = _dataset([s], view=f"cube:{side}", grid_size=32, sigma=0.6, rotate=True, seed=9)
    expected = len(s) * side**3 / 4.0**3  # atoms per volume × cube volume
    sums = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        item = ds[0]
        assert not np.allclose(item["rotation"].numpy(), np.eye(3))
        sums.append(item["grid"].numpy().sum(dtype=np.float64))
    # A cube of 12 cells cut at a random angle: the surface changes the sum by ~1/12 of
    # a cell layer's share at most.
    assert_allclose(sums, expected, rtol=0.02)


def test_seeded_deterministically():
    structures = [_crystal(TRICLINIC, k, f"c{k}") for k in range(3)]
    kw = dict(rotate=True, translate=0.5, shift_lattice=True)
    a, b = _dataset(structures, seed=11, **kw), _dataset(structures, seed=11, **kw)
    c = _dataset(structures, seed=12, **kw)
    for i in range(3):
        for key in ("grid", "rotation", "translation", "shift"):
            assert_array_equal(a[i][key].numpy(), b[i][key].numpy())
        assert not np.allclose(a[i]["shift"].numpy(), c[i]["shift"].numpy())
    a.set_epoch(1)
    assert not np.allclose(a[0]["shift"].numpy(), b[0]["shift"].numpy())
    # The shift is drawn after the rotation and translation: turning it on leaves them.
    plain = _dataset(structures, seed=11, rotate=True, translate=0.5)
    assert_array_equal(plain[0]["rotation"].numpy(), b[0]["rotation"].numpy())
    assert_array_equal(plain[0]["shift"].numpy(), np.zeros(3))


def test_unit_cells_are_shifted_not_rotated_and_molecules_not_shifted():
    s = _crystal(TRICLINIC)
    ds = _dataset([s], view="cell", grid_size=16, rotate=True, shift_lattice=True, seed=4)
    item = ds[0]
    assert_array_equal(item["rotation"].numpy(), np.eye(3))
    moved = s.positions + item["shift"].numpy() @ TRICLINIC
    assert_allclose(item["positions"].numpy(), moved, atol=1e-12)
    box = Box.from_lattice(TRICLINIC, 16)
    expected = grid(moved, box, 0.5, channels=ds.recipe.spec.assign(s.numbers), n_channels=4)
    assert_array_equal(item["grid"].numpy(), expected)
    mol = Structure(np.array([6, 8]), np.array([[0.0, 0, 0], [1.2, 0, 0]]), name="co")
    m = _dataset([mol], shift_lattice=True, seed=4)[0]
    assert_array_equal(m["shift"].numpy(), np.zeros(3))
    assert Augmentation(shift_lattice=True, seed=1).active


def test_cube_views_of_crystals_grid_per_item():
    with pytest.raises(ValueError, match="render='item'"):
        _dataset([_crystal(CUBIC)], render="batch")
    _dataset([_crystal(CUBIC)], view="cell", render="batch")  # unit cells batch as before


def test_draws_are_a_function_of_seed_epoch_and_index_only():
    from pgrid_cli.torch.augment import uniforms

    batch = uniforms(7, 2, np.arange(50))
    alone = np.vstack([uniforms(7, 2, [i]) for i in np.arange(50)[::-1]])[::-1]
    np.testing.assert_array_equal(batch, alone)  # any batch, any order, any worker
    assert not np.array_equal(uniforms(7, 3, [0]), uniforms(7, 2, [0]))  # epochs differ
    assert not np.array_equal(uniforms(8, 2, [0]), uniforms(7, 2, [0]))  # seeds differ
    assert not np.array_equal(uniforms(2**70 + 7, 2, [0]), uniforms(7, 2, [0]))  # 128-bit
    assert ((batch >= 0) & (batch < 1)).all()


def test_rotations_are_proper_and_uniform_over_so3():
    from pgrid_cli.torch.augment import rotations_from, uniforms

    r = rotations_from(uniforms(1, 0, np.arange(40_000))[:, :3])
    np.testing.assert_allclose(
        np.einsum("bij,bkj->bik", r, r), np.broadcast_to(np.eye(3), r.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    # Haar measure: E[R] = 0 and E[R_ij^2] = 1/3 (standard error ~0.003 at 40,000 draws)
    np.testing.assert_allclose(r.mean(axis=0), 0.0, atol=0.015)
    np.testing.assert_allclose((r**2).mean(axis=0), 1.0 / 3.0, atol=0.015)
    # the rotated x axis is uniform on the sphere: its z component is uniform in [-1, 1]
    hist, _ = np.histogram(r[:, 2, 0], bins=10, range=(-1, 1))
    np.testing.assert_allclose(hist / len(r), 0.1, atol=0.01)
