"""The inversion driver: peaks, refinement and model selection for every channel."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..core.box import Box
from ..core.channels import ChannelSpec, atomic_number, element_symbol
from .fit import ChannelFit
from .options import InversionError, InversionResult, InvertOptions, check_grid, one_blas_thread
from .peaks import AtomProfile, Levels, estimate_noise, find_channel_peaks, region_bounds


def _batch_limit(want: int, have: int) -> int:
    """Atoms to add in one go: the integral's deficit, but at most a few times what the
    peaks gave (a grid that is no density, say all ones, must not ask for millions)."""
    return max(min(want - have, 2 * have + 8), 1)


def _select_atoms(fit: ChannelFit, start: np.ndarray) -> tuple[np.ndarray, float, int, int]:
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
        The densities, docs/format.md §3 (unit atom weights).
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
    with one_blas_thread():
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
        bounds = region_bounds(g[c] > cut, 0)
        peaks = find_channel_peaks(g[c], box, sigma, levels, bounds)
        _check_count(len(peaks), "has", channels.names[c], opts, " maxima")
        t1 = time.perf_counter()
        fit = ChannelFit(g[c], box, sigma, profile, opts, cut, bounds, sums[c], levels.noise)
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
