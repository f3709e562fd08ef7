"""Float64 NumPy reference implementation of the pgrid density (docs/format.md §1–§3).

This module is the *ground truth* the fast native kernel is tested against, so it
favours being obviously correct over being fast. It is still vectorised (there are no
Python loops over voxels; the loops are over atoms, channels and periodic images), and a
benchmark uses it as the "NumPy baseline".

What is computed
----------------
Every atom ``a`` is an isotropic normal distribution ``N(r; mu_a, sigma_a^2 I)`` in Å,
scaled by its weight ``w_a``. The value of voxel (i, j, k) in channel c is

    value[c, i, j, k] = sum_{a in c} w_a * integral_{voxel ijk} N(r; mu_a, sigma_a^2 I) dr

and for periodic boxes the sum also runs over every lattice image ``mu_a + n @ axes``,
n in Z^3. Voxel (i, j, k) is the parallelepiped
``origin + (i+u)/nx * a + (j+v)/ny * b + (k+w)/nz * c`` with u, v, w in [0, 1]
(rows a, b, c of ``box.axes``). Values are probabilities times weights, so they are
dimensionless (for unit weights) and sum to ``sum(w)`` when the box holds all the density.

Two independent algorithms
--------------------------
* **Orthogonal boxes** (``box.is_orthogonal``; the axes may be rotated): the integral is
  separable in the box frame. Each atom is projected onto the unit axes
  ``e_d = a_d / |a_d|`` and the voxel value is the product of three 1D normal masses,
  each an exact ``erf`` difference. For periodic boxes each 1D factor is summed over
  explicit images ``t + n L``; for an orthogonal lattice the product of the per-axis
  image sums equals the 3D image sum over n in Z^3.
* **Triclinic boxes** (or any box with ``_force_quadrature=True``): the Cartesian
  Gaussian is integrated over each parallelepiped voxel by tensor-product
  Gauss–Legendre quadrature in the voxel's fractional coordinates (u, v, w), with the
  constant Jacobian ``|det(axes)| / (nx ny nz)``. No axis is done analytically.

Quadrature order
----------------
Along any line parallel to a voxel edge the integrand is a 1D Gaussian of standard
deviation ``sigma`` (times a constant ≤ the peak), so the difficulty of the 1D rule is
set by ``rho = h / sigma`` where ``h`` is the voxel edge length. An offline scan over
``rho`` in [0.05, 20] and every atom position relative to the interval gave the smallest
n-point rule whose absolute error is ≤ 1e-10 of the largest 1D voxel mass:

    rho : 0.05 0.25 0.5  1  1.5  2  3  4  5  6  8  10  15  20
    n   :   3    4   5   6   7   8  9 11 12 14 17  20  28  37

:func:`quadrature_order` uses ``n = ceil(5 + 1.8 * rho_max)`` with ``rho_max`` the
largest voxel edge over sigma, which lies on or above that table everywhere (one node
or more of margin). Measured in 3D against the exact ``erf`` path (random atom positions,
rho = 0.1 … 12) the error at this order is ≤ 1e-12 of the largest voxel value (≤ 1e-11
with one node fewer, ≤ 2e-7 with three fewer), far inside the 1e-8 target; the tests
check it by doubling the node count and against the ``erf`` path on orthogonal boxes.

Cut-offs
--------
Quadrature is evaluated only on voxels that intersect the bounding box (in fractional
coordinates) of the sphere of radius ``CUTOFF_SIGMAS * sigma`` around each atom image;
outside it the density is below ``exp(-81/2) ≈ 2.6e-18`` of its peak. Periodic images
are included whenever that sphere reaches the cell. The separable path needs no spatial
cut-off; its periodic image sums include every image within ``CUTOFF_SIGMAS * sigma`` of
the cell, so omitted images contribute < 1e-18.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from scipy.special import erf, erfc

from .box import Box

__all__ = ["CUTOFF_SIGMAS", "quadrature_order", "reference_gradient", "reference_grid"]

#: Radius, in units of sigma, beyond which a Gaussian (or a periodic image) is ignored.
CUTOFF_SIGMAS = 9.0

#: Work arrays are chunked to roughly this many float64 elements (about 32 MB).
_CHUNK_ELEMENTS = 1 << 22

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ---------------------------------------------------------------------------- public API
def reference_grid(
    positions: Any,
    box: Box,
    sigma: Any,
    channels: Any = None,
    n_channels: int | None = None,
    weights: Any = None,
    *,
    _force_quadrature: bool = False,
    _nodes: int | None = None,
) -> np.ndarray:
    """Exact (float64) voxel-integrated Gaussian density on ``box``.

    Parameters
    ----------
    positions : array_like, shape (M, 3)
        Cartesian atom positions, Å.
    box : Box
        Grid box (origin, axes, shape (nx, ny, nz), periodic).
    sigma : float or array_like, shape (M,)
        Gaussian standard deviation per atom, Å (> 0).
    channels : array_like of int, shape (M,), optional
        Channel index of each atom; ``None`` puts every atom in channel 0.
    n_channels : int, optional
        Number of output channels; default ``max(channels) + 1`` (1 with no atoms).
    weights : array_like, shape (M,), optional
        Weight of each atom (default 1); the voxel values scale linearly with it.
    _force_quadrature : bool
        Private/testing: use the Gauss–Legendre path even for an orthogonal box.
    _nodes : int, optional
        Private/testing: Gauss–Legendre nodes per axis instead of
        :func:`quadrature_order`.

    Returns
    -------
    numpy.ndarray, float64, shape (C, nx, ny, nz)
        ``value[c, i, j, k]`` = sum of ``w * integral of N`` over voxel (i, j, k) for the
        atoms of channel c (dimensionless for unit weights).
    """
    pos, sig, chan, wts, n_chan = _validate(positions, box, sigma, channels, weights)
    if n_channels is None:
        n_channels = n_chan
    n_channels = _check_n_channels(n_channels, chan)

    grid = np.zeros((n_channels, *box.shape), dtype=np.float64)
    if len(pos) == 0:
        return grid
    if box.is_orthogonal and not _force_quadrature:
        _separable_grid(grid, pos, box, sig, chan, wts)
    else:
        _quadrature_accumulate(pos, box, sig, chan, wts, nodes=_nodes, grid=grid)
    return grid


def reference_window(
    positions: Any,
    box: Box,
    sigma: Any,
    start: Any,
    size: Any,
    channels: Any = None,
    n_channels: int | None = None,
    weights: Any = None,
) -> np.ndarray:
    """The reference on a window of ``box``: voxels ``start[d] … start[d] + size[d] - 1``.

    Returns (C, sx, sy, sz) float64, the same values as
    ``reference_grid(...)[:, i0:i0+sx, j0:j0+sy, k0:k0+sz]`` at a cost set by the window,
    not the grid: the window is an open box on the same voxel lattice, and for a periodic
    ``box`` every lattice image of every atom that reaches it (within ``CUTOFF_SIGMAS``·σ)
    is added as an atom of its own.
    """
    pos, sig, chan, wts, n_chan = _validate(positions, box, sigma, channels, weights)
    n_channels = _check_n_channels(n_chan if n_channels is None else n_channels, chan)
    shape = np.asarray(box.shape)
    lo = np.asarray(start, dtype=np.int64).reshape(3)
    sz = np.asarray(size, dtype=np.int64).reshape(3)
    if np.any(lo < 0) or np.any(sz < 1) or np.any(lo + sz > shape):
        raise ValueError(f"window {lo.tolist()} + {sz.tolist()} is not inside {box.shape}")
    step = box.axes / shape[:, None]
    window = Box(box.origin + lo @ step, step * sz[:, None], tuple(int(v) for v in sz))
    if box.periodic and len(pos):
        # Fractional extent of the window, widened by the reach of the widest Gaussian
        # measured across each pair of cell faces.
        reach = CUTOFF_SIGMAS * float(sig.max()) * np.linalg.norm(np.linalg.inv(box.axes), axis=0)
        f_lo, f_hi = lo / shape - reach, (lo + sz) / shape + reach
        frac = box.fractional(pos)
        first = np.floor(f_lo - frac.max(axis=0)).astype(np.int64)
        last = np.ceil(f_hi - frac.min(axis=0)).astype(np.int64)
        ranges = (range(a, b + 1) for a, b in zip(first, last, strict=True))
        shifts = np.array(list(itertools.product(*ranges)))
        img = frac[None, :, :] + shifts[:, None, :]  # (S, M, 3)
        near = np.all((img >= f_lo) & (img <= f_hi), axis=2)
        s_idx, a_idx = np.nonzero(near)
        pos = box.origin + img[s_idx, a_idx] @ box.axes
        sig, chan, wts = sig[a_idx], chan[a_idx], wts[a_idx]
    return reference_grid(pos, window, sig, chan, n_channels, wts)


def reference_gradient(
    positions: Any,
    box: Box,
    sigma: Any,
    dgrid: Any,
    channels: Any = None,
    weights: Any = None,
    *,
    _force_quadrature: bool = False,
    _nodes: int | None = None,
) -> np.ndarray:
    """Gradient of ``L = sum(dgrid * reference_grid(...))`` with respect to positions.

    Parameters
    ----------
    positions, box, sigma, channels, weights
        As in :func:`reference_grid`.
    dgrid : array_like, shape (C, nx, ny, nz)
        Upstream gradient dL/d(value); C is the number of channels, so every channel
        index must be < C.
    _force_quadrature, _nodes
        Private/testing, as in :func:`reference_grid`.

    Returns
    -------
    numpy.ndarray, float64, shape (M, 3)
        dL/d(positions), in (units of L) per Å. Weights and sigmas are held fixed.
        Orthogonal boxes use the analytic derivative of the erf differences (Gaussian
        differences); triclinic boxes use Gauss–Legendre quadrature of
        ``dN/dmu = N * (r - mu) / sigma^2``.
    """
    pos, sig, chan, wts, _ = _validate(positions, box, sigma, channels, weights)
    g = np.asarray(dgrid, dtype=np.float64)
    if g.ndim != 4 or tuple(g.shape[1:]) != tuple(box.shape) or g.shape[0] < 1:
        raise ValueError(
            f"dgrid must have shape (C, {', '.join(map(str, box.shape))}), got {g.shape}"
        )
    if not np.all(np.isfinite(g)):
        raise ValueError("dgrid contains NaN or infinite values")
    _check_n_channels(g.shape[0], chan)

    grad = np.zeros((len(pos), 3), dtype=np.float64)
    if len(pos) == 0:
        return grad
    if box.is_orthogonal and not _force_quadrature:
        _separable_gradient(grad, g, pos, box, sig, chan, wts)
    else:
        _quadrature_accumulate(pos, box, sig, chan, wts, nodes=_nodes, dgrid=g, grad=grad)
    return grad


def quadrature_order(voxel_edge: float, sigma: float) -> int:
    """Gauss–Legendre nodes per axis for a voxel edge ``voxel_edge`` Å and ``sigma`` Å.

    ``n = ceil(5 + 1.8 * voxel_edge / sigma)``; see the module docstring for the scan
    this rule is fitted above (1D error ≤ 1e-10 of the largest voxel mass).
    """
    rho = float(voxel_edge) / float(sigma)
    return math.ceil(5.0 + 1.8 * rho)


# ---------------------------------------------------------------------------- validation
def _validate(
    positions: Any, box: Any, sigma: Any, channels: Any, weights: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Check and normalise the inputs; returns (pos, sigma, channels, weights, n_channels)."""
    if not isinstance(box, Box):
        raise TypeError(f"box must be a pgrid_cli.box.Box, got {type(box).__name__}")

    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim == 1 and pos.size == 0:
        pos = pos.reshape(0, 3)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape (M, 3), got {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions contain NaN or infinite coordinates")
    m = len(pos)

    sig = np.asarray(sigma, dtype=np.float64)
    if sig.ndim == 0:
        sig = np.full(m, float(sig))
    elif sig.shape != (m,):
        raise ValueError(f"sigma must be a scalar or have shape ({m},), got {sig.shape}")
    if not np.all(np.isfinite(sig)) or np.any(sig <= 0):
        raise ValueError("sigma must be finite and > 0 (standard deviation in Å)")

    if weights is None:
        wts = np.ones(m, dtype=np.float64)
    else:
        wts = np.asarray(weights, dtype=np.float64)
        if wts.shape != (m,):
            raise ValueError(f"weights must have shape ({m},), got {wts.shape}")
        if not np.all(np.isfinite(wts)):
            raise ValueError("weights contain NaN or infinite values")

    if channels is None:
        chan = np.zeros(m, dtype=np.int64)
    else:
        raw = np.asarray(channels)
        if raw.shape != (m,):
            raise ValueError(f"channels must have shape ({m},), got {raw.shape}")
        if raw.dtype == bool or not (
            np.issubdtype(raw.dtype, np.integer)
            or (np.issubdtype(raw.dtype, np.floating) and np.all(raw == np.round(raw)))
        ):
            raise ValueError("channels must be integer channel indices")
        chan = raw.astype(np.int64)
        if np.any(chan < 0):
            raise ValueError("channels must be >= 0")
    n_chan = int(chan.max()) + 1 if m else 1
    return pos, sig, chan, wts, n_chan


def _check_n_channels(n_channels: Any, chan: np.ndarray) -> int:
    if isinstance(n_channels, bool) or int(n_channels) != n_channels or n_channels < 1:
        raise ValueError(f"n_channels must be a positive integer, got {n_channels!r}")
    n_channels = int(n_channels)
    if len(chan) and int(chan.max()) >= n_channels:
        raise ValueError(
            f"channel index {int(chan.max())} out of range for {n_channels} channel(s)"
        )
    return n_channels


# ---------------------------------------------------------------------------- separable path
def _normal_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Standard-normal probability of [a, b] (a <= b, in units of sigma).

    Uses erfc on the tail side so that small masses keep their relative precision.
    """
    x, y = a * _SQRT_HALF, b * _SQRT_HALF
    centre = 0.5 * (erf(y) - erf(x))
    right = 0.5 * (erfc(x) - erfc(y))  # both limits > 0
    left = 0.5 * (erfc(-y) - erfc(-x))  # both limits < 0
    return np.where(a > 0, right, np.where(b < 0, left, centre))


def _normal_pdf(x: np.ndarray) -> np.ndarray:
    """Standard-normal density."""
    return _INV_SQRT_2PI * np.exp(-0.5 * x * x)


def _axis_factors(
    t: np.ndarray, sig: np.ndarray, length: float, n: int, periodic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """1D voxel masses along one box axis and their derivatives.

    Parameters
    ----------
    t : (M,) coordinate of each atom along the axis, Å, measured from the origin.
    sig : (M,) sigma, Å.
    length : axis length L, Å; the voxels are [i L/n, (i+1) L/n], i < n.
    periodic : sum over the images t + s L.

    Returns
    -------
    F : (M, n) mass of N(t, sigma^2) in each 1D voxel (image-summed if periodic).
    dF : (M, n) dF/dt, 1/Å.
    """
    edges = np.arange(n + 1, dtype=np.float64) * (length / n)
    if periodic:
        t = t - np.floor(t / length) * length  # the image sum does not depend on this
        k = math.ceil(CUTOFF_SIGMAS * float(sig.max()) / length) + 1
        shifts = np.arange(-k, k + 1, dtype=np.float64) * length
    else:
        shifts = np.zeros(1)
    centres = t[:, None] + shifts[None, :]  # (M, S)
    s = sig[:, None, None]
    a = (edges[None, None, :-1] - centres[:, :, None]) / s  # (M, S, n)
    b = (edges[None, None, 1:] - centres[:, :, None]) / s
    F = _normal_mass(a, b).sum(axis=1)
    dF = ((_normal_pdf(a) - _normal_pdf(b)) / s).sum(axis=1)
    return F, dF


def _box_frame(pos: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Unit axes (3, 3 rows) and atom coordinates (M, 3) in the orthogonal box frame, Å."""
    unit = box.axes / box.lengths[:, None]
    return unit, (pos - box.origin) @ unit.T


def _all_factors(
    pos: np.ndarray, box: Box, sig: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    unit, t = _box_frame(pos, box)
    F, dF = [], []
    for d in range(3):
        f, df = _axis_factors(t[:, d], sig, float(box.lengths[d]), box.shape[d], box.periodic)
        F.append(f)
        dF.append(df)
    return unit, F, dF


def _atom_chunks(idx: np.ndarray, per_atom: int):
    """Split atom indices so that each chunk needs about _CHUNK_ELEMENTS work elements."""
    step = max(1, _CHUNK_ELEMENTS // max(1, per_atom))
    for start in range(0, len(idx), step):
        yield idx[start : start + step]


def _separable_grid(
    grid: np.ndarray,
    pos: np.ndarray,
    box: Box,
    sig: np.ndarray,
    chan: np.ndarray,
    wts: np.ndarray,
) -> None:
    """value[c,i,j,k] = sum_m w_m X[m,i] Y[m,j] Z[m,k] over the atoms m of channel c."""
    nx, ny, nz = box.shape
    _, (X, Y, Z), _ = _all_factors(pos, box, sig)
    for c in range(grid.shape[0]):
        for m in _atom_chunks(np.flatnonzero(chan == c), nx * ny):
            xy = ((wts[m, None] * X[m])[:, :, None] * Y[m][:, None, :]).reshape(len(m), -1)
            grid[c] += (xy.T @ Z[m]).reshape(nx, ny, nz)


def _separable_gradient(
    grad: np.ndarray,
    dgrid: np.ndarray,
    pos: np.ndarray,
    box: Box,
    sig: np.ndarray,
    chan: np.ndarray,
    wts: np.ndarray,
) -> None:
    """dL/dt_d = w * sum_ijk G[i,j,k] * (product of X, Y, Z with axis d differentiated).

    t_d = e_d . (mu - origin), so dL/dmu = sum_d (dL/dt_d) e_d.
    """
    nx, ny, nz = box.shape
    unit, (X, Y, Z), (dX, dY, dZ) = _all_factors(pos, box, sig)
    for c in range(dgrid.shape[0]):
        G = dgrid[c]
        for m in _atom_chunks(np.flatnonzero(chan == c), nx * ny):
            gz = (G.reshape(nx * ny, nz) @ Z[m].T).reshape(nx, ny, len(m))  # sum over k
            hx = np.einsum("ijm,mj->mi", gz, Y[m])  # sum_jk G Y Z
            hy = np.einsum("ijm,mi->mj", gz, X[m])  # sum_ik G X Z
            xy = (X[m][:, :, None] * Y[m][:, None, :]).reshape(len(m), nx * ny)
            hz = xy @ G.reshape(nx * ny, nz)  # sum_ij G X Y
            dt = np.stack([(dX[m] * hx).sum(1), (dY[m] * hy).sum(1), (dZ[m] * hz).sum(1)], axis=1)
            grad[m] += wts[m, None] * (dt @ unit)


# ---------------------------------------------------------------------------- quadrature path
def _gauss_legendre_01(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n-point Gauss–Legendre nodes and weights on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w


def _image_windows(frac: np.ndarray, reach: np.ndarray, box: Box):
    """Yield (image shift n (3,), voxel index ranges) for one atom.

    ``frac`` is the atom's fractional position, ``reach`` (3,) the half-extent of its
    cut-off sphere in fractional units. Only images whose cut-off sphere's bounding box
    overlaps the cell are yielded; each comes with the (clipped) voxel ranges
    ``[lo_d, hi_d)`` it overlaps.
    """
    shape = np.asarray(box.shape)
    if box.periodic:
        lo_n = np.ceil(-reach - frac).astype(int)  # frac + n + reach >= 0
        hi_n = np.floor(1.0 + reach - frac).astype(int)  # frac + n - reach <= 1
        images = itertools.product(*(range(lo_n[d], hi_n[d] + 1) for d in range(3)))
    else:
        images = [(0, 0, 0)]
    for n in images:
        f = frac + np.asarray(n, dtype=np.float64)
        lo = np.maximum(np.floor((f - reach) * shape).astype(int), 0)
        hi = np.minimum(np.floor((f + reach) * shape).astype(int) + 1, shape)
        if np.all(hi > lo):
            yield np.asarray(n, dtype=np.float64), [range(lo[d], hi[d]) for d in range(3)]


def _quadrature_accumulate(
    pos: np.ndarray,
    box: Box,
    sig: np.ndarray,
    chan: np.ndarray,
    wts: np.ndarray,
    nodes: int | None,
    grid: np.ndarray | None = None,
    dgrid: np.ndarray | None = None,
    grad: np.ndarray | None = None,
) -> None:
    """Gauss–Legendre integration over parallelepiped voxels, atom by atom, image by image.

    With ``grid`` given, adds w * integral of N over each voxel into ``grid[c]``.
    With ``dgrid``/``grad`` given, adds w * sum_v dgrid[c, v] * integral_v N (r - mu)/sigma^2
    into ``grad[atom]`` (= dL/dmu).
    """
    axes = box.axes
    jacobian = box.voxel_volume  # |det(axes)| / (nx ny nz): d^3r = J du dv dw per voxel
    # A sphere of radius R spans R * |column d of inv(axes)| in fractional coordinate d.
    frac_per_angstrom = np.linalg.norm(np.linalg.inv(axes), axis=0)
    fracs = box.fractional(pos)
    edge = float(np.max(np.linalg.norm(box.voxel_axes, axis=1)))
    for a in range(len(pos)):
        s = float(sig[a])
        n = nodes if nodes is not None else quadrature_order(edge, s)
        u, wq = _gauss_legendre_01(n)
        reach = CUTOFF_SIGMAS * s * frac_per_angstrom
        for shift, ranges in _image_windows(fracs[a], reach, box):
            centre = pos[a] + shift @ axes  # this image's Cartesian position, Å
            if grid is not None:
                vals = _window_integrals(box, centre, s, ranges, u, wq, jacobian)
                ix = np.ix_(*[np.asarray(r) for r in ranges])
                grid[chan[a]][ix] += wts[a] * vals
            else:
                gwin = dgrid[chan[a]][np.ix_(*[np.asarray(r) for r in ranges])]
                g = _window_integrals(box, centre, s, ranges, u, wq, jacobian, gwin)
                grad[a] += wts[a] * g


def _window_integrals(
    box: Box,
    centre: np.ndarray,
    s: float,
    ranges: list[range],
    u: np.ndarray,
    wq: np.ndarray,
    jacobian: float,
    gwin: np.ndarray | None = None,
) -> np.ndarray:
    """Quadrature over a block of voxels for one Gaussian N(centre, s^2 I).

    Without ``gwin``: returns (Wx, Wy, Wz) voxel integrals of N.
    With ``gwin`` (Wx, Wy, Wz): returns (3,) sum_v gwin[v] * integral_v N (r - centre)/s^2.

    The nodes of voxel (i, j, k) are r = origin + sum_d (i_d + u_p)/n_d * axes[d]
    (fractional coordinates), each with weight wq_p wq_q wq_r * jacobian.
    """
    n = len(u)
    shape = box.shape
    # Cartesian offset contributed by fractional coordinate d, for each (voxel, node).
    steps = []
    for d in range(3):
        f = (np.asarray(ranges[d], dtype=np.float64)[:, None] + u[None, :]) / shape[d]
        steps.append(f.reshape(-1, 1) * box.axes[d][None, :])  # (W_d * n, 3)
    base = box.origin - centre
    wy, wz = len(ranges[1]), len(ranges[2])
    norm = 1.0 / ((2.0 * math.pi) ** 1.5 * s**3)
    # Product weights of the 3D rule, laid out as (1, p, 1, q, 1, r) to match the nodes.
    w3 = (wq[:, None, None] * wq[None, :, None] * wq[None, None, :])[None, :, None, :, None, :]

    out = np.zeros((len(ranges[0]), wy, wz)) if gwin is None else np.zeros(3)
    per_voxel_x = n * (wy * n) * (wz * n) * 3
    step = max(1, _CHUNK_ELEMENTS // per_voxel_x)
    for i0 in range(0, len(ranges[0]), step):
        sx = steps[0][i0 * n : (i0 + step) * n]
        bx = len(sx) // n
        # r - mu at every node: (Lx, Ly, Lz, 3)
        disp = base + sx[:, None, None, :] + steps[1][None, :, None, :] + steps[2][None, None]
        dens = norm * np.exp(-0.5 * np.einsum("xyzc,xyzc->xyz", disp, disp) / (s * s))
        # (voxel i, node p, voxel j, node q, voxel k, node r)
        dens = dens.reshape(bx, n, wy, n, wz, n) * (w3 * jacobian)
        if gwin is None:
            out[i0 : i0 + bx] = dens.sum(axis=(1, 3, 5))
        else:
            coef = dens * gwin[i0 : i0 + bx, None, :, None, :, None]
            out += np.einsum("xyz,xyzc->c", coef.reshape(bx * n, wy * n, wz * n), disp) / (s * s)
    return out


def reference_structure(batch: Any, s: int, window: Any = None) -> np.ndarray:
    """(C, nx, ny, nz) float64 reference grid of structure ``s`` of a
    :class:`pgrid_cli.Batch` (its per-atom σ, channels and weights); with ``window`` =
    (start, size), only that window (:func:`reference_window`)."""
    a, b = int(batch.offsets[s]), int(batch.offsets[s + 1])
    args = (batch.positions[a:b], batch.box(s), batch.sigmas[a:b])
    rest = (batch.channels[a:b], batch.n_channels, batch.weights[a:b])
    if window is None:
        return reference_grid(*args, *rest)
    return reference_window(*args, *window, *rest)
