"""Steps 2 and 3 of the inversion: the squared error of one channel, refined with L-BFGS
on the kernel's gradient, and where atoms would be added or removed."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import minimize

from ..core.box import Box, minimum_image
from ..core.kernel import Batch, gradient_batch, render_batch
from .options import TRUNC_SIGMAS, InvertOptions
from .peaks import AtomProfile, face_spacing, subvoxel


class ChannelFit:
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
            margin = np.ceil(reach / face_spacing(box)).astype(np.int64) + 1
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
        return Batch.from_flat(
            pos,
            [0, len(pos)],
            np.zeros(len(pos), np.int32),
            self.sigma,
            None,
            self.box.origin,
            self.box.axes,
            [self.box.periodic],
            self.box.shape,
            1,
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
        """Shortest image of displacement vectors (M, 3) in a periodic box."""
        return minimum_image(diff, self.box.axes) if self.box.periodic else diff

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
        smooth = gaussian_filter(resid, sigma=self.sigma / face_spacing(self.box), mode=mode)
        shape = np.array(smooth.shape)
        sites = np.zeros((0, 3))
        for _ in range(k if need else 1):
            flat = int(np.argmax(smooth))
            if smooth.ravel()[flat] <= 0:
                break
            vox = np.array(np.unravel_index(flat, smooth.shape))[np.newaxis]
            frac = (vox + 0.5 + subvoxel(smooth, vox, self.box.periodic)) / shape
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
