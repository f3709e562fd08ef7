"""The grid box: where a grid sits in space (docs/format.md, "Boxes").

A :class:`Box` is a value: ``origin`` (Å, the corner of voxel (0,0,0)), ``axes``
(Å, rows a, b, c are the edge vectors of the whole box), ``shape`` (nx, ny, nz) and
``periodic``. Voxel (i, j, k) is the parallelepiped
``origin + (i+u)/nx·a + (j+v)/ny·b + (k+w)/nz·c`` for u, v, w in [0, 1].

Molecule boxes come from :meth:`Box.fit`, :meth:`Box.tight` and :meth:`Box.cube`
(or :meth:`Box.for_molecule` with a ``"fit" | "tight" | "cube:L"`` string); crystal
boxes from :meth:`Box.from_lattice`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _core

ShapeLike = int | Sequence[int]

#: Relative tolerance under which two edge vectors count as orthogonal. Orthogonal
#: boxes take the exact separable path of the kernel; others are integrated by
#: quadrature (docs/format.md §3).
ORTHOGONAL_RTOL = 1e-9


def normalize_shape(shape: ShapeLike) -> tuple[int, int, int]:
    """Turn ``32`` or ``(32, 32, 48)`` into a validated ``(nx, ny, nz)`` tuple."""
    if isinstance(shape, (int, np.integer)):
        dims = (int(shape),) * 3
    else:
        try:
            dims = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise ValueError(f"grid shape must be an int or three ints, got {shape!r}") from None
        if len(dims) != 3 or any(float(s) != d for s, d in zip(shape, dims, strict=False)):
            raise ValueError(f"grid shape must be an int or three ints, got {shape!r}")
    if any(d < 1 for d in dims):
        raise ValueError(f"grid shape must be positive, got {dims}")
    return dims  # type: ignore[return-value]


def _as_positions(positions: Any) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape (M, 3), got {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions contain NaN or infinite coordinates")
    return pos


def _float_bounds(positions: Any) -> tuple[float, float, float, float, float, float]:
    """(lo_x, lo_y, lo_z, hi_x, hi_y, hi_z), Å, of (M, 3) positions in one native pass;
    ValueError for another shape, no atoms, or a NaN or infinite coordinate."""
    pos = positions
    if not (type(pos) is np.ndarray and pos.dtype == np.float64 and pos.flags.c_contiguous):
        pos = np.ascontiguousarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape (M, 3), got {pos.shape}")
    return _core.bounds(pos)


def _bounds(positions: Any) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), (3,) float64 Å each: the bounding box of :func:`_float_bounds`."""
    b = _float_bounds(positions)
    return np.array(b[:3]), np.array(b[3:])


