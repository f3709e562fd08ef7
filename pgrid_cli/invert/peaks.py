"""Step 1 of the inversion: atoms from the persistent maxima of the grid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..core.box import Box
from ..core.kernel import grid
from .options import TRUNC_SIGMAS, InvertOptions


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
    return find_channel_peaks(g, box, sigma, lv, region_bounds(above, 0))


def find_channel_peaks(
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
        pad = np.minimum(np.ceil(sigma / face_spacing(box)).astype(int) + 1, shape)
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
    frac = (vox + 0.5 + subvoxel(g, vox, box.periodic)) / shape
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
        ph = np.asarray(cripser_module().computePH_T(-sub, maxdim=0, location="birth"))
        ph = ph[(ph[:, 0] == 0) & (ph[:, 2] < 1e300)]
        persistence = ph[:, 2] - ph[:, 1]
        persistence[ph[:, 2] == 0] = np.maximum(persistence[ph[:, 2] == 0], at_least)
        out.append((ph[:, 3:6].astype(np.int64) - 2 + start, floor - ph[:, 1], persistence))


def _no_peaks() -> Peaks:
    return Peaks(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0), np.zeros(0))


def face_spacing(box: Box) -> np.ndarray:
    """(3,) Å between neighbouring voxel faces along each lattice direction."""
    return 1.0 / np.linalg.norm(np.linalg.inv(box.voxel_axes), axis=0)


def region_bounds(mask: np.ndarray, margin: Any) -> tuple[np.ndarray, np.ndarray]:
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


def subvoxel(g: np.ndarray, vox: np.ndarray, periodic: bool) -> np.ndarray:
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


def cripser_module() -> Any:
    """cripser, imported on first use: its package imports torch when torch is installed,
    which would cost every ``pgrid`` command a second of start-up."""
    import cripser

    return cripser
