"""Tests of the float64 reference density (pgrid_cli.core.reference) against independent truths.

The truths used here do not rely on the code under test: total mass, symmetry,
adaptive scipy.integrate quadrature, the erf path vs the Gauss–Legendre path on the
same box, convergence in the node count, periodic translation, voxel additivity,
linearity in atoms/weights/channels, rigid-motion invariance and finite differences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import integrate
from scipy.special import ndtr

from pgrid_cli.core.box import Box
from pgrid_cli.core.reference import quadrature_order, reference_gradient, reference_grid

# A general triclinic cell (Å), rows a, b, c; no two edges perpendicular.
LATTICE = np.array([[4.0, 0.0, 0.0], [1.5, 4.2, 0.0], [0.8, 1.1, 3.9]])


def rotation(seed: int) -> np.ndarray:
    """A random proper rotation matrix."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def gaussian(r: np.ndarray, mu: np.ndarray, s: float) -> np.ndarray:
    """Isotropic 3D normal density N(r; mu, s^2 I), r (..., 3)."""
    d2 = np.sum((r - mu) ** 2, axis=-1)
    return np.exp(-0.5 * d2 / s**2) / ((2 * math.pi) ** 1.5 * s**3)


# ------------------------------------------------------------------------ input checks
def test_rejects_bad_input():
    box = Box([0, 0, 0], np.eye(3) * 4, 4)
    pos = np.zeros((2, 3))
    bad = [
        {"positions": np.zeros((2, 2))},
        {"positions": np.array([[0, 0, np.nan], [0, 0, 0]])},
        {"sigma": 0.0},
        {"sigma": -1.0},
        {"sigma": np.nan},
        {"sigma": np.array([0.5, 0.5, 0.5])},
        {"weights": np.ones(3)},
        {"weights": np.array([1.0, np.inf])},
        {"channels": np.array([0, -1])},
        {"channels": np.array([0.0, 0.5])},
        {"channels": np.array([0, 2]), "n_channels": 2},
        {"n_channels": 0},
    ]
    for kw in bad:
        args = {"positions": pos, "box": box, "sigma": 0.5} | kw
        with pytest.raises(ValueError):
            reference_grid(**args)
    with pytest.raises(TypeError):
        reference_grid(pos, np.eye(3), 0.5)
    with pytest.raises(ValueError):
        reference_gradient(pos, box, 0.5, np.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError):
        reference_gradient(pos, box, 0.5, np.zeros((1, 4, 4, 4)), channels=[0, 1])
    with pytest.raises(ValueError):
        reference_gradient(pos, box, 0.5, np.full((1, 4, 4, 4), np.nan))


def test_no_atoms():
    box = Box([0, 0, 0], np.eye(3) * 4, (2, 3, 4))
    g = reference_grid(np.zeros((0, 3)), box, 0.5)
    assert g.shape == (1, 2, 3, 4) and g.dtype == np.float64 and not g.any()
    assert reference_grid(np.zeros((0, 3)), box, 0.5, n_channels=3).shape == (3, 2, 3, 4)
    assert reference_gradient(np.zeros((0, 3)), box, 0.5, np.ones((1, 2, 3, 4))).shape == (0, 3)


# ------------------------------------------------------------------------ normalisation
@pytest.mark.parametrize("sigma", [0.3, 0.9, 2.5])
def test_periodic_orthorhombic_mass(sigma):
    # sigma = 2.5 Å is larger than the cell: many images are needed.
    box = Box([0.3, -1, 2], np.diag([3.0, 3.5, 4.0]), (6, 7, 8), periodic=True)
    pos = np.array([[0.1, 0.2, 0.3], [5.0, -7.0, 1.0], [-2.0, 3.0, 11.0]])
    w = np.array([1.0, 2.5, 0.25])
    g = reference_grid(pos, box, sigma, weights=w)
    assert_allclose(g.sum(), w.sum(), rtol=1e-10)
    assert g.min() >= 0


@pytest.mark.parametrize("sigma", [0.35, 1.2])
def test_periodic_triclinic_mass(sigma):
    box = Box([0.2, 0.1, -0.3], LATTICE, (6, 7, 5), periodic=True)
    pos = np.array([[0.5, 0.5, 0.5], [7.0, -3.0, 2.0]])
    w = np.array([1.0, 3.0])
    g = reference_grid(pos, box, sigma, weights=w)
    assert_allclose(g.sum(), w.sum(), rtol=1e-10)


