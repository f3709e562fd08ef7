"""Random rotations and translations of structures, reproducible per (seed, epoch, item).

Every item's draws are a counter-based hash of (seed, epoch, index): nine uniforms in
[0, 1) at fixed positions (rotation 0–2, translation 3–5, lattice shift 6–8) from
SplitMix64's finaliser (a bijective 64-bit mix). The same seed, epoch and index give the
same transform in any process, whatever the number of workers or the order in which items
are read; every epoch differs; and a whole batch is drawn in a few vectorised NumPy
operations — bit for bit the draws of its items one by one (:func:`uniforms`).
Rotations are uniform over SO(3) (Shoemake's quaternion from three uniforms), applied
with the same element-wise arithmetic to one item or a batch (:func:`rotate_points`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_EYE = np.eye(3)
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
#: Positions of each draw in an item's stream (fixed, so adding an option leaves the
#: other draws' values): rotation, translation, lattice shift.
_ROT, _TRANS, _SHIFT, _DRAWS = 0, 3, 6, 9


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic): a bijective hash."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _key(seed: int, epoch: int) -> int:
    """A 64-bit key of (seed, epoch): the seed's 64-bit words and the epoch, mixed in."""
    words = [seed & _MASK64]
    rest = seed >> 64
    while rest:
        words.append(rest & _MASK64)
        rest >>= 64
    h = np.zeros(1, dtype=np.uint64)
    for w in (*words, len(words), int(epoch) & _MASK64):
        h = _mix(h ^ np.uint64((w + _GOLDEN) & _MASK64))
    return int(h[0])


def uniforms(seed: int, epoch: int, indices: Any) -> np.ndarray:
    """(B, 9) float64 in [0, 1): the draws of items ``indices`` (B,) in ``epoch`` — a
    function of (seed, epoch, index) only, element-wise over the batch."""
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64).reshape(-1, 1)
    k = np.arange(1, _DRAWS + 1, dtype=np.uint64)[np.newaxis, :]
    with np.errstate(over="ignore"):
        item = _mix(np.uint64(_key(int(seed), int(epoch))) ^ (idx * np.uint64(_GOLDEN)))
        bits = _mix(item + k * np.uint64(_GOLDEN))
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def rotations_from(u: np.ndarray) -> np.ndarray:
    """(B, 3, 3) rotation matrices, uniform over SO(3), from (B, 3) uniforms in [0, 1)
    (Shoemake 1992: a uniform unit quaternion), element-wise over the batch."""
    u1, u2, u3 = u[:, 0], 2.0 * np.pi * u[:, 1], 2.0 * np.pi * u[:, 2]
    a, b = np.sqrt(1.0 - u1), np.sqrt(u1)
    x, y, z, w = a * np.sin(u2), a * np.cos(u2), b * np.sin(u3), b * np.cos(u3)
    r = np.empty((len(u), 3, 3))
    r[:, 0, 0] = 1.0 - 2.0 * (y * y + z * z)
    r[:, 0, 1] = 2.0 * (x * y - z * w)
    r[:, 0, 2] = 2.0 * (x * z + y * w)
    r[:, 1, 0] = 2.0 * (x * y + z * w)
    r[:, 1, 1] = 1.0 - 2.0 * (x * x + z * z)
    r[:, 1, 2] = 2.0 * (y * z - x * w)
    r[:, 2, 0] = 2.0 * (x * z - y * w)
    r[:, 2, 1] = 2.0 * (y * z + x * w)
    r[:, 2, 2] = 1.0 - 2.0 * (x * x + y * y)
    return r


