"""Scoring a recovered structure against the original atoms."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..core.box import minimum_image


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
    """(len(a), len(b)) distances, minimum image if periodic."""
    diff = (a[:, None, :] - b[None, :, :]).reshape(-1, 3)
    if lattice is not None:
        diff = minimum_image(diff, lattice)
    return np.sqrt(np.sum(diff**2, axis=-1)).reshape(len(a), len(b))