def test_molecule_box_mass():
    # Every atom lies at least 8 sigma inside the box (the omitted mass is < 1e-14).
    rng = np.random.default_rng(0)
    sigma = np.array([0.4, 0.5, 0.6, 0.45])
    pos = rng.uniform(-1.0, 1.0, (4, 3))
    w = np.array([1.0, 2.0, 0.5, 1.5])
    box = Box(pos.min(0) - 8 * 0.6, np.diag(pos.max(0) - pos.min(0) + 16 * 0.6), (9, 10, 11))
    assert_allclose(reference_grid(pos, box, sigma, weights=w).sum(), w.sum(), rtol=1e-10)
    # Rotated orthogonal box: same mass.
    rot = rotation(1)
    rbox = Box(box.origin @ rot.T, box.axes @ rot.T, box.shape)
    assert_allclose(reference_grid(pos @ rot.T, rbox, sigma, weights=w).sum(), w.sum(), rtol=1e-10)
    # A non-periodic triclinic box (quadrature path) holding the atoms +-8 sigma.
    axes = 5.0 * LATTICE
    tbox = Box(-0.5 * axes.sum(axis=0), axes, (7, 7, 7))
    heights = 1.0 / np.linalg.norm(np.linalg.inv(axes), axis=0)  # face-to-face distances
    frac = tbox.fractional(pos)
    assert np.all(np.minimum(frac, 1 - frac) * heights >= 8 * 0.6)
    assert_allclose(reference_grid(pos, tbox, sigma, weights=w).sum(), w.sum(), rtol=1e-10)


def test_atom_outside_box_contributes_its_inside_part():
    box = Box([0, 0, 0], np.diag([2.0, 3.0, 4.0]), (4, 4, 4))
    mu, s = np.array([-0.4, 1.0, 4.3]), 0.5
    lengths = np.array([2.0, 3.0, 4.0])
    expected = np.prod(ndtr((lengths - mu) / s) - ndtr((0.0 - mu) / s))
    assert_allclose(reference_grid(mu[None], box, s).sum(), expected, rtol=1e-12)
    assert_allclose(
        reference_grid(mu[None], box, s, _force_quadrature=True).sum(), expected, rtol=1e-10
    )


# ------------------------------------------------------------------------ symmetry
def test_centred_atom_on_odd_grid_is_symmetric():
    box = Box([-2.5, -2.5, -2.5], np.eye(3) * 5.0, 7)
    g = reference_grid([[0.0, 0.0, 0.0]], box, 0.6)[0]
    for axis in range(3):
        assert_allclose(np.flip(g, axis), g, rtol=1e-13, atol=0)
    for perm in [(1, 0, 2), (0, 2, 1), (2, 1, 0)]:
        assert_allclose(np.transpose(g, perm), g, rtol=1e-13, atol=0)
    assert np.unravel_index(np.argmax(g), g.shape) == (3, 3, 3)


def test_centred_atom_in_triclinic_box_has_inversion_symmetry():
    box = Box([0, 0, 0], LATTICE, (5, 5, 5))
    g = reference_grid(box.center[None], box, 0.5)[0]
    assert_allclose(g[::-1, ::-1, ::-1], g, rtol=1e-11, atol=1e-15)
    assert np.unravel_index(np.argmax(g), g.shape) == (2, 2, 2)


# ------------------------------------------------------------------------ direct integration
def test_orthogonal_voxels_match_scipy_tplquad():
    box = Box([0.1, -0.2, 0.3], np.diag([3.0, 2.4, 2.0]), (3, 4, 2))
    mu, s = np.array([1.0, 0.5, 1.2]), 0.45
    g = reference_grid(mu[None], box, s)[0]
    h = np.diag(box.voxel_axes)
    for ijk in [(0, 1, 1), (2, 3, 0)]:
        lo = box.origin + np.array(ijk) * h
        hi = lo + h

        def f(z, y, x):
            return gaussian(np.array([x, y, z]), mu, s)

        val, _ = integrate.tplquad(
            f, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], epsabs=1e-14, epsrel=1e-12
        )
        assert_allclose(g[ijk], val, rtol=1e-9)


