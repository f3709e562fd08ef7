"""Box: the docs/format.md §4 constructors, validation and conversions."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from pgrid_cli import Box

from .conftest import triclinic_lattice

POS = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [1.0, 3.0, 1.0]])


def test_fit_is_a_cube_around_the_bounding_box_centre():
    box = Box.fit(POS, shape=32, padding=2.0)
    side = (POS.max(0) - POS.min(0)).max() + 2 * 2.0  # largest extent + 2 * padding
    assert_allclose(box.axes, np.eye(3) * side)
    assert_allclose(box.center, (POS.max(0) + POS.min(0)) / 2)
    assert box.shape == (32, 32, 32) and not box.periodic and box.is_orthogonal
    assert_allclose(box.voxel_volume, side**3 / 32**3)


def test_tight_is_per_axis():
    box = Box.tight(POS, shape=(10, 20, 30), padding=1.5)
    assert_allclose(np.diag(box.axes), POS.max(0) - POS.min(0) + 3.0)
    assert_allclose(box.origin, POS.min(0) - 1.5)
    assert box.shape == (10, 20, 30)


def test_cube_has_fixed_side_and_for_molecule_parses_options():
    box = Box.for_molecule("cube:24", POS, shape=48)
    assert_allclose(box.axes, np.eye(3) * 24.0)
    assert_allclose(box.center, (POS.max(0) + POS.min(0)) / 2)
    assert Box.for_molecule("fit", POS) == Box.fit(POS)
    assert Box.for_molecule("TIGHT", POS, 16, 1.0) == Box.tight(POS, 16, 1.0)
    for bad in ("cube", "cube:", "cube:-3", "cube:abc", "ball"):
        with pytest.raises(ValueError, match=r"cube|unknown box"):
            Box.for_molecule(bad, POS)


def test_lattice_box_and_fractional_round_trip():
    lat = triclinic_lattice()
    box = Box.from_lattice(lat, shape=(10, 11, 12))
    assert box.periodic and not box.is_orthogonal
    assert_allclose(box.volume, abs(np.linalg.det(lat)))
    frac = np.random.default_rng(0).uniform(size=(5, 3))
    assert_allclose(box.fractional(box.cartesian(frac)), frac, atol=1e-12)
    assert_allclose(box.voxel_axes, lat / np.array([[10], [11], [12]]))
    centres = box.voxel_centers()
    assert centres.shape == (10, 11, 12, 3)
    assert_allclose(box.fractional(centres[0, 0, 0]), [[0.05, 0.5 / 11, 0.5 / 12]])


def test_contains_measures_distance_to_each_face():
    lat = triclinic_lattice(5, 5, 5, 60, 60, 60)
    box = Box.from_lattice(lat, 8)
    heights = 1.0 / np.linalg.norm(np.linalg.inv(lat), axis=0)  # face spacing per axis
    centre = box.center[None]
    assert box.contains(centre, margin=0.49 * heights.min())[0]
    assert not box.contains(centre, margin=0.51 * heights.min())[0]


def test_value_semantics_and_dict_round_trip():
    box = Box.fit(POS, shape=(8, 9, 10))
    same = Box.from_dict(box.to_dict())
    assert same == box and hash(same) == hash(box)
    assert box != box.with_shape(8)
    with pytest.raises(ValueError):
        box.origin[0] = 1.0  # read-only arrays: a Box is a value
    assert "Box(origin=" in repr(box)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"origin": (0, 0), "axes": np.eye(3), "shape": 4}, "origin must have 3"),
        ({"origin": (0, 0, 0), "axes": np.eye(2), "shape": 4}, "axes must be a 3x3"),
        (
            {"origin": (0, 0, 0), "axes": [[1, 0, 0], [2, 0, 0], [0, 0, 1]], "shape": 4},
            "degenerate",
        ),
        ({"origin": (0, 0, np.nan), "axes": np.eye(3), "shape": 4}, "finite"),
        ({"origin": (0, 0, 0), "axes": np.eye(3), "shape": 0}, "positive"),
        ({"origin": (0, 0, 0), "axes": np.eye(3), "shape": (4, 4)}, "three ints"),
        ({"origin": (0, 0, 0), "axes": np.eye(3), "shape": (4, 4.5, 4)}, "three ints"),
    ],
)
def test_invalid_boxes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Box(**kwargs)


def test_molecule_boxes_need_atoms_and_sane_options():
    with pytest.raises(ValueError, match="no atoms"):
        Box.fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        Box.fit(np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="padding"):
        Box.fit(POS, padding=-1.0)
    with pytest.raises(ValueError, match="zero padding"):
        Box.tight(np.zeros((1, 3)), padding=0.0)
    assert Box.fit(np.zeros((1, 3)), padding=1.0).lengths.tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("seed", range(5))
def test_fit_and_cube_are_bitwise_the_numpy_formula(seed):
    # Box.fit and Box.cube compute in Python floats from one native bounds pass; the
    # values must be exactly those of the array formula (the native per-call path and
    # the stored box of every shard depend on it).
    rng = np.random.default_rng(seed)
    pos = rng.normal(scale=10.0 ** rng.integers(-3, 4), size=(rng.integers(1, 60), 3))
    lo, hi = pos.min(0), pos.max(0)
    side = float(np.max(hi - lo)) + 2.0 * 1.7
    box = Box.fit(pos, 16, padding=1.7)
    assert np.array_equal(box.origin, (lo + hi) / 2.0 - side / 2.0)
    assert np.array_equal(box.axes, np.eye(3) * side)
    cube = Box.cube(pos, 23.5, 16)
    assert np.array_equal(cube.origin, (lo + hi) / 2.0 - 23.5 / 2.0)
    assert np.array_equal(cube.axes, np.eye(3) * 23.5)
    # non-contiguous and integer inputs are converted like any positions
    assert Box.fit(np.asfortranarray(pos), 16, padding=1.7) == box
    assert Box.fit(np.round(pos).astype(np.int64), 16) == Box.fit(np.round(pos), 16)


def test_fit_rejects_infinite_and_misshapen_positions():
    with pytest.raises(ValueError, match="NaN or infinite"):
        Box.fit(np.array([[0.0, 0.0, 0.0], [np.inf, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        Box.cube(np.array([[-np.inf, 0.0, 0.0]]), 10.0)
    with pytest.raises(ValueError, match=r"shape \(M, 3\)"):
        Box.fit(np.zeros((4, 2)))
