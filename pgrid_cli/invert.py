"""Inversion: density grids → atoms (the ParticleGrid paper, §IV; SPEC §7).

The grid of a structure is G[c] = Σ over atoms a of channel c of ``render(μ_a)`` (SPEC §3,
unit weights). :func:`invert_grid` recovers the atoms in three steps, channel by channel
(the squared error separates by channel, so channels are fitted independently):

1. **Peaks.** Voxels at or below a background cut are zeroed and the 0-dimensional
   persistent homology of the negated grid (cripser, sublevel filtration, voxels touching
   at a face, edge or corner are neighbours) gives one component per density maximum;
   maxima whose persistence above the cut reaches a threshold become atoms, placed at
   the sub-voxel maximum of a log-parabola through the peak voxel and its neighbours.
2. **Refinement.** The positions minimise L = ‖G − render(positions)‖² with L-BFGS-B and
   the core's analytic gradient (:func:`pgrid_cli.gradient_batch`). For molecules the
   loss is evaluated on a crop of the grid (the same voxel lattice) that holds every
   atom of the channel to the kernel's truncation radius, so it equals the full loss.
3. **Model selection.** Peaks miss atoms closer than about 2σ and noise makes spurious
   ones, so atoms are added where the residual shows unexplained density (the maximum of
   the residual smoothed with the atom's own Gaussian) and removed when they do not
   explain enough of it; every change is refined and kept only if it lowers
   ``J = L + λ·|n − Σ G[c]|`` with λ = ½·E₁, E₁ = ‖render(one atom)‖²: the channel
   integral (Σ G[c] = the number of atoms, for a box that holds them) is the prior on the
   count n, and an atom the integral does not ask for must explain at least half of its
   own density. Missing atoms are placed on the residual of the peaks before the first
   refinement, so their neighbours are not dragged towards them.

The cut and the persistence threshold (:class:`Levels`) are fractions of the peak height
of an isolated atom on a voxel corner (:class:`AtomProfile`, rendered exactly from σ and
the voxel lattice), raised to five standard deviations of the noise when the grid is
noisy (:func:`estimate_noise` measures it from the negative voxels a density cannot
have). Atoms are assumed to have unit weight (SPEC §1's default).

:func:`match_atoms` scores a recovered structure against the original atoms: a Hungarian
assignment per channel (minimum-image distances for periodic cells), the RMSD of the
matched pairs, the atoms recovered within a tolerance and whether the composition is
exact.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.ndimage import gaussian_filter
from scipy.optimize import linear_sum_assignment, minimize
from threadpoolctl import ThreadpoolController

from . import _core
from .box import Box
from .channels import ChannelSpec, atomic_number, element_symbol
from .grid import Batch, gradient_batch, grid, render_batch

__all__ = [
    "AtomProfile",
    "InversionError",
    "InversionResult",
    "InvertOptions",
    "Levels",
    "Match",
    "Peaks",
    "estimate_noise",
    "find_peaks",
    "invert_grid",
    "match_atoms",
]

#: Radius (in σ) to which the kernel renders an atom; crops keep atoms this far inside.
TRUNC_SIGMAS = float(_core.TRUNC_SIGMAS)

_blas: ThreadpoolController | None = None


def _one_blas_thread() -> Any:
    """Context limiting BLAS to one thread. The optimiser's and the loss's BLAS calls are
    tiny; OpenBLAS threads for them cost milliseconds each on a busy machine."""
    global _blas
    if _blas is None:
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


class InversionError(ValueError):
    """A grid that cannot be inverted (non-finite values, wrong shape, bad metadata)."""


@dataclass(frozen=True)
class InvertOptions:
    """Tuning of :func:`invert_grid`. Every threshold is a dimensionless fraction.

    Attributes
    ----------
    background : float
        Voxels at or below ``background × AtomProfile.peak_min`` are background,
        zeroed before the peak search (or below ``NOISE_SIGMAS`` × the noise level
        measured in the grid, if that is higher; see :class:`Levels`). 0.1 keeps an
        isolated atom's density out to 2.1σ from its centre.
    persistence : float
        A maximum becomes an initial atom when its persistence (height above the saddle
        where it merges with a higher maximum, or above the background) is at least
        ``persistence × peak_min`` (or ``NOISE_SIGMAS`` × the noise level). Two equal
        atoms of one channel 2.8σ apart (a C–C bond at σ = 0.5 Å) keep about 0.25 of
        the peak; noise of 1% of the maximum makes maxima of about 0.03.
    penalty : float
        An atom is kept only if it lowers the squared error by more than
        ``penalty × E₁`` (E₁: the squared norm of one rendered atom).
    max_atoms : int
        A channel whose integral asks for more atoms than this, or that has more
        maxima, is an error (a grid that is not a density of atoms, say all ones,
        must not run for hours).
    max_rounds : int
        Limit on add/remove rounds per channel.
    max_iter : int
        L-BFGS-B iteration limit per refinement.
    precision : float
        Refinement stops when positions are good to about ``precision × σ``.
    threads : int
        Native threads per render (1 when structures run in parallel processes).
    """

    background: float = 0.1
    persistence: float = 0.1
    penalty: float = 0.5
    max_atoms: int = 2000
    max_rounds: int = 50
    max_iter: int = 300
    precision: float = 1e-4
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("background", "persistence", "penalty", "precision"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 < v < 1.0):
                raise ValueError(f"{name} must be a fraction in (0, 1), got {v!r}")
        if self.max_rounds < 0 or min(self.max_iter, self.threads, self.max_atoms) < 1:
            raise ValueError("max_rounds must be ≥ 0; max_iter, max_atoms and threads ≥ 1")


@dataclass(frozen=True)
class AtomProfile:
    """What one isolated atom of width σ looks like on a box's voxel lattice.

    Attributes
    ----------
    peak_max : float
        Largest voxel value of an atom centred on a voxel centre.
    peak_min : float
        Largest voxel value of an atom on a voxel corner (the lowest peak an isolated
        atom can have).
    energy : float
        E₁ = Σ value² of one atom (the squared error an atom costs when missing).
    """

    peak_max: float
    peak_min: float
    energy: float

    @classmethod
    def of(cls, box: Box, sigma: float, threads: int = 1) -> AtomProfile:
        """Render one atom exactly (the core kernel) in a box of the same voxel shape."""
        h = box.voxel_axes
        # Voxels needed to hold the atom to the kernel's truncation radius on each axis:
        # the face spacing of a voxel along d is 1 / |column d of inv(voxel axes)|.
        spacing = 1.0 / np.linalg.norm(np.linalg.inv(h), axis=0)
        n = 2 * np.ceil(TRUNC_SIGMAS * sigma / spacing).astype(int) + 2
        local = Box(np.zeros(3), h * n[:, None], tuple(n))
        mid = n // 2
        centre = local.cartesian((mid + 0.5) / n)
        corner = local.cartesian(mid / n)
        g = grid(np.vstack([centre, corner]), local, sigma, channels=[0, 1], threads=threads)
        return cls(
            peak_max=float(g[0].max()),
            peak_min=float(g[1].max()),
            energy=float(np.sum(np.square(g[0], dtype=np.float64))),
        )

    def cut_radius(self, cut: float) -> float:
        """Distance (in σ) out to which an isolated atom stays above ``cut``."""
        return math.sqrt(2.0 * math.log(self.peak_min / cut)) if 0 < cut < self.peak_min else 0.0


#: Noise is told from density at this many standard deviations: a normal variable exceeds
#: it about once in 3.5 million voxels (a 64³ grid of 11 channels has 2.9 million).
NOISE_SIGMAS = 5.0
#: Negative voxels needed before their spread is trusted as the grid's noise level.
NOISE_MIN_SAMPLES = 1000


def estimate_noise(grid_: np.ndarray) -> float:
    """Standard deviation of additive noise in a grid, from its negative voxels.

    A density is never negative, so negative values are noise where there is no density;
    for zero-mean normal noise their magnitudes are half-normal, with median 0.6745·σ.
    Returns 0 when fewer than ``NOISE_MIN_SAMPLES`` of the voxels sampled (about 100 000,
    evenly strided) are negative (a clean grid, rounding aside).
    """
    flat = np.asarray(grid_).ravel()
    sample = np.ascontiguousarray(flat[:: max(1, len(flat) // 100_000)])
    neg = -sample[sample < 0]
    if len(neg) < NOISE_MIN_SAMPLES:
        return 0.0
    half = len(neg) // 2
    return float(np.partition(neg, half)[half]) / 0.6745  # the median


@dataclass(frozen=True)
class Levels:
    """The two levels of the peak search for one grid.

    Attributes
    ----------
    cut : float
        Voxels at or below it are background:
        ``max(background × peak_min, NOISE_SIGMAS × noise)``.
    persistence : float
        Least persistence, measured above ``cut``, of a maximum that becomes an atom:
        ``max(persistence × peak_min, NOISE_SIGMAS × noise)``.
    noise : float
        Estimated noise level (:func:`estimate_noise`), 0 for a clean grid.
    """

    cut: float
    persistence: float
    noise: float

    @classmethod
    def of(cls, profile: AtomProfile, options: InvertOptions, noise: float = 0.0) -> Levels:
        floor = NOISE_SIGMAS * noise
        return cls(
            cut=max(options.background * profile.peak_min, floor),
            persistence=max(options.persistence * profile.peak_min, floor),
            noise=noise,
        )


@dataclass(frozen=True)
class Peaks:
    """Density maxima of one channel found by persistent homology.

    Attributes
    ----------
    positions : (K, 3) float64, Å, sub-voxel maxima
    voxels : (K, 3) int64 voxel index of each maximum
    heights : (K,) float64 voxel value at the maximum
    persistence : (K,) float64 height above the saddle where the maximum merges with a
        higher one, or above the background cut for the highest of a blob; at least
        ``Levels.persistence`` (a maximum that merges far below its own height may be
        reported with that lower bound, see ``_persistent_maxima``)
    """

    positions: np.ndarray
    voxels: np.ndarray
    heights: np.ndarray
    persistence: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)


@dataclass
class InversionResult:
    """Atoms recovered from one grid.

    Attributes
    ----------
    positions : (M, 3) float64, Å, in the grid's frame; wrapped into the cell for
        periodic boxes
    channels : (M,) int32, channel of each atom
    symbols : list of M element symbols (``X`` for channels without an element)
    lattice : (3, 3) float64 cell rows (Å) for periodic boxes, else None
    counts : (C,) int64 atoms per channel
    expected : (C,) float64 Σ grid per channel (≈ atoms whose density the box holds)
    peaks : (C,) int64 persistent maxima per channel (before adding/removing)
    residual : float, ‖G − render(atoms)‖ / ‖G‖ over the whole grid (0 for an empty grid)
    added, removed : atoms added from the residual / removed as unneeded
    evaluations : renders + gradients spent in refinement
    timings : seconds spent on ``scan`` (validation, channel sums, maxima, noise level),
        ``peaks`` (background cut + cripser) and ``fit`` (refinement and model selection)
    """

    positions: np.ndarray
    channels: np.ndarray
    symbols: list[str]
    lattice: np.ndarray | None
    counts: np.ndarray
    expected: np.ndarray
    peaks: np.ndarray
    residual: float
    added: int = 0
    removed: int = 0
    evaluations: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def numbers(self) -> np.ndarray:
        """(M,) atomic numbers (0 for ``X``)."""
        return np.array([0 if s == "X" else atomic_number(s) for s in self.symbols], np.int64)

    def to_atoms(self) -> Any:
        """An :class:`ase.Atoms` (cell and pbc set for crystals), ``info`` copied."""
        from ase import Atoms

        atoms = Atoms(symbols=self.symbols, positions=self.positions)
        if self.lattice is not None:
            atoms.cell = self.lattice
            atoms.pbc = True
        atoms.info.update(self.info)
        return atoms


# ---------------------------------------------------------------------- validation
def check_grid(
    grid_: Any, box: Box, sigma: Any, channels: ChannelSpec | None
) -> tuple[np.ndarray, float]:
    """Validate one structure's grid and metadata; returns (float32 grid, σ).

    Raises :class:`InversionError` with a specific message otherwise.
    """
    if sigma is None:
        raise InversionError("no σ (sigma) given for this grid")
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise InversionError(f"σ must be a number of Å, got {sigma!r}") from None
    if not (math.isfinite(s) and s > 0):
        raise InversionError(f"σ must be a positive length in Å, got {sigma!r}")
    if channels is None:
        raise InversionError("no channel list given for this grid")
    g = np.asarray(grid_)
    if g.ndim != 4:
        raise InversionError(f"a grid must have shape (C, nx, ny, nz), got {g.shape}")
    if g.shape[1:] != box.shape:
        raise InversionError(f"grid shape {g.shape[1:]} does not match its box {box.shape}")
    if g.shape[0] != channels.n_channels:
        raise InversionError(
            f"grid has {g.shape[0]} channels but the channel list has "
            f"{channels.n_channels} ({','.join(channels.names)})"
        )
    if g.dtype.kind not in "fiu":
        raise InversionError(f"grid values must be numbers, got dtype {g.dtype}")
    g = np.ascontiguousarray(g, dtype=np.float32)
    return g, s


# ---------------------------------------------------------------------- peaks
def find_peaks(
    channel_grid: np.ndarray,
    box: Box,
    sigma: float,
    *,
    profile: AtomProfile | None = None,
    options: InvertOptions | None = None,
    levels: Levels | None = None,
) -> Peaks:
    """Persistent maxima of one channel (nx, ny, nz) of a grid (see :class:`Levels`;
    by default the noise level is measured in this channel).

    Periodic boxes are searched on the grid wrapped by about σ on every side, so maxima
    on the cell faces are found once, with their neighbourhood.
    """
    opts = options or InvertOptions()
    prof = profile or AtomProfile.of(box, sigma, opts.threads)
    g = np.ascontiguousarray(channel_grid, dtype=np.float32)
    lv = levels or Levels.of(prof, opts, estimate_noise(g))
    above = g > lv.cut
    if not above.any():
        return _no_peaks()
    return _find_peaks(g, box, sigma, lv, _bounds(above, 0))


def _find_peaks(
    g: np.ndarray,
    box: Box,
    sigma: float,
    levels: Levels,
    bounds: tuple[np.ndarray, np.ndarray],
) -> Peaks:
    """:func:`find_peaks` on a channel whose above-background voxels lie in ``bounds``."""
    cut = levels.cut
    shape = np.array(g.shape)
    if box.periodic:
        # Wrap a margin of about σ around the cell: every voxel of the cell then has its
        # neighbours, so its maxima are found once each. Persistence near the margin can
        # only come out larger (fewer paths to merge along); the model selection removes
        # what that lets through.
        pad = np.minimum(np.ceil(sigma / _face_spacing(box)).astype(int) + 1, shape)
        region = np.pad(g, [(p, p) for p in pad], mode="wrap").astype(np.float64)
        offset = -pad
    else:
        # Only the bounding box of the above-background voxels: cripser's cost grows
        # with the voxels it is given.
        lo, hi = bounds
        region = g[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float64)
        offset = lo
    # Heights above the background level: a voxel just above the cut is no maximum
    # that persists.
    region = np.where(region > cut, region - cut, 0.0)
    vox, heights, persistence = _persistent_maxima(region, levels.persistence)
    vox += offset
    heights += cut
    if box.periodic:
        keep = np.all((vox >= 0) & (vox < shape), axis=1)
        vox, heights, persistence = vox[keep], heights[keep], persistence[keep]
    order = np.argsort(-heights, kind="stable")
    vox, heights, persistence = vox[order], heights[order], persistence[order]
    frac = (vox + 0.5 + _subvoxel(g, vox, box.periodic)) / shape
    return Peaks(box.cartesian(frac), vox, heights, persistence)


def _persistent_maxima(
    region: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(voxels (K, 3), heights, persistence) of the maxima of ``region`` (background 0)
    whose persistence reaches ``threshold``.

    0-dimensional persistence of the superlevel sets, computed by cripser (the
    T-construction on the negated values: voxels touching at a face, edge or corner are
    neighbours). Two exact shortcuts keep cripser's input small:

    * blobs of above-background voxels only merge at the background, so each blob is
      computed alone, and a blob with a single maximum needs no computation (that
      maximum persists for its whole height);
    * in a blob whose lowest maximum has height h, every maximum that has not merged
      with a higher one by the level f = h − threshold persists at least ``threshold``:
      the blob is cut at f, and cripser runs only on the parts above f that still hold
      several maxima, the single-maximum parts being kept as they are.

    Which maxima reach ``threshold`` is exactly what one cripser run on all of
    ``region`` gives; the persistence of a maximum that merges below the cut level is
    reported as its height above that level (a lower bound, at least ``threshold``).
    """
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    _blob_maxima(region, threshold, np.zeros(3, np.int64), 0.0, True, out)
    if not out:
        return np.zeros((0, 3), np.int64), np.zeros(0), np.zeros(0)
    vox, h, p = (np.concatenate(parts) for parts in zip(*out, strict=True))
    keep = p >= threshold
    return vox[keep], h[keep], p[keep]