class Box:
    """A grid box: origin (Å), edge vectors (Å), voxel counts and periodicity.

    Parameters
    ----------
    origin : array_like, shape (3,)
        Cartesian position (Å) of the corner of voxel (0, 0, 0).
    axes : array_like, shape (3, 3)
        Rows are the box edge vectors a, b, c (Å) of the *whole* box.
    shape : int or (int, int, int)
        Voxels along a, b, c.
    periodic : bool
        Whether the box is one periodic cell (crystals): densities then include
        every lattice image.
    """

    __slots__ = ("_axes", "_origin", "_periodic", "_shape")

    def __init__(self, origin: Any, axes: Any, shape: ShapeLike, periodic: bool = False) -> None:
        o = np.array(origin, dtype=np.float64).reshape(-1)
        a = np.array(axes, dtype=np.float64)
        if o.shape != (3,):
            raise ValueError(f"origin must have 3 components, got shape {o.shape}")
        if a.shape != (3, 3):
            raise ValueError(f"axes must be a 3x3 matrix (rows a, b, c), got shape {a.shape}")
        if not (np.all(np.isfinite(o)) and np.all(np.isfinite(a))):
            raise ValueError("box origin and axes must be finite")
        lengths = np.linalg.norm(a, axis=1)
        det = float(np.linalg.det(a))
        if np.any(lengths <= 0) or abs(det) <= 1e-12 * float(np.prod(lengths)):
            raise ValueError("box axes are degenerate (zero length or coplanar)")
        o.flags.writeable = False
        a.flags.writeable = False
        self._origin = o
        self._axes = a
        self._shape = normalize_shape(shape)
        self._periodic = bool(periodic)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def fit(cls, positions: Any, shape: ShapeLike = 32, padding: float = 2.0) -> Box:
        """The paper's box: a cube centred on the atoms' bounding-box centre.

        Side = largest extent + 2·padding (Å), so the resolution adapts per molecule.
        """
        _check_padding(padding)
        lx, ly, lz, hx, hy, hz = _float_bounds(positions)
        side = max(hx - lx, hy - ly, hz - lz) + 2.0 * padding
        return cls._centred_cube(((lx + hx) / 2.0, (ly + hy) / 2.0, (lz + hz) / 2.0), side, shape)

    @classmethod
    def tight(cls, positions: Any, shape: ShapeLike = 32, padding: float = 2.0) -> Box:
        """Per-axis bounding box ± padding (Å); voxels need not be cubic."""
        _check_padding(padding)
        lo, hi = _bounds(positions)
        lengths = (hi - lo) + 2.0 * padding
        if np.any(lengths <= 0):
            raise ValueError("a tight box with zero padding needs atoms spread along every axis")
        return cls(lo - padding, np.diag(lengths), shape)

    @classmethod
    def cube(cls, positions: Any, side: float, shape: ShapeLike = 32) -> Box:
        """A fixed cube of ``side`` Å centred on the atoms' bounding-box centre.

        The resolution is the same for every molecule; atoms outside the cube still
        contribute the part of their density inside it.
        """
        if not np.isfinite(side) or side <= 0:
            raise ValueError(f"cube side must be a positive length in Å, got {side!r}")
        lx, ly, lz, hx, hy, hz = _float_bounds(positions)
        centre = ((lx + hx) / 2.0, (ly + hy) / 2.0, (lz + hz) / 2.0)
        return cls._centred_cube(centre, float(side), shape)

    @classmethod
    def from_lattice(
        cls, lattice: Any, shape: ShapeLike = 32, origin: Any = (0.0, 0.0, 0.0)
    ) -> Box:
        """One periodic unit cell: ``lattice`` rows are the cell vectors a, b, c (Å)."""
        return cls(origin, lattice, shape, periodic=True)

    @classmethod
    def for_molecule(
        cls, kind: str, positions: Any, shape: ShapeLike = 32, padding: float = 2.0
    ) -> Box:
        """Build a molecule box from a box choice: ``fit``, ``tight`` or ``cube:L``."""
        name, side = parse_box_kind(kind)
        if name == "fit":
            return cls.fit(positions, shape, padding)
        if name == "tight":
            return cls.tight(positions, shape, padding)
        return cls.cube(positions, side, shape)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Box:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(d["origin"], d["axes"], d["shape"], bool(d.get("periodic", False)))
        except KeyError as exc:
            raise ValueError(f"box description lacks {exc.args[0]!r}") from None

    @classmethod
    def _centred_cube(cls, centre: Any, side: float, shape: ShapeLike) -> Box:
        """The cube of ``side`` Å centred on ``centre`` (three floats, Å), computed in
        Python floats: the float64 operations of ``centre - side / 2.0`` on arrays, in a
        tenth of the time of small-array NumPy."""
        half = side / 2.0
        cx, cy, cz = (float(c) for c in centre)
        ox, oy, oz = cx - half, cy - half, cz - half
        safe = _SAFE_SIDE[0] <= side <= _SAFE_SIDE[1]
        if not (safe and math.isfinite(ox) and math.isfinite(oy) and math.isfinite(oz)):
            return cls((ox, oy, oz), np.eye(3) * side, shape)  # the checks name what is wrong
        # A cube of finite, moderate side: __init__'s checks (finite, non-degenerate)
        # cannot fail, so skip them (norms and a determinant cost more than gridding a
        # small molecule). Same values as __init__ would store.
        box = object.__new__(cls)
        origin = np.array((ox, oy, oz))
        axes = np.zeros((3, 3))
        axes[0, 0] = axes[1, 1] = axes[2, 2] = side
        origin.flags.writeable = False
        axes.flags.writeable = False
        box._origin = origin
        box._axes = axes
        box._shape = normalize_shape(shape)
        box._periodic = False
        return box

    # ------------------------------------------------------------------ properties
    @property
    def origin(self) -> np.ndarray:
        """(3,) float64, Å: corner of voxel (0, 0, 0)."""
        return self._origin

    @property
    def axes(self) -> np.ndarray:
        """(3, 3) float64, Å: rows are the box edge vectors a, b, c."""
        return self._axes

    @property
    def shape(self) -> tuple[int, int, int]:
        """(nx, ny, nz): voxels along a, b, c."""
        return self._shape

    @property
    def periodic(self) -> bool:
        """True for a periodic cell (image sums), False for an open box."""
        return self._periodic

    @property
    def lengths(self) -> np.ndarray:
        """(3,) float64, Å: lengths of a, b, c."""
        return np.linalg.norm(self._axes, axis=1)

    @property
    def voxel_axes(self) -> np.ndarray:
        """(3, 3) float64, Å: edge vectors of one voxel (rows)."""
        return self._axes / np.asarray(self._shape, dtype=np.float64)[:, None]

    @property
    def volume(self) -> float:
        """Box volume in Å³."""
        return float(abs(np.linalg.det(self._axes)))

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel in Å³."""
        return self.volume / float(np.prod(self._shape))

    @property
    def center(self) -> np.ndarray:
        """(3,) float64, Å: centre of the box."""
        return self._origin + 0.5 * self._axes.sum(axis=0)

    @property
    def is_orthogonal(self) -> bool:
        """True when a, b, c are mutually perpendicular (the exact separable case)."""
        a = self._axes / self.lengths[:, None]
        g = a @ a.T
        return bool(np.all(np.abs(g - np.eye(3)) <= ORTHOGONAL_RTOL))

    # ------------------------------------------------------------------ conversions
    def fractional(self, positions: Any) -> np.ndarray:
        """(M, 3) fractional coordinates of Cartesian ``positions`` (Å) in this box."""
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        return np.linalg.solve(self._axes.T, (pos - self._origin).T).T

    def cartesian(self, fractional: Any) -> np.ndarray:
        """(M, 3) Cartesian positions (Å) of fractional coordinates in this box."""
        f = np.asarray(fractional, dtype=np.float64).reshape(-1, 3)
        return self._origin + f @ self._axes

    def voxel_centers(self) -> np.ndarray:
        """(nx, ny, nz, 3) float64 Cartesian centres of every voxel (Å)."""
        idx = [(np.arange(n) + 0.5) / n for n in self._shape]
        fu, fv, fw = np.meshgrid(*idx, indexing="ij")
        frac = np.stack([fu, fv, fw], axis=-1)
        return self._origin + frac @ self._axes

    def contains(self, positions: Any, margin: float = 0.0) -> np.ndarray:
        """(M,) bool: which positions lie at least ``margin`` Å inside every face."""
        frac = self.fractional(positions)
        # Distance to the face pair d is measured perpendicular to it: the face spacing
        # (cell height) along d is 1 / |column d of inv(axes)|.
        m = margin * np.linalg.norm(np.linalg.inv(self._axes), axis=0)
        return np.all((frac >= m) & (frac <= 1.0 - m), axis=1)

    def with_shape(self, shape: ShapeLike) -> Box:
        """The same region of space with a different voxel count."""
        return Box(self._origin, self._axes, shape, self._periodic)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (lists of floats), inverse of :meth:`from_dict`."""
        return {
            "origin": self._origin.tolist(),
            "axes": self._axes.tolist(),
            "shape": list(self._shape),
            "periodic": self._periodic,
        }

    # ------------------------------------------------------------------ value semantics
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Box):
            return NotImplemented
        return (
            self._shape == other._shape
            and self._periodic == other._periodic
            and np.array_equal(self._origin, other._origin)
            and np.array_equal(self._axes, other._axes)
        )

    def __hash__(self) -> int:
        return hash((self._shape, self._periodic, self._origin.tobytes(), self._axes.tobytes()))

    def __repr__(self) -> str:
        o = np.array2string(self._origin, precision=4, separator=", ")
        a = np.array2string(self._axes, precision=4, separator=", ").replace("\n", "")
        return f"Box(origin={o}, axes={a}, shape={self._shape}, periodic={self._periodic})"


