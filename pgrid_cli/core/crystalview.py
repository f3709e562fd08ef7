"""Crystal views: which region of a crystal's infinite periodic density a grid shows.

* ``cell`` (the default): one unit cell, ``axes`` = the lattice, periodic (every image
  summed by the kernel). The voxel size is |a|/nx, so it varies from crystal to crystal.
* ``cube:L``: an axis-aligned cube of side L Å, centred on the cell centre
  (½(a + b + c) from the lattice origin), of the *infinite* periodic density: every
  lattice image of every atom whose Gaussian reaches the cube is an atom of an open
  (non-periodic) axis-aligned box. Same shape and resolution for every crystal; the
  axis-aligned voxels keep the kernel's exact separable path even for triclinic cells.

The images kept are those whose centre lies within :data:`REACH_SIGMAS`·σ of the cube
along every axis: the kernel truncates each Gaussian at ``_core.TRUNC_SIGMAS``·σ per axis
(docs/kernel.md), so an image farther out adds nothing to any voxel.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _core
from .box import Box, ShapeLike
from .errors import ParameterError

#: Reach of an atom's Gaussian in σ (the native kernel's truncation radius, plus a margin
#: for rounding): images farther than this outside the cube along an axis are left out.
REACH_SIGMAS = float(_core.TRUNC_SIGMAS) + 0.5

#: The crystal view choices (``cube:L`` takes the side L in Å).
CRYSTAL_VIEWS = ("cell", "cube:L")

#: Most image atoms one cube view may hold (a guard against a tiny cell in a huge cube).
MAX_IMAGE_ATOMS = 50_000_000


def parse_crystal_view(view: str) -> tuple[str, float]:
    """``("cell", 0)`` or ``("cube", L)`` from a crystal view string (``cell``, ``cube:L``).

    Raises :class:`~pgrid_cli.core.errors.ParameterError` naming the choices.
    """
    text = str(view).strip().lower()
    shown = repr(view).replace("{", "{{").replace("}", "}}")
    if text == "cell":
        return "cell", 0.0
    if text.startswith("cube:"):
        try:
            side = float(text.split(":", 1)[1])
        except ValueError:
            raise ParameterError(
                f"{{crystal_view}} must look like cube:20 (side in Å), got {shown}"
            ) from None
        if not np.isfinite(side) or side <= 0:
            raise ParameterError(
                f"{{crystal_view}} cube side must be a positive length in Å, got {shown}"
            )
        return "cube", side
    raise ParameterError(f"unknown {{crystal_view}} {shown}: use cell or cube:L (L in Å)")


def cell_centre(lattice: Any) -> np.ndarray:
    """(3,) float64, Å: the centre ½(a + b + c) of the unit cell whose rows are ``lattice``."""
    return 0.5 * np.asarray(lattice, dtype=np.float64).sum(axis=0)


@dataclass(frozen=True)
class CubeWindow:
    """The atoms and box of a cube view of one crystal.

    Attributes
    ----------
    box : Box, open, axes ``side·I`` (Å), the grid box
    positions : (K, 3) float64, Å, the image atoms that reach the cube
    index : (K,) int64, the atom of the cell each image comes from
    shifts : (K, 3) int64, its lattice translation n (position = atom + n @ lattice)
    """

    box: Box
    positions: np.ndarray
    index: np.ndarray
    shifts: np.ndarray


def cube_window(
    positions: Any,
    lattice: Any,
    side: float,
    shape: ShapeLike,
    sigma: float,
    centre: Any = None,
) -> CubeWindow:
    """The cube view of a crystal: an open axis-aligned cube of ``side`` Å around ``centre``
    (default :func:`cell_centre`) and every lattice image of ``positions`` (M, 3) Å (cell
    rows ``lattice`` (3, 3) Å) within :data:`REACH_SIGMAS`·``sigma`` Å of it per axis.

    Gridding ``window.positions`` in ``window.box`` gives the infinite periodic density on
    the cube (channels and weights follow ``window.index``).
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    lat = np.asarray(lattice, dtype=np.float64)
    c = cell_centre(lat) if centre is None else np.asarray(centre, dtype=np.float64)
    origin = c - 0.5 * side
    box = Box(origin, np.eye(3) * side, shape)
    reach = REACH_SIGMAS * float(sigma)
    lo, hi = origin - reach, origin + side + reach
    images, index, shifts = lattice_images(
        pos, lat, box, lambda img: np.all((img >= lo) & (img <= hi), axis=-1), reach
    )
    return CubeWindow(box, images, index, shifts)


def lattice_images(
    positions: np.ndarray,
    lattice: Any,
    box: Box,
    keep: Callable[[np.ndarray], np.ndarray],
    reach: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The lattice images of ``positions`` (M, 3) Å near ``box``: every translation by
    ``n @ lattice`` whose image could lie within ``reach`` Å of the box is tried, and
    ``keep`` (images (..., 3) Å → bool mask) says which are kept.

    Returns (images (K, 3) Å, atom index (K,) int64, shifts n (K, 3) int64).
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    lat = np.asarray(lattice, dtype=np.float64)
    if len(pos) == 0:
        return np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
    # Fractional extent (in the lattice) of the box's corners moved ± reach on every axis.
    unit = np.array(list(itertools.product((0.0, 1.0), repeat=3)))
    corners = box.origin + unit @ box.axes
    grown = (corners[:, None, :] + reach * (2 * unit - 1)[None, :, :]).reshape(-1, 3)
    inv = np.linalg.inv(lat)
    f_box = grown @ inv
    frac = pos @ inv
    first = np.floor(f_box.min(axis=0) - frac.max(axis=0)).astype(np.int64)
    last = np.ceil(f_box.max(axis=0) - frac.min(axis=0)).astype(np.int64)
    n_shifts = int(np.prod(last - first + 1))
    if n_shifts * len(pos) > MAX_IMAGE_ATOMS:
        raise ValueError(
            f"a box of {np.round(box.lengths, 3).tolist()} Å spans {n_shifts} cells of this "
            f"lattice ({n_shifts * len(pos)} image atoms, more than {MAX_IMAGE_ATOMS}): use a "
            f"smaller box"
        )
    keep_idx, keep_shift, keep_pos = [], [], []
    # One slab of shifts (fixed n_a) at a time keeps the temporaries small.
    rest = np.array(
        list(itertools.product(*(range(first[d], last[d] + 1) for d in (1, 2)))), dtype=np.int64
    )
    for na in range(first[0], last[0] + 1):
        shifts = np.concatenate([np.full((len(rest), 1), na, dtype=np.int64), rest], axis=1)
        img = pos[None, :, :] + (shifts @ lat)[:, None, :]  # (S, M, 3)
        s_idx, a_idx = np.nonzero(keep(img))
        keep_idx.append(a_idx)
        keep_shift.append(shifts[s_idx])
        keep_pos.append(img[s_idx, a_idx])
    return (
        np.concatenate(keep_pos).reshape(-1, 3),
        np.concatenate(keep_idx).astype(np.int64),
        np.concatenate(keep_shift).reshape(-1, 3),
    )