def _blob_maxima(
    region: np.ndarray,
    threshold: float,
    origin: np.ndarray,
    floor: float,
    may_cut: bool,
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    """Append (voxels, heights, persistence) of the maxima of ``region`` (values above
    ``floor``, shifted down by it; background 0) to ``out``; see _persistent_maxima."""
    labels, n = ndimage.label(region > 0, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return
    top = (region == ndimage.maximum_filter(region, size=3, mode="constant")) & (labels > 0)
    tops = np.argwhere(top)
    top_blob = labels[top]
    per_blob = np.bincount(top_blob, minlength=n + 1)
    single = per_blob[top_blob] == 1
    # Below a cut (floor > 0) a maximum that reaches the background persists at least
    # `threshold` (its blob's lowest maximum was `threshold` above the cut): say so
    # exactly, whatever the rounding of the shifted values.
    at_least = threshold if floor > 0 else 0.0
    if np.any(single):
        v = tops[single]
        h = region[v[:, 0], v[:, 1], v[:, 2]]
        out.append((v + origin, h + floor, np.maximum(h, at_least)))
    lowest = np.full(n + 1, np.inf)
    np.minimum.at(lowest, top_blob, region[top])
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if per_blob[k] <= 1:
            continue
        sub = np.where(labels[sl] == k, region[sl], 0.0)
        start = origin + np.array([s.start for s in sl], dtype=np.int64)
        cut = lowest[k] - threshold
        if may_cut and cut > 0:
            # Maxima that merge with a higher one below `cut` persist ≥ threshold.
            _blob_maxima(
                np.where(sub > cut, sub - cut, 0.0), threshold, start, floor + cut, False, out
            )
            continue
        # The blob alone, in a border of background two voxels wide whose corner is one
        # sentinel voxel higher than everything: the sentinel, touching only background,
        # is the component that never dies, so every maximum gets a finite death (at its
        # saddle, or at the background) and its own birth voxel. (cripser reports the
        # immortal component's birth voxel unreliably when maxima tie, e.g. atoms on
        # voxel corners.)
        sub = np.pad(sub, 2)
        sub[0, 0, 0] = 2.0 * float(sub.max()) + 1.0
        ph = np.asarray(_cripser().computePH_T(-sub, maxdim=0, location="birth"))
        ph = ph[(ph[:, 0] == 0) & (ph[:, 2] < 1e300)]
        persistence = ph[:, 2] - ph[:, 1]
        persistence[ph[:, 2] == 0] = np.maximum(persistence[ph[:, 2] == 0], at_least)
        out.append((ph[:, 3:6].astype(np.int64) - 2 + start, floor - ph[:, 1], persistence))


def _no_peaks() -> Peaks:
    return Peaks(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0), np.zeros(0))


def _face_spacing(box: Box) -> np.ndarray:
    """(3,) Å between neighbouring voxel faces along each lattice direction."""
    return 1.0 / np.linalg.norm(np.linalg.inv(box.voxel_axes), axis=0)


def _bounds(mask: np.ndarray, margin: Any) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) voxel bounds of the True voxels of a 3D mask, grown by ``margin``."""
    lo, hi = [], []
    for d in range(3):
        other = tuple(e for e in range(3) if e != d)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(idx[0])
        hi.append(idx[-1] + 1)
    m = np.broadcast_to(np.asarray(margin, dtype=np.int64), (3,))
    shape = np.array(mask.shape)
    return np.maximum(np.array(lo) - m, 0), np.minimum(np.array(hi) + m, shape)


def _subvoxel(g: np.ndarray, vox: np.ndarray, periodic: bool) -> np.ndarray:
    """(K, 3) offsets (voxels, within ±½) of the maxima of log-parabolas through each
    peak voxel and its two neighbours along each axis (exact for a sampled Gaussian)."""
    if len(vox) == 0:
        return np.zeros((0, 3))
    shape = np.array(g.shape)
    tiny = np.float32(np.finfo(np.float32).tiny)
    out = np.zeros((len(vox), 3))
    for d in range(3):
        step = np.zeros(3, np.int64)
        step[d] = 1
        idx = [vox - step, vox, vox + step]
        idx = [i % shape if periodic else np.clip(i, 0, shape - 1) for i in idx]
        lm, l0, lp = (np.log(np.maximum(g[i[:, 0], i[:, 1], i[:, 2]], tiny)) for i in idx)
        den = lm - 2.0 * l0 + lp
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(den < 0, 0.5 * (lm - lp) / den, 0.0)
        out[:, d] = np.clip(np.nan_to_num(off), -0.5, 0.5)
    return out


# ---------------------------------------------------------------------- refinement
class _ChannelFit:
    """Squared error of one channel on its fitting region, with its gradient.

    For open boxes the region is a crop of the grid on the same voxel lattice holding
    every voxel above the background cut plus the distance out to the kernel's
    truncation radius, so the loss of atoms placed at the maxima equals the full loss;
    periodic cells are fitted whole.
    """

    def __init__(
        self,
        target: np.ndarray,
        box: Box,
        sigma: float,
        profile: AtomProfile,
        opts: InvertOptions,
        cut: float,
        bounds: tuple[np.ndarray, np.ndarray] | None,
        expected: float,
        noise: float = 0.0,
    ) -> None:
        """``bounds``: [lo, hi) voxels holding the channel's voxels above ``cut``;
        ``expected``: Σ target over the whole grid; ``noise``: the grid's noise level."""
        self.sigma = sigma
        self.opts = opts
        self.profile = profile
        self.lam = opts.penalty * profile.energy
        self.limits: list[tuple[float, float]] | None = None  # per coordinate, for L-BFGS-B
        self.cropped = not (box.periodic or bounds is None)
        if not self.cropped:
            self.box = box
            self.target = target
        else:
            # Atoms lie within cut_radius·σ of the above-background voxels; the crop holds
            # them out to the kernel's truncation radius.
            reach = (TRUNC_SIGMAS - profile.cut_radius(cut)) * sigma
            margin = np.ceil(reach / _face_spacing(box)).astype(np.int64) + 1
            shape = np.array(box.shape)
            lo, hi = np.maximum(bounds[0] - margin, 0), np.minimum(bounds[1] + margin, shape)
            n = shape.astype(np.float64)
            self.box = Box(
                box.origin + (lo / n) @ box.axes,
                box.axes * ((hi - lo) / n)[:, None],
                tuple(int(v) for v in hi - lo),
            )
            self.target = np.ascontiguousarray(target[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
            if np.count_nonzero(self.box.axes - np.diag(np.diag(self.box.axes))) == 0:
                # Keep atoms inside the (axis-aligned) crop, where their density counts.
                lo_hi = np.sort([self.box.origin, self.box.origin + self.box.axes.sum(0)], 0)
                self.limits = [(float(a), float(b)) for a, b in lo_hi.T]
        self.crop_energy = float(np.dot(self.target.ravel(), self.target.ravel()))
        #: The squared error noise alone leaves on the region (``noise``: its σ), plus
        #: four standard deviations of that (a sum of N squared normals: √(2N)·σ²).
        n_vox = float(self.target.size)
        self.noise_loss = (n_vox + 4.0 * math.sqrt(2.0 * n_vox)) * noise**2
        self.expected = float(expected)
        self._out = np.empty((1, 1, *self.box.shape), dtype=np.float32)
        self.evaluations = 0
        # <render − target, atom a> for every atom of the positions last evaluated.
        self._overlap = np.zeros(0)
        self._overlap_at = np.zeros(0)

    # The squared error is scaled by 1/E₁ for the optimiser, so its tolerances are in
    # units of one atom's density whatever σ and the voxel size.
    def _batch(self, pos: np.ndarray) -> Batch:
        m = len(pos)
        return Batch(
            positions=np.ascontiguousarray(pos, dtype=np.float64).reshape(m, 3),
            offsets=np.array([0, m], dtype=np.int64),
            channels=np.zeros(m, np.int32),
            sigmas=np.full(m, self.sigma),
            weights=np.ones(m),
            origins=self.box.origin[np.newaxis],
            axes=self.box.axes[np.newaxis],
            periodic=np.array([self.box.periodic]),
            shape=self.box.shape,
            n_channels=1,
        )

    def difference(self, pos: np.ndarray) -> np.ndarray:
        """render(pos) − target on the region, (1, 1, nx', ny', nz') float32 (a buffer)."""
        out = self._out
        render_batch(self._batch(pos), out, threads=self.opts.threads)
        np.subtract(out[0, 0], self.target, out=out[0, 0])
        return out

    def _fg(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.evaluations += 1
        pos = x.reshape(-1, 3)
        d = self.difference(pos)
        flat = d.ravel()
        loss = float(np.dot(flat, flat))
        dpos, dw = gradient_batch(self._batch(pos), d, threads=self.opts.threads)
        # dw[a] = <render − target, atom a>: what removing atom a would change (below).
        self._overlap, self._overlap_at = dw, x.copy()
        scale = 1.0 / self.profile.energy
        return loss * scale, (2.0 * scale) * dpos.ravel()

    def refine(self, pos: np.ndarray) -> tuple[np.ndarray, float]:
        """Minimise L from ``pos`` (M, 3) Å with L-BFGS-B; returns (positions, L)."""
        if len(pos) == 0:
            return np.zeros((0, 3)), self.crop_energy
        res = minimize(
            self._fg,
            np.asarray(pos, dtype=np.float64).ravel(),
            jac=True,
            method="L-BFGS-B",
            bounds=None if self.limits is None else self.limits * len(pos),
            options={
                "maxiter": self.opts.max_iter,
                # f = L/E₁ ≈ δ²/(2σ²) for an atom δ off its optimum: stop once the
                # positions are good to precision·σ.
                "gtol": self.opts.precision / self.sigma,
                "ftol": 1e-3 * self.opts.precision**2,
            },
        )
        loss, _ = self._fg(res.x)  # the loss (and overlaps) of the returned positions
        return res.x.reshape(-1, 3), loss * self.profile.energy

    def removal_gain(self, pos: np.ndarray) -> np.ndarray:
        """(M,) how much L would grow if each atom of ``pos`` were dropped (without
        re-refining): ‖d − a‖² − ‖d‖² = E₁ − 2⟨d, a⟩ with d = render − target."""
        if len(pos) == 0:
            return np.zeros(0)
        x = np.asarray(pos, dtype=np.float64).ravel()
        if not np.array_equal(x, self._overlap_at):
            self._fg(x)
        return self.profile.energy - 2.0 * self._overlap

    def removal_candidates(self, pos: np.ndarray, excess: int) -> np.ndarray:
        """Indices of atoms to drop together, weakest first: each explains less than the
        penalty once the ones before it are gone (or is needed to bring the count down
        by ``excess``). Dropping atom a makes every other b look more useful by about
        2⟨a, b⟩ = 2·E₁·exp(−|a − b|²/4σ²) (the overlap of two Gaussians)."""
        gains = self.removal_gain(pos).copy()
        chosen: list[int] = []
        while len(chosen) < len(pos):
            a = int(np.argmin(gains))
            if not (gains[a] < self.lam or len(chosen) < excess):
                break
            chosen.append(a)
            gains[a] = np.inf
            d2 = np.sum(self._separation(pos - pos[a]) ** 2, axis=1)
            gains += 2.0 * self.profile.energy * np.exp(-d2 / (4.0 * self.sigma**2))
        return np.array(chosen, dtype=np.int64)

    def _separation(self, diff: np.ndarray) -> np.ndarray:
        """Shortest image of displacement vectors (M, 3) in a periodic box (nearest by
        rounding fractional coordinates; exact enough for overlaps)."""
        if not self.box.periodic:
            return diff
        frac = np.linalg.solve(self.box.axes.T, diff.T).T
        return (frac - np.round(frac)) @ self.box.axes

    def addition_sites(self, pos: np.ndarray, k: int, need: bool) -> np.ndarray:
        """Up to ``k`` positions (Å) where added atoms would explain the most unexplained
        density, chosen greedily (as CLEAN does in radio astronomy): the maximum of the
        residual target − render smoothed by the atom's own Gaussian (a matched filter),
        then that maximum minus the smoothed new atom (a Gaussian of width σ√2), and so
        on. Unless ``need`` (the channel integral says atoms are missing) only the best
        site is returned, and only if its exact gain without re-refinement,
        2·⟨residual, atom⟩ − E₁, exceeds the penalty of one atom."""
        resid = -self.difference(pos)[0, 0] if len(pos) else self.target.copy()
        mode = "wrap" if self.box.periodic else "constant"
        smooth = gaussian_filter(resid, sigma=self.sigma / _face_spacing(self.box), mode=mode)
        shape = np.array(smooth.shape)
        sites = np.zeros((0, 3))
        for _ in range(k if need else 1):
            flat = int(np.argmax(smooth))
            if smooth.ravel()[flat] <= 0:
                break
            vox = np.array(np.unravel_index(flat, smooth.shape))[np.newaxis]
            frac = (vox + 0.5 + _subvoxel(smooth, vox, self.box.periodic)) / shape
            site = self.box.cartesian(frac)
            sites = np.vstack([sites, site])
            if len(sites) < k:
                wide = self._batch(site)
                wide = dataclasses.replace(wide, sigmas=wide.sigmas * math.sqrt(2.0))
                render_batch(wide, self._out, threads=self.opts.threads)
                smooth -= self._out[0, 0]
        if not need and len(sites):
            # <residual, atom at the site>, exactly: dL/dw of L = Σ residual · render.
            _, overlap = gradient_batch(
                self._batch(sites), resid[np.newaxis, np.newaxis], threads=self.opts.threads
            )
            if 2.0 * overlap[0] - self.profile.energy <= self.lam:
                return np.zeros((0, 3))
        return sites


def _batch_limit(want: int, have: int) -> int:
    """Atoms to add in one go: the integral's deficit, but at most a few times what the
    peaks gave (a grid that is no density, say all ones, must not ask for millions)."""
    return max(min(want - have, 2 * have + 8), 1)


def _select_atoms(fit: _ChannelFit, start: np.ndarray) -> tuple[np.ndarray, float, int, int]:
    """Place, refine, then add/remove atoms while that lowers J = L + λ·|n − Σ G| (see the
    module doc). Returns (positions, L, atoms added, atoms removed)."""
    lam = fit.lam
    want = max(round(fit.expected), 0)
    pos = np.asarray(start, dtype=np.float64).reshape(-1, 3)
    added = removed = 0
    if len(pos) < want:
        # Atoms closer than ~2σ share one maximum: place the missing ones on the residual
        # of the peaks before refining, so the others are not dragged towards them.
        extra = fit.addition_sites(pos, _batch_limit(want, len(pos)), need=True)
        pos, added = np.vstack([pos, extra]), len(extra)
    pos, loss = fit.refine(pos)

    def cost(n: int, loss_: float) -> float:
        return loss_ + lam * abs(n - fit.expected)

    for _ in range(fit.opts.max_rounds):
        changed = False
        # Remove the atoms that explain less than the penalty (or the weakest ones, if
        # the integral says there are too many): all such at once, else the weakest.
        drop = fit.removal_candidates(pos, len(pos) - want)
        for d in [drop] if len(drop) <= 1 else [drop, drop[:1]]:
            trial, trial_loss = fit.refine(np.delete(pos, d, axis=0))
            if cost(len(trial), trial_loss) < cost(len(pos), loss):
                pos, loss, removed, changed = trial, trial_loss, removed + len(d), True
                break
        # Add atoms where density is unexplained: as many as the integral says are missing
        # at once (else the single best site).
        if loss > lam or len(pos) < want:
            sites = fit.addition_sites(pos, _batch_limit(want, len(pos)), len(pos) < want)
            for s in [sites] if len(sites) <= 1 else [sites, sites[:1]]:
                if len(s) == 0:
                    continue
                trial, trial_loss = fit.refine(np.vstack([pos, s]))
                if cost(len(trial), trial_loss) < cost(len(pos), loss):
                    pos, loss, added, changed = trial, trial_loss, added + len(s), True
                    break
        if not changed and len(pos) and loss > fit.noise_loss + 0.01 * fit.profile.energy:
            # The count is right but density is left unexplained: atoms sit in a local
            # minimum (one covering for two sites). Add one at the best residual site,
            # refine, drop the atom that explains least, refine; keep it if better.
            site = fit.addition_sites(pos, 1, need=True)
            if len(site):
                grown, _ = fit.refine(np.vstack([pos, site]))
                drop = int(np.argmin(fit.removal_gain(grown)))
                trial, trial_loss = fit.refine(np.delete(grown, drop, axis=0))
                if trial_loss < loss - 0.01 * fit.profile.energy:
                    pos, loss, changed = trial, trial_loss, True
                    added, removed = added + 1, removed + 1
        if not changed:
            break
    return pos, loss, added, removed


# ---------------------------------------------------------------------- the whole grid
def invert_grid(
    grid_: Any,
    box: Box,
    sigma: float,
    channels: ChannelSpec,
    *,
    element: str | None = None,
    options: InvertOptions | None = None,
) -> InversionResult:
    """Recover the atoms of one structure from its density grid.

    Parameters
    ----------
    grid_ : (C, nx, ny, nz) array (float32 or float16)
        The densities, SPEC §3 (unit atom weights).
    box : Box
        The grid's box; periodic boxes give wrapped positions and a lattice.
    sigma : float
        Gaussian standard deviation (Å) the grid was made with.
    channels : ChannelSpec
        Channel names; elements of the atoms come from them.
    element : str, optional
        Element symbol for channels that name none (``all``, ``*``); default ``X``.
    options : InvertOptions, optional

    Returns
    -------
    InversionResult

    Raises
    ------
    InversionError
        For a grid whose shape does not match its box or channels, non-finite values,
        a missing / invalid σ or channel list, or a channel asking for more than
        ``options.max_atoms`` atoms.
    """
    opts = options or InvertOptions()
    g, sigma = check_grid(grid_, box, sigma, channels)
    with _one_blas_thread():
        return _invert(g, box, sigma, channels, element, opts)


def _invert(
    g: np.ndarray,
    box: Box,
    sigma: float,
    channels: ChannelSpec,
    element: str | None,
    opts: InvertOptions,
) -> InversionResult:
    t_start = time.perf_counter()
    fill = "X" if element is None else _element(element)
    n_ch = g.shape[0]
    # float32 pairwise sums: ~1e-6 relative, plenty to count atoms, and a NaN or inf
    # anywhere shows in its channel's sum.
    sums = g.reshape(n_ch, -1).sum(axis=1).astype(np.float64)
    if not np.all(np.isfinite(sums)):
        bad = [channels.names[c] for c in np.flatnonzero(~np.isfinite(sums))]
        what = "NaN or infinite values" if not np.all(np.isfinite(g)) else "values too large"
        raise InversionError(f"grid has {what} (channel {', '.join(bad)})")
    profile = AtomProfile.of(box, sigma, opts.threads)
    levels = Levels.of(profile, opts, estimate_noise(g))
    cut = levels.cut
    positions: list[np.ndarray] = []
    chans: list[np.ndarray] = []
    counts = np.zeros(n_ch, np.int64)
    peaks_found = np.zeros(n_ch, np.int64)
    # Squared norms per channel; the residual starts as "nothing explained".
    energy = np.array([float(np.dot(gc, gc)) for gc in g.reshape(n_ch, -1)])
    resid = energy.copy()
    added = removed = evals = 0
    maxima = g.reshape(n_ch, -1).max(axis=1)
    timings = {"scan": time.perf_counter() - t_start, "peaks": 0.0, "fit": 0.0}
    for c in range(n_ch):
        if maxima[c] <= cut:
            continue  # nothing in this channel stands out of the background
        _check_count(sums[c], "integrates to", channels.names[c], opts)
        t0 = time.perf_counter()
        bounds = _bounds(g[c] > cut, 0)
        peaks = _find_peaks(g[c], box, sigma, levels, bounds)
        _check_count(len(peaks), "has", channels.names[c], opts, " maxima")
        t1 = time.perf_counter()
        fit = _ChannelFit(g[c], box, sigma, profile, opts, cut, bounds, sums[c], levels.noise)
        pos, loss, a, r = _select_atoms(fit, peaks.positions)
        timings["peaks"] += t1 - t0
        timings["fit"] += time.perf_counter() - t1
        peaks_found[c] = len(peaks)
        counts[c] = len(pos)
        added, removed, evals = added + a, removed + r, evals + fit.evaluations
        # Outside the fitting region the residual is the target itself (the atoms'
        # density lies inside it).
        resid[c] = loss + (max(energy[c] - fit.crop_energy, 0.0) if fit.cropped else 0.0)
        positions.append(pos)
        chans.append(np.full(len(pos), c, np.int32))
    pos_all = np.concatenate(positions) if positions else np.zeros((0, 3))
    chan_all = np.concatenate(chans) if chans else np.zeros(0, np.int32)
    lattice = None
    if box.periodic:
        frac = box.fractional(pos_all)
        frac -= np.floor(frac)
        frac[frac > 1.0 - 1e-12] = 0.0  # 1 − 1e-17 is the same site as 0
        pos_all = box.cartesian(frac)
        lattice = np.array(box.axes)
    symbols = [channels.element_of_channel(int(c), default=fill) for c in chan_all]
    total = float(energy.sum())
    residual = math.sqrt(max(float(resid.sum()), 0.0) / total) if total > 0 else 0.0
    return InversionResult(
        positions=pos_all,
        channels=chan_all,
        symbols=symbols,
        lattice=lattice,
        counts=counts,
        expected=sums,
        peaks=peaks_found,
        residual=residual,
        added=added,
        removed=removed,
        evaluations=evals,
        timings=timings,
    )


def _check_count(n: float, verb: str, name: str, opts: InvertOptions, what: str = "") -> None:
    if n > opts.max_atoms:
        raise InversionError(
            f"channel {name} {verb} {n:.0f}{what}, more than max_atoms = {opts.max_atoms}: "
            f"not a density of unit-weight atoms with this σ?"
        )


def _element(symbol: str) -> str:
    return element_symbol(atomic_number(symbol))


# ---------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class Match:
    """A recovered structure scored against the original atoms.

    Attributes
    ----------
    rmsd : float, Å, over the Hungarian-matched pairs (nan when nothing matched)
    within : int, original atoms whose matched partner is within ``tolerance``
    n_reference : int, original atoms
    exact_composition : bool, every channel has exactly the original number of atoms
    max_deviation : float, Å, the largest matched distance (nan when nothing matched)
    tolerance : float, Å
    """

    rmsd: float
    within: int
    n_reference: int
    exact_composition: bool
    max_deviation: float
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rmsd": _json_float(self.rmsd),
            "within": self.within,
            "n_reference": self.n_reference,
            "exact_composition": self.exact_composition,
            "max_deviation": _json_float(self.max_deviation),
            "tolerance": self.tolerance,
        }


def _json_float(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def match_atoms(
    positions: Any,
    channels: Any,
    ref_positions: Any,
    ref_channels: Any,
    *,
    lattice: Any = None,
    tolerance: float = 0.1,
) -> Match:
    """Score recovered atoms against reference atoms, channel by channel.

    Parameters
    ----------
    positions, ref_positions : (M, 3), (R, 3) Å
    channels, ref_channels : (M,), (R,) channel of each atom (compare like with like:
        ``ChannelSpec.assign`` the reference atomic numbers)
    lattice : (3, 3) rows (Å) for periodic cells: distances use the minimum image
    tolerance : Å, the distance under which a reference atom counts as recovered
    """
    p = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    q = np.asarray(ref_positions, dtype=np.float64).reshape(-1, 3)
    c = np.asarray(channels).reshape(-1)
    rc = np.asarray(ref_channels).reshape(-1)
    lat = None if lattice is None else np.asarray(lattice, dtype=np.float64)
    exact = True
    dists: list[np.ndarray] = []
    for ch in np.union1d(c, rc):
        a, b = p[c == ch], q[rc == ch]
        exact &= len(a) == len(b)
        if len(a) == 0 or len(b) == 0:
            continue
        d = _distances(b, a, lat)
        rows, cols = linear_sum_assignment(d)
        dists.append(d[rows, cols])
    dd = np.concatenate(dists) if dists else np.zeros(0)
    return Match(
        rmsd=float(np.sqrt(np.mean(dd**2))) if len(dd) else math.nan,
        within=int(np.sum(dd <= tolerance)),
        n_reference=len(q),
        exact_composition=bool(exact),
        max_deviation=float(dd.max()) if len(dd) else math.nan,
        tolerance=float(tolerance),
    )


def _distances(a: np.ndarray, b: np.ndarray, lattice: np.ndarray | None) -> np.ndarray:
    """(len(a), len(b)) distances, minimum image over the 27 nearest cells if periodic."""
    diff = a[:, None, :] - b[None, :, :]
    if lattice is None:
        return np.sqrt(np.sum(diff**2, axis=-1))
    frac = np.linalg.solve(lattice.T, diff.reshape(-1, 3).T).T
    frac -= np.round(frac)
    best = np.full(len(frac), np.inf)
    for shift in itertools.product((-1, 0, 1), repeat=3):
        cart = (frac + np.array(shift)) @ lattice
        best = np.minimum(best, np.sum(cart**2, axis=1))
    return np.sqrt(best).reshape(len(a), len(b))


def _cripser() -> Any:
    """cripser, imported on first use: its package imports torch when torch is installed,
    which would cost every ``pgrid`` command a second of start-up."""
    import cripser

    return cripser
