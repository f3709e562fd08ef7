"""The native kernel at the edges of its input domain: far-away and far-wrapped atoms,
degenerate widths, weights at the float32 limit, garbage integers and codec inputs.

Every case here was a hang, a silent wrong answer or an unhelpful error once; each test
checks either an independent truth (the float64 reference, an analytic sum, the same
atom one lattice vector away) or a ValueError that names the argument at fault.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from pgrid_cli import Box, _core, grid, grid_gradient
from pgrid_cli.core.reference import reference_grid

from .test_kernel import _args  # the native boundary's valid call, to corrupt

ABS_TOL = 1e-6  # SPEC §3: orthogonal boxes
TRIC_REL = 1e-4  # SPEC §3: triclinic cells, relative to the grid maximum
SKEWED = np.array([[5.0, 0, 0], [2.5, 4.33, 0], [0, 0, 5.0]])  # the audit's triclinic cell


def _run(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter: a native hang cannot be interrupted in-process."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---------------------------------------------------------------------- far-away atoms
def test_far_atom_outside_open_triclinic_box_is_fast_and_contributes_nothing():
    """An int32 slab index overflowed to INT_MIN: grid_gradient looped ~2^31 times."""
    done = _run(
        """
        import time
        import numpy as np
        from pgrid_cli import Box, grid, grid_gradient
        b = Box(np.zeros(3), [[5, 0, 0], [2.5, 4.33, 0], [0, 0, 5]], 8)
        t = time.perf_counter()
        for far in ([1, -1e10, 1], [1, 1e10, 1], [1e10, 1, 1], [-1e10, 1, 1],
                    [1, 1, 1e12], [1, 1, -1e12], [1e300, -1e300, 1], [1e300, 1e300, 1e300]):
            for isa in ("scalar", None):
                g = grid_gradient([far], b, .5, np.ones((1, 8, 8, 8), np.float32), isa=isa)
                assert np.array_equal(g, np.zeros((1, 3))), (far, g)
                assert not grid([far], b, .5, isa=isa).any(), far
        print(time.perf_counter() - t)
        """
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 20
    box = Box(np.zeros(3), SKEWED, 8)
    with pytest.raises(ValueError, match=r"atom 0: position \(3e\+300, .* more than 1e\+300 A"):
        grid([[3e300, -3e300, 1]], box, 0.5)  # beyond the documented domain (kMaxDistance)


def test_huge_sigma_in_an_open_triclinic_box():
    """Row and slab ranges of a huge truncation radius are clamped in double (the int
    conversions used to overflow); sigma above the documented 1e100 Å is rejected."""
    done = _run(
        """
        import numpy as np
        from pgrid_cli import Box, grid, grid_gradient
        b = Box(np.zeros(3), [[5, 0, 0], [2.5, 4.33, 0], [0, 0, 5]], 6)
        for s in (1e12, 1e50, 1e100):
            for far in ([1, 2, 3], [1e11, -1e11, 3], [1e300, 0, 0]):
                g = grid([far], b, s)
                assert np.isfinite(g).all() and abs(g.sum()) < 1e-30, g.sum()
                d = grid_gradient([far], b, s, np.ones((1, 6, 6, 6), np.float32))
                assert np.isfinite(d).all() and abs(d).max() < 1e-30
        """
    )
    assert done.returncode == 0, done.stderr
    box = Box(np.zeros(3), SKEWED, 6)
    with pytest.raises(ValueError, match=r"sigma = 1e\+101 A is above the widest supported"):
        grid([[1, 2, 3]], box, 1e101)


# ---------------------------------------------------------------------- far-wrapped atoms
@pytest.mark.parametrize(
    "shift",
    [(2**37, 0, 0), (0, -(2**37), 0), (0, 0, 1.25e11), (-(2**30), 2**33, -(2**36)), (1e6, 3, -7)],
)
def test_periodic_orthogonal_far_image_equals_home(isa, shift):
    """A coordinate of 1e12 Å used to put the atom on the wrong voxel (int32 overflow)."""
    lat = np.diag([8.0, 6.0, 4.0])
    box = Box.from_lattice(lat, (16, 12, 10))
    home = np.array([[1.25, 2.5, 3.75], [7.5, 0.125, 0.5]])
    far = home + np.asarray(shift, dtype=np.float64) @ lat  # exact in double
    assert_array_equal(far - np.asarray(shift, dtype=np.float64) @ lat, home)
    ref = reference_grid(home, box, 0.6)
    got = grid(far, box, 0.6, isa=isa)
    assert_allclose(got, ref, atol=ABS_TOL, rtol=0)
    assert_allclose(got, grid(home, box, 0.6, isa=isa), atol=ABS_TOL, rtol=0)


def test_periodic_rotated_orthogonal_far_image_equals_home(isa):
    """Rotated cells: the shift is exact in double; the projection costs ~1e-16 relative."""
    c, s = np.cos(0.3), np.sin(0.3)
    lat = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1.0]]) * np.array([[6.0], [7.0], [5.0]])
    box = Box.from_lattice(lat, (12, 14, 10))
    assert box.is_orthogonal
    home = np.array([[0.3, 0.4, 0.5]]) @ lat
    far = home + np.array([[1e6, -3e6, 2e6]]) @ lat
    got = grid(far, box, 0.6, isa=isa)
    assert_allclose(got, reference_grid(home, box, 0.6), atol=ABS_TOL, rtol=0)


@pytest.mark.parametrize(
    "shift", [(2**28, 0, 0), (0, -(2**30), 0), (3, -(2**27), 2**29), (1e9, 0, 0)]
)
def test_periodic_triclinic_far_image_equals_home(isa, shift):
    """A coordinate of ~1e9 Å used to make the atom vanish."""
    box = Box.from_lattice(SKEWED, 10)
    assert not box.is_orthogonal
    home = np.array([[1.25, 2.5, 1.75], [4.0, 0.5, 3.0]])
    far = home + np.asarray(shift, dtype=np.float64) @ SKEWED
    assert_array_equal(far - np.asarray(shift, dtype=np.float64) @ SKEWED, home)
    want = grid(home, box, 0.5, isa=isa)
    got = grid(far, box, 0.5, isa=isa)
    assert_allclose(got.sum(dtype=np.float64), 2.0, rtol=1e-5)
    assert_allclose(got, want, atol=ABS_TOL, rtol=0)
    ref = reference_grid(home, box, 0.5)
    assert_allclose(got, ref, atol=TRIC_REL * ref.max(), rtol=0)


@pytest.mark.parametrize("lattice", ["ortho", "tric"])
def test_far_wrapped_gradient_equals_home(isa, lattice):
    lat = np.diag([5.0, 5.5, 6.0]) if lattice == "ortho" else SKEWED
    box = Box.from_lattice(lat, 8)
    home = np.array([[1.25, 2.5, 1.75], [3.0, 0.5, 4.25]])
    far = home + np.array([[2.0**33, -(2.0**31), 2.0**32], [-7.0, 2.0**36, 3.0]]) @ lat
    dgrid = np.random.default_rng(3).normal(size=(1, 8, 8, 8)).astype(np.float32)
    want = grid_gradient(home, box, 0.5, dgrid, isa=isa)
    got = grid_gradient(far, box, 0.5, dgrid, isa=isa)
    assert_allclose(got, want, rtol=0, atol=1e-5 * abs(want).max())


# ---------------------------------------------------------------------- narrow Gaussians
@pytest.mark.parametrize("sigma", [9e-7, 1e-9, 1e-11, 1e-20, 5e-324])
@pytest.mark.parametrize("kind", ["ortho", "ortho-periodic", "tric", "tric-periodic"])
def test_sigma_below_the_documented_minimum_is_rejected(kind, sigma):
    lat = np.diag([4.0, 4.0, 4.0]) if kind.startswith("ortho") else SKEWED
    box = Box(np.zeros(3), lat, 8, kind.endswith("periodic"))
    with pytest.raises(ValueError, match=r"sigma = .* below the smallest supported width, 1e-06 A"):
        grid([[1.3, 2.1, 1.7]], box, sigma, weights=[2.0])
    with pytest.raises(ValueError, match=r"sigma = .* below the smallest supported width"):
        grid_gradient([[1.3, 2.1, 1.7]], box, sigma, np.ones((1, 8, 8, 8), np.float32))


def test_triclinic_sigma_too_narrow_names_the_limit():
    """1e-11 used to overflow the panel count into a zero grid instead of raising."""
    box = Box(np.zeros(3), SKEWED, 8)
    with pytest.raises(ValueError, match=r"sigma = 0\.001 A, .* at least 0\.00\d+ A"):
        grid([[1.3, 2.1, 1.7]], box, 1e-3)
    for h in (1e3, 1e12, 1e300, np.inf):
        with pytest.raises(ValueError, match="sigma is too narrow for these triclinic voxels"):
            _core.triclinic_quadrature_order(h)
    with pytest.raises(ValueError, match="h_over_sigma must be"):
        _core.triclinic_quadrature_order(np.nan)


@pytest.mark.parametrize("periodic", [False, True])
def test_point_mass_at_the_minimum_sigma_is_exact(isa, periodic):
    """sigma = 1e-6 Å on 0.5 Å voxels: all the weight in the voxel holding the atom, halves
    on a face, eighths at a corner."""
    box = Box(np.zeros(3), np.eye(3) * 4.0, 8, periodic)
    g = grid([[1.3, 2.1, 1.7]], box, 1e-6, weights=[2.0], isa=isa)[0]
    want = np.zeros((8, 8, 8), np.float32)
    want[2, 4, 3] = 2.0
    assert_allclose(g, want, atol=ABS_TOL, rtol=0)
    g = grid([[1.0, 2.1, 1.5]], box, 1e-6, weights=[2.0], isa=isa)[0]  # on two faces
    want = np.zeros((8, 8, 8), np.float32)
    want[1:3, 4, 2:4] = 0.5
    assert_allclose(g, want, atol=ABS_TOL, rtol=0)
    g = grid([[0.5, 1.0, 1.5]], box, 1e-6, isa=isa)[0]  # on a corner
    assert_allclose(g[0:2, 1:3, 2:4], np.full((2, 2, 2), 0.125), atol=ABS_TOL, rtol=0)
    assert_allclose(g.sum(dtype=np.float64), 1.0, rtol=1e-6)


def test_point_mass_on_a_face_far_from_the_origin(isa):
    """The truncation radius (6e-6 Å) is below the resolution of a coordinate of 2^37 Å:
    the window lost the voxel below the face (the 'sum 0.5 instead of 2' of tiny sigmas)."""
    box = Box(np.zeros(3), np.eye(3) * 2.0**39, 8)  # voxels of 2^36 Å
    g = grid([[2.0**37, 2.0**37, 3 * 2.0**36]], box, 1e-6, weights=[2.0], isa=isa)[0]
    assert_allclose(g.sum(dtype=np.float64), 2.0, rtol=1e-6)
    assert_allclose(g[1:3, 1:3, 2:4], np.full((2, 2, 2), 0.25), atol=ABS_TOL, rtol=0)


# ---------------------------------------------------------------------- non-finite values
@pytest.mark.parametrize("kind", ["ortho", "tric"])
@pytest.mark.parametrize("w", [1e39, -1e39, 3.4e38, 1e35])
def test_weights_beyond_float32_are_rejected(kind, w):
    lat = np.eye(3) * 4.0 if kind == "ortho" else SKEWED
    box = Box(np.zeros(3), lat, 8)
    with pytest.raises(ValueError, match=r"atom 1: weight = .* is too large: .*\(weights\[1\]\)"):
        grid([[1, 1, 1], [2, 2, 2]], box, 0.5, weights=[1.0, w])


def test_weight_sum_beyond_float32_is_rejected():
    box = Box(np.zeros(3), np.eye(3) * 4.0, 8)
    w = [5e34, 5e34]  # each allowed, together not: the voxels near both could overflow
    with pytest.raises(ValueError, match="channel 0: the weights sum to 1e\\+35"):
        grid([[2, 2, 2], [2, 2, 2]], box, 0.3, weights=w)
    g = grid([[2, 2, 2], [2, 2, 2]], box, 0.3, weights=w, channels=[0, 1])  # one per channel
    assert np.isfinite(g).all()
    assert_allclose(g.sum(axis=(1, 2, 3), dtype=np.float64), w, rtol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    ("key", "index", "message"),
    [
        ("positions", (2, 1), r"atom 2: position \(0, .*\) is not finite \(positions\[2\]\)"),
        ("sigmas", (1,), r"atom 1: sigma must be a positive length, got .* \(sigmas\[1\]\)"),
        ("weights", (2,), r"atom 2: weight is not finite, got .* \(weights\[2\]\)"),
        ("origins", (0, 2), r"structure 0: box origin is not finite \(origins\[0\] = "),
        ("axes", (0, 1, 0), r"structure 0: box axes are not finite \(axes\[0\]\[1\] = "),
    ],
)
def test_non_finite_inputs_name_the_argument_and_index(key, index, message, bad):
    args = _args()
    args[key] = args[key].copy()
    args[key][index] = bad
    with pytest.raises(ValueError, match=message):
        _core.grid_batch(**args)
    with pytest.raises(ValueError, match=message):
        dgrid = args.pop("out")
        _core.grid_gradient_batch(**args, dgrid=dgrid)


# ---------------------------------------------------------------------- integer arguments
@pytest.mark.parametrize("threads", [2**31, 2**63, 10**30, -1, -(2**40), 1025])
def test_threads_out_of_range_is_a_value_error(threads):
    with pytest.raises(ValueError, match=r"threads must be between 1 and 1024 \(0: every"):
        _core.grid_batch(**_args(), threads=threads)
    args = _args()
    dgrid = args.pop("out")
    with pytest.raises(ValueError, match="threads must be between 1 and 1024"):
        _core.grid_gradient_batch(**args, dgrid=dgrid, threads=threads)
    with pytest.raises(ValueError, match="threads must be between 1 and 1024"):
        _core.zero_fill(np.zeros((1, 1, 2, 2, 2), np.float32), threads)
    if threads > 0:
        box = Box(np.zeros(3), np.eye(3) * 4, 4)
        with pytest.raises(ValueError, match="threads must be between 1 and 1024"):
            grid([[1, 1, 1]], box, 0.5, threads=threads)


def test_integer_arguments_accept_numpy_ints_and_reject_garbage():
    args = _args()
    args["positions"] = np.full((3, 3), 2.0)  # the box centre: all of the mass inside
    args["sigmas"] = np.full(3, 0.3)
    _core.grid_batch(**args, threads=np.int64(2), streaming=np.int8(1))
    assert_allclose(args["out"].sum(dtype=np.float64), 3.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"streaming must be -1 \(automatic\), 0 or 1, got 2"):
        _core.grid_batch(**_args(), streaming=2)
    with pytest.raises(ValueError, match="streaming must be -1"):
        _core.grid_batch(**_args(), streaming=-(2**70))
    with pytest.raises(TypeError, match="threads must be an integer, got float"):
        _core.grid_batch(**_args(), threads=1.5)
    with pytest.raises(TypeError, match="streaming must be an integer, got str"):
        _core.grid_batch(**_args(), streaming="yes")


# ---------------------------------------------------------------------- grid sizes
def test_axis_longer_than_the_supported_maximum_is_rejected():
    """Periodic windows and triclinic rows index voxels with int32 (and float32 along a
    row): axes beyond 2^24 voxels are refused before any work."""
    args = _args(shape=(2**24 + 1, 1, 1))
    with pytest.raises(ValueError, match=r"at most 16777216 voxels per axis, got 16777217"):
        _core.grid_batch(**args)
    assert not args["out"].any()


def test_huge_grid_is_rejected_before_allocating():
    pos = np.zeros((1, 3))
    with pytest.raises(ValueError, match="more than the"):
        grid(pos, Box.cube(pos, 10.0, 2000), 0.5, n_channels=8)


# ---------------------------------------------------------------------- codec
@pytest.mark.parametrize(("bad", "name"), [(np.inf, "inf"), (-np.inf, "-inf"), (np.nan, "nan")])
def test_round_grid_rejects_non_finite_values(bad, name):
    g = np.ones((2, 50), np.float32)
    g[1, 7] = bad
    before = g.copy()
    with pytest.raises(
        ValueError, match=rf"grid holds non-finite values \({name} at flat index 57\)"
    ):
        _core.round_grid(g, 1.0, 1e-3)
    assert_array_equal(g, before)  # untouched


@pytest.mark.parametrize(
    ("max_step", "relative", "message"),
    [
        (1e-45, 1e-3, "rounding step"),
        (1e-40, 1e-3, "rounding step"),
        (1e300, 1e300, "rounding step"),
        (np.inf, 1e-3, "max_step must be"),
        (1.0, np.inf, "relative must be"),
        (np.nan, 1e-3, "max_step must be"),
    ],
)
def test_round_grid_rejects_steps_float32_cannot_hold(max_step, relative, message):
    g = np.array([[1.0, 2.0, 3.0]], np.float32)
    with pytest.raises(ValueError, match=message):
        _core.round_grid(g, max_step, relative)
    assert_array_equal(g, [[1.0, 2.0, 3.0]])


def test_round_grid_still_rounds_extreme_but_finite_grids():
    g = np.array([[3e38, -3e38, 1.0, 0.0, 2e38]], np.float32)
    orig = g.astype(np.float64)
    step = _core.round_grid(g, 2.0**120, 1e-3)
    assert step == 2.0 ** np.floor(np.log2(1e-3 * float(np.float32(3e38))))  # 2^117
    assert np.isfinite(g).all()
    assert np.all(np.abs(g - orig) < step)
    assert abs(g.sum(dtype=np.float64) - orig.sum()) <= step / 2