def test_periodic_orthogonal_voxel_matches_1d_quad_of_image_sums():
    box = Box([0, 0, 0], np.diag([2.0, 2.5, 3.0]), (4, 5, 3), periodic=True)
    mu, s = np.array([1.9, 0.1, 2.2]), 1.1
    g = reference_grid(mu[None], box, s)[0]
    ijk = (0, 3, 1)
    factors = []
    for d in range(3):
        length = box.lengths[d]
        h = length / box.shape[d]

        def f(x, m=mu[d], length=length):  # 1D Gaussian summed over 41 explicit images
            x = x - m - np.arange(-20, 21) * length
            return np.sum(np.exp(-0.5 * (x / s) ** 2)) / (math.sqrt(2 * math.pi) * s)

        val, _ = integrate.quad(f, ijk[d] * h, (ijk[d] + 1) * h, epsabs=1e-15, epsrel=1e-13)
        factors.append(val)
    assert_allclose(g[ijk], np.prod(factors), rtol=1e-10)


def _tplquad_parallelepiped(box: Box, ijk, mu: np.ndarray, s: float, images=((0, 0, 0),)):
    """Integrate N over voxel ijk by scipy adaptive quadrature in fractional coordinates."""
    va = box.voxel_axes
    corner = box.origin + np.array(ijk) @ va
    shifts = np.array(images, dtype=float) @ box.axes

    def f(w, v, u):
        r = corner + u * va[0] + v * va[1] + w * va[2]
        return box.voxel_volume * float(np.sum(gaussian(r, mu + shifts, s)))

    val, _ = integrate.tplquad(f, 0, 1, 0, 1, 0, 1, epsabs=1e-14, epsrel=1e-12)
    return val


def test_triclinic_voxels_match_scipy_tplquad():
    box = Box([0.2, -0.1, 0.0], LATTICE, (5, 5, 5))
    mu, s = np.array([2.6, 2.4, 1.9]), 0.4
    g = reference_grid(mu[None], box, s)[0]
    for ijk in [(2, 2, 2), (3, 1, 2), (1, 3, 3)]:
        assert_allclose(
            g[ijk], _tplquad_parallelepiped(box, ijk, mu, s), rtol=1e-8, atol=1e-10 * g.max()
        )


def test_periodic_triclinic_voxel_matches_tplquad_with_images():
    box = Box([0, 0, 0], LATTICE, (3, 3, 3), periodic=True)
    mu, s = np.array([0.3, 0.2, 0.1]), 0.7
    g = reference_grid(mu[None], box, s)[0]
    images = [(i, j, k) for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)]
    for ijk in [(2, 2, 2), (0, 1, 2)]:
        assert_allclose(
            g[ijk],
            _tplquad_parallelepiped(box, ijk, mu, s, images),
            rtol=1e-8,
            atol=1e-10 * g.max(),
        )


# ------------------------------------------------------------------------ two paths, one box
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("sigma", [0.15, 0.5, 1.3])
def test_quadrature_path_matches_erf_path(periodic, sigma):
    rng = np.random.default_rng(2)
    rot = rotation(3)
    box = Box(
        np.array([0.3, -0.4, 0.2]) @ rot.T,
        np.diag([3.0, 3.6, 2.4]) @ rot.T,
        (4, 5, 3),
        periodic=periodic,
    )
    # Some atoms outside the box (their inside part counts / they wrap).
    pos = box.cartesian(rng.uniform(-0.2, 1.2, (3, 3)))
    w = np.array([1.0, 0.5, 2.0])
    exact = reference_grid(pos, box, sigma, weights=w)
    quad = reference_grid(pos, box, sigma, weights=w, _force_quadrature=True)
    assert_allclose(quad, exact, rtol=0, atol=1e-10 * exact.max())


def test_quadrature_order_rule():
    assert quadrature_order(0.5, 1.0) == 6
    assert quadrature_order(1.0, 0.2) == 14
    # Monotone: coarser voxels / narrower Gaussians never get fewer nodes.
    rho = np.linspace(0.01, 20, 200)
    n = [quadrature_order(r, 1.0) for r in rho]
    assert np.all(np.diff(n) >= 0)


