"""The inversion's options, result and input checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from .. import _core
from ..core.box import Box
from ..core.channels import ChannelSpec, atomic_number
from ..core.kernel import check_sigma

TRUNC_SIGMAS = float(_core.TRUNC_SIGMAS)

_blas: ThreadpoolController | None = None


def one_blas_thread() -> Any:
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
        s = check_sigma(sigma, "σ")
    except ValueError as exc:
        raise InversionError(str(exc)) from None
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