def rotate_points(positions: np.ndarray, rotation: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(M, 3) ``positions`` (Å) rotated about ``centre``: R (x − c) + c, with ``rotation``
    (3, 3) or one per point (M, 3, 3) and ``centre`` (3,) or (M, 3). Element-wise in a
    fixed order, so a point moves bit for bit the same alone or in a batch."""
    r = rotation if rotation.ndim == 3 else rotation[np.newaxis]
    d = positions - centre
    out = d[:, 0:1] * r[:, :, 0] + d[:, 1:2] * r[:, :, 1] + d[:, 2:3] * r[:, :, 2]
    return out + centre


def centroids(positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(B, 3) mean positions of the structures ``offsets`` (B+1,) delimit in ``positions``
    (M, 3) — one summation order for one structure or a batch (none may be empty)."""
    starts = np.asarray(offsets[:-1], dtype=np.int64)
    counts = np.diff(np.asarray(offsets, dtype=np.int64))
    return np.add.reduceat(positions, starts, axis=0) / counts[:, np.newaxis]


@dataclass(frozen=True)
class Transform:
    """A rigid motion of one structure: ``x -> R (x - centre) + centre + translation``,
    and for a crystal a lattice translation by ``shift`` (fractional, in the rotated cell).

    The grid box is built around the rotated atoms *before* the translation, so the
    translation moves the density inside the box (a box centred on the atoms would
    otherwise follow them and undo it).

    Attributes
    ----------
    rotation : (3, 3) float64, a proper rotation matrix (det +1)
    translation : (3,) float64, Å
    centre : (3,) float64, Å, the point the rotation keeps fixed (the atoms' centroid;
        for a crystal in a ``cube:L`` view, the cell centre, where the cube stays)
    shift : (3,) float64, fractional coordinates of the rotated cell: a crystal's atoms
        move by ``shift @ R lattice`` (zeros for molecules)
    """

    rotation: np.ndarray
    translation: np.ndarray
    centre: np.ndarray
    shift: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @classmethod
    def identity(cls, centre: Any = (0.0, 0.0, 0.0)) -> Transform:
        return cls(np.eye(3), np.zeros(3), np.asarray(centre, dtype=np.float64))

    def rotate(self, positions: np.ndarray) -> np.ndarray:
        """(M, 3) positions (Å) rotated about :attr:`centre` (copied unchanged, bit for
        bit, when the rotation is the identity)."""
        if np.array_equal(self.rotation, _EYE):
            return np.array(positions, dtype=np.float64)
        return rotate_points(np.asarray(positions, dtype=np.float64), self.rotation, self.centre)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """(M, 3) positions (Å) rotated, then translated."""
        return self.rotate(positions) + self.translation

    def crystal(self, positions: np.ndarray, lattice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A crystal moved: ((M, 3) positions, (3, 3) lattice rows), Å — the lattice and
        atoms rotated about :attr:`centre`, then translated by ``translation`` and by
        ``shift @ rotated lattice`` (a whole lattice vector changes no density)."""
        lat = np.asarray(lattice, dtype=np.float64)
        if not np.array_equal(self.rotation, _EYE):
            lat = lat @ self.rotation.T
        return self(positions) + self.shift @ lat, lat


class Augmentation:
    """Random rigid motions for data augmentation.

    Parameters
    ----------
    rotate : bool
        Rotate each molecule uniformly over SO(3) about its centroid. Crystals are rotated
        (lattice and atoms, about the cell centre) only in a ``cube:L`` crystal view, where
        the cube stays axis-aligned and the crystal turns inside it; a unit-cell grid turns
        with the lattice, so a rotation would leave it unchanged.
    translate : float
        Shift each structure by a vector whose components are uniform in
        [-translate, translate] Å (as libmolgrid's ``random_translation``).
    shift_lattice : bool
        Move each crystal by a random lattice translation: fractional coordinates uniform
        in [0, 1)³ of its (rotated) cell (:attr:`Transform.shift`). Molecules are not moved.
    seed : int, optional
        Non-negative seed; ``None`` draws one from the OS once, at construction (then
        read :attr:`seed` to repeat the run).
    """

    def __init__(
        self,
        rotate: bool = False,
        translate: float = 0.0,
        seed: int | None = None,
        shift_lattice: bool = False,
    ):
        translate = float(translate)
        if not np.isfinite(translate) or translate < 0:
            raise ValueError(f"translate must be a non-negative distance in Å, got {translate!r}")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.rotate = bool(rotate)
        self.translate = translate
        self.seed = int(seed)
        self.shift_lattice = bool(shift_lattice)

    @property
    def active(self) -> bool:
        return self.rotate or self.translate > 0 or self.shift_lattice

    def transform(
        self,
        index: int,
        epoch: int = 0,
        centre: Any = None,
        periodic: bool = False,
        rotate_crystal: bool = False,
    ) -> Transform:
        """The transform of item ``index`` in ``epoch`` (rotation about ``centre``, Å).

        A ``periodic`` item is rotated only with ``rotate_crystal`` (a ``cube:L`` view) and
        is the only kind given a lattice ``shift``. The draws come in a fixed order
        (rotation, translation, shift), so adding one option leaves the others' values."""
        c = np.zeros(3) if centre is None else np.asarray(centre, dtype=np.float64)
        if not self.active:
            return Transform.identity(c)
        # One item is a batch of one: the same draws and arithmetic as :meth:`draws`.
        rotations, translations = self.draws([index], epoch, [periodic and not rotate_crystal])
        shift = np.zeros(3)
        if self.shift_lattice and periodic:
            shift = uniforms(self.seed, epoch, [index])[0, _SHIFT : _SHIFT + 3]
        return Transform(rotations[0], translations[0], c, shift)

    def draws(
        self, indices: Sequence[int], epoch: int, periodic: Sequence[bool]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, 3) rotations and (B, 3) translations (Å) of items ``indices`` in
        ``epoch`` (``periodic[k]``: item k is not rotated — a crystal in its unit cell),
        drawn for the whole batch at once; :meth:`transform` is a batch of one."""
        b = len(indices)
        rotations = np.broadcast_to(_EYE, (b, 3, 3)).copy()
        translations = np.zeros((b, 3))
        if not self.active or not b:
            return rotations, translations
        u = uniforms(self.seed, epoch, indices)
        if self.rotate:
            keep = ~np.asarray(periodic, dtype=bool)
            rotations[keep] = rotations_from(u[keep, _ROT : _ROT + 3])
        if self.translate > 0:
            translations = self.translate * (2.0 * u[:, _TRANS : _TRANS + 3] - 1.0)
        return rotations, translations

    def __repr__(self) -> str:
        more = ", shift_lattice=True" if self.shift_lattice else ""
        return (
            f"Augmentation(rotate={self.rotate}, translate={self.translate}, "
            f"seed={self.seed}{more})"
        )