def test_quadrature_converges_as_nodes_double():
    """The default order is within 1e-9 of the max of a much finer rule, and the error
    falls as the node count doubles (2, 4, 8, ...)."""
    box = Box([0, 0, 0], LATTICE, (4, 4, 4), periodic=True)
    pos = np.array([[0.7, 1.3, 2.1], [3.1, 2.2, 0.4]])
    sigma = 0.3  # voxel edges up to ~1.2 Å: rho ~ 4, default order 22
    auto = reference_grid(pos, box, sigma)
    n_auto = quadrature_order(np.linalg.norm(box.voxel_axes, axis=1).max(), sigma)
    fine = reference_grid(pos, box, sigma, _nodes=2 * n_auto)
    assert_allclose(auto, fine, rtol=0, atol=1e-9 * fine.max())
    errors = [np.abs(reference_grid(pos, box, sigma, _nodes=n) - fine).max() for n in (2, 4, 8)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-2 * errors[0]


# ------------------------------------------------------------------------ translation
def test_periodic_roll_invariance_orthorhombic():
    box = Box([0.1, 0.2, 0.3], np.diag([3.0, 3.5, 4.0]), (6, 7, 8), periodic=True)
    pos = np.array([[0.4, 3.3, 1.0], [2.9, 0.1, 3.9]])
    g = reference_grid(pos, box, 0.6, channels=[0, 1])
    for d in range(3):
        shifted = reference_grid(pos + box.voxel_axes[d], box, 0.6, channels=[0, 1])
        assert_allclose(shifted, np.roll(g, 1, axis=d + 1), rtol=0, atol=1e-14)
    # A whole lattice vector is no change at all.
    assert_allclose(reference_grid(pos - box.axes[2], box, 0.6, channels=[0, 1]), g, atol=1e-14)


def test_periodic_roll_invariance_triclinic():
    box = Box([0.0, 0.0, 0.0], LATTICE, (5, 4, 6), periodic=True)
    pos = np.array([[0.4, 3.3, 1.0], [2.9, 0.1, 3.5]])
    g = reference_grid(pos, box, 0.5)
    for d in range(3):
        shifted = reference_grid(pos + box.voxel_axes[d], box, 0.5)
        assert_allclose(shifted, np.roll(g, 1, axis=d + 1), rtol=0, atol=1e-12 * g.max())


def test_rigid_motion_invariance():
    """Rotating (and reflecting) box and atoms together leaves the grid unchanged."""
    rng = np.random.default_rng(4)
    for axes, periodic in [(np.diag([3.0, 3.5, 4.0]), False), (LATTICE, True)]:
        box = Box([0.1, 0.2, 0.3], axes, (4, 5, 4), periodic=periodic)
        pos = box.cartesian(rng.uniform(0.2, 0.8, (2, 3)))
        g = reference_grid(pos, box, 0.55)
        for q in (rotation(5), -rotation(6)):  # proper and improper
            t = np.array([1.0, -2.0, 0.5])
            moved = Box(box.origin @ q.T + t, box.axes @ q.T, box.shape, periodic)
            assert_allclose(
                reference_grid(pos @ q.T + t, moved, 0.55), g, rtol=0, atol=1e-12 * g.max()
            )


def test_triclinic_voxels_are_additive():
    """Each voxel of a (2n)^3 grid is an eighth of a voxel of the n^3 grid."""
    box = Box([0.0, 0.0, 0.0], LATTICE, (3, 3, 3))
    pos = np.array([[2.5, 2.0, 2.0]])
    coarse = reference_grid(pos, box, 0.7)[0]
    fine = reference_grid(pos, box.with_shape(6), 0.7)[0]
    summed = fine.reshape(3, 2, 3, 2, 3, 2).sum(axis=(1, 3, 5))
    assert_allclose(summed, coarse, rtol=0, atol=1e-10 * coarse.max())


# ------------------------------------------------------------------------ atoms, weights, channels
@pytest.mark.parametrize(
    "axes,periodic",
    [(np.diag([4.0, 4.5, 5.0]), True), (np.diag([4.0, 4.5, 5.0]), False), (LATTICE, True)],
)
def test_per_atom_sigma_weights_and_channels_superpose(axes, periodic):
    box = Box([0.0, 0.0, 0.0], axes, (4, 5, 4), periodic=periodic)
    pos = box.cartesian([[0.2, 0.3, 0.4], [0.7, 0.6, 0.5], [0.5, 0.9, 0.1]])
    sigma = np.array([0.4, 0.8, 0.6])
    w = np.array([1.5, -0.5, 2.0])
    chan = np.array([2, 0, 2])
    g = reference_grid(pos, box, sigma, channels=chan, n_channels=4, weights=w)
    assert g.shape == (4, *box.shape)
    expected = np.zeros_like(g)
    for a in range(3):
        single = reference_grid(pos[a : a + 1], box, float(sigma[a]))  # scalar sigma, w = 1
        expected[chan[a]] += w[a] * single[0]
    assert_allclose(g, expected, rtol=0, atol=1e-15)
    assert not g[1].any() and not g[3].any()
    # Default channels: everything in channel 0; default n_channels = max + 1.
    assert_allclose(reference_grid(pos, box, sigma, weights=w)[0], expected.sum(0), atol=1e-15)
    assert reference_grid(pos, box, sigma, channels=chan).shape == (3, *box.shape)


# ------------------------------------------------------------------------ gradients
def _finite_difference(pos, box, sigma, dgrid, channels, weights, h=1e-5):
    fd = np.zeros_like(pos)
    n_chan = dgrid.shape[0]
    for m in range(len(pos)):
        for d in range(3):
            vals = []
            for sign in (1, -1):
                p = pos.copy()
                p[m, d] += sign * h
                grid = reference_grid(p, box, sigma, channels, n_chan, weights)
                vals.append(np.sum(dgrid * grid))
            fd[m, d] = (vals[0] - vals[1]) / (2 * h)
    return fd


@pytest.mark.parametrize("kind", ["orthogonal", "rotated", "periodic", "triclinic"])
def test_gradient_matches_finite_differences(kind):
    rng = np.random.default_rng(7)
    if kind == "orthogonal":
        box = Box([0.1, -0.2, 0.3], np.diag([5.0, 6.0, 7.0]), (5, 6, 7))
    elif kind == "rotated":
        box = Box([0.1, -0.2, 0.3], np.diag([5.0, 6.0, 7.0]) @ rotation(8).T, (5, 6, 7))
    elif kind == "periodic":
        box = Box([0, 0, 0], np.diag([3.0, 3.5, 4.0]), (4, 5, 5), periodic=True)
    else:
        box = Box([0.2, 0.0, 0.0], LATTICE, (4, 4, 4), periodic=True)
    pos = box.cartesian(rng.uniform(0.1, 0.9, (3, 3)))
    sigma = np.array([0.5, 0.7, 0.9])
    w = np.array([1.0, 2.0, -0.5])
    chan = np.array([0, 1, 0])
    dgrid = rng.normal(size=(2, *box.shape))
    grad = reference_gradient(pos, box, sigma, dgrid, chan, w)
    fd = _finite_difference(pos, box, sigma, dgrid, chan, w)
    assert_allclose(grad, fd, rtol=0, atol=1e-8 * np.abs(grad).max())
    if kind != "triclinic":  # the quadrature gradient agrees with the analytic one
        quad = reference_gradient(pos, box, sigma, dgrid, chan, w, _force_quadrature=True)
        assert_allclose(quad, grad, rtol=0, atol=1e-10 * np.abs(grad).max())


def test_gradient_of_total_mass_vanishes_in_periodic_cell():
    """Sum of a periodic grid is sum(w) whatever the positions, so dL/dmu = 0 for dgrid = 1."""
    for axes in (np.diag([3.0, 3.5, 4.0]), LATTICE):
        box = Box([0, 0, 0], axes, (4, 4, 4), periodic=True)
        pos = np.array([[0.3, 1.2, 2.2], [2.0, 0.5, 1.0]])
        grad = reference_gradient(pos, box, 0.5, np.ones((1, 4, 4, 4)))
        assert_allclose(grad, 0.0, atol=1e-11)


# ---------------------------------------------------------------------- windows
@pytest.mark.parametrize(
    ("lattice", "periodic"),
    [
        (np.array([[6.0, 0, 0], [3.2, 5.5, 0], [1.1, 1.3, 6.2]]), True),  # triclinic cell
        (np.diag([5.0, 6.0, 7.0]), True),  # orthogonal cell
        (np.diag([8.0, 9.0, 10.0]), False),  # open box
    ],
)
def test_a_window_is_the_same_as_the_whole_grid_there(lattice, periodic):
    """reference_window (what pgrid bench --quick verifies against) equals the slice of
    the full reference: same voxels, and every periodic image that reaches them."""
    from pgrid_cli.core.reference import reference_window

    pos = np.array([[0.2, 0.3, 0.1], [4.0, 2.0, 3.0], [5.9, 5.4, 6.1]])
    box = Box(np.zeros(3), lattice, (10, 9, 8), periodic)
    full = reference_grid(pos, box, 0.6, [0, 1, 0], 2)
    for start, size in [((0, 0, 0), (4, 4, 4)), ((7, 2, 5), (3, 5, 3)), ((0, 0, 0), (10, 9, 8))]:
        win = reference_window(pos, box, 0.6, start, size, [0, 1, 0], 2)
        sl = (slice(None), *(slice(a, a + b) for a, b in zip(start, size, strict=True)))
        assert_allclose(win, full[sl], rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="is not inside"):
        reference_window(pos, box, 0.6, (8, 0, 0), (4, 1, 1))
