"""Typed atoms as particles: an atom in several channels becomes one particle per channel.

A typer (:mod:`pgrid_cli.typers`) gives each atom m a weight ``M[m, c]`` in each channel c
(0: absent). The kernel grids particles — a position, one channel, one weight — so a typed
structure is expanded: atom m in channel c with weight ``w_m · M[m, c]`` for every
non-zero entry (``w_m`` the structure's own weight, e.g. a site occupancy; 1 by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .channels import TypingError


@dataclass(frozen=True)
class Particles:
    """The particles of one typed structure.

    Attributes
    ----------
    positions : (P, 3) float64, Å
    channels : (P,) int32, the channel of each particle
    weights : (P,) float64, may be negative in a signed channel (partial charges)
    atoms : (P,) int64, the atom each particle comes from
    """

    positions: np.ndarray
    channels: np.ndarray
    weights: np.ndarray
    atoms: np.ndarray

    def __len__(self) -> int:
        return len(self.atoms)


def signed_channels(typer: Any, n: int) -> tuple[bool, ...]:
    """Which of a typer's ``n`` channels may hold negative weights: its
    ``signed_channels`` when it has them (combined typers), else ``signed`` for all."""
    return tuple(bool(x) for x in getattr(typer, "signed_channels", (bool(typer.signed),) * n))


def check_memberships(
    memberships: Any, n_atoms: int, names: tuple[str, ...], signed: tuple[bool, ...]
) -> np.ndarray:
    """``memberships`` as a (M, C) float64 array, checked: its shape, finite values, and
    negative values only in the signed channels. Raises TypingError."""
    m = np.asarray(memberships, dtype=np.float64)
    if m.shape != (n_atoms, len(names)):
        raise TypingError(
            f"the typer gave memberships of shape {m.shape}, expected ({n_atoms}, {len(names)})"
        )
    if not np.all(np.isfinite(m)):
        atom, chan = np.argwhere(~np.isfinite(m))[0]
        raise TypingError(f"non-finite weight for atom {atom} in channel {names[chan]}")
    negative = (m < 0) & ~np.asarray(signed, dtype=bool)[np.newaxis, :]
    if np.any(negative):
        atom, chan = np.argwhere(negative)[0]
        raise TypingError(
            f"negative weight {m[atom, chan]:g} for atom {atom} in the unsigned channel "
            f"{names[chan]}"
        )
    return m


def entries(
    memberships: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero entries of (M, C) ``memberships`` in atom then channel order: (atoms
    (P,) int64, channels (P,) int64, weights (P,) float64 = membership × the atom's
    weight, ``weights`` (M,) or None for 1)."""
    atoms, chans = np.nonzero(memberships)
    w = memberships[atoms, chans]
    if weights is not None:
        w = w * np.asarray(weights, dtype=np.float64)[atoms]
    return atoms, chans, np.ascontiguousarray(w, dtype=np.float64)


def expand(
    memberships: np.ndarray,
    positions: np.ndarray,
    weights: np.ndarray | None = None,
    keep: np.ndarray | None = None,
) -> Particles:
    """The particles of atoms with (M, C) ``memberships`` at (M, 3) ``positions`` (Å),
    atom weights (M,) (None: 1) and ``keep`` (M,) bool (None: every atom), in atom order
    then channel order."""
    m = memberships if keep is None else memberships * keep[:, np.newaxis]
    atoms, chans, w = entries(m, weights)
    return Particles(
        np.ascontiguousarray(np.asarray(positions, dtype=np.float64)[atoms]).reshape(-1, 3),
        chans.astype(np.int32),
        w,
        atoms.astype(np.int64),
    )