#: Cube sides (Å) for which a cube's edge lengths, their product and its determinant are
#: all finite normal numbers, so the constructor's degeneracy check always passes.
_SAFE_SIDE = (1e-90, 1e90)

#: The molecule box choices (``cube:L`` takes the side L in Å).
BOX_KINDS = ("fit", "tight", "cube:L")


def parse_box_kind(kind: str) -> tuple[str, float]:
    """``("fit", 0)``, ``("tight", 0)`` or ``("cube", L)`` from a box choice string.

    The one parser of box choices: the recipe, :meth:`Box.for_molecule` and the command
    line all use it. Raises ValueError naming the choices.
    """
    text = str(kind).strip().lower()
    if text in ("fit", "tight"):
        return text, 0.0
    if text.startswith("cube:"):
        try:
            side = float(text.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"cube box must look like cube:24 (side in Å), got {kind!r}") from None
        if not np.isfinite(side) or side <= 0:
            raise ValueError(f"cube side must be a positive length in Å, got {kind!r}")
        return "cube", side
    raise ValueError(f"unknown box {kind!r}: use fit, tight or cube:L (L in Å)")


def minimum_image(displacements: Any, lattice: Any) -> np.ndarray:
    """(N, 3) shortest periodic images (Å) of displacement vectors (N, 3) in the lattice
    whose rows are the cell vectors (Å): fractional parts rounded, then the best of the
    27 neighbouring images (exact for any cell shape)."""
    lat = np.asarray(lattice, dtype=np.float64)
    diff = np.asarray(displacements, dtype=np.float64).reshape(-1, 3)
    frac = np.linalg.solve(lat.T, diff.T).T
    frac -= np.round(frac)
    best = frac @ lat
    best_d2 = np.sum(best**2, axis=1)
    for shift in itertools.product((-1, 0, 1), repeat=3):
        if shift == (0, 0, 0):
            continue
        cart = (frac + np.array(shift)) @ lat
        d2 = np.sum(cart**2, axis=1)
        closer = d2 < best_d2
        best[closer] = cart[closer]
        best_d2[closer] = d2[closer]
    return best


def _check_padding(padding: float) -> None:
    if type(padding) is float and math.isfinite(padding) and padding >= 0:
        return  # the common case, without NumPy's scalar machinery
    if not np.isfinite(padding) or padding < 0:
        raise ValueError(f"padding must be a non-negative length in Å, got {padding!r}")
