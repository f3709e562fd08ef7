"""Random rotations and translations of structures, reproducible per (seed, epoch, item).

Each item draws from its own generator, ``SeedSequence(seed, spawn_key=(epoch, index))``:
the same seed, epoch and index give the same transform in any worker process, whatever
the number of workers or the order in which items are read, and every epoch differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

_EYE = np.eye(3)


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
        return (positions - self.centre) @ self.rotation.T + self.centre

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
        seq = np.random.SeedSequence(self.seed, spawn_key=(int(epoch), int(index)))
        rng = np.random.default_rng(seq)
        rotation = np.eye(3)
        if self.rotate:
            drawn = Rotation.random(rng=rng).as_matrix()
            if not periodic or rotate_crystal:
                rotation = drawn
        translation = np.zeros(3)
        if self.translate > 0:
            translation = rng.uniform(-self.translate, self.translate, size=3)
        shift = np.zeros(3)
        if self.shift_lattice:
            drawn_shift = rng.random(3)
            if periodic:
                shift = drawn_shift
        return Transform(rotation, translation, c, shift)

    def draws(
        self, indices: Sequence[int], epoch: int, periodic: Sequence[bool]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, 3) rotations and (B, 3) translations (Å) of items ``indices`` in
        ``epoch``, bit for bit those of :meth:`transform` (``periodic[k]``: item k is a
        crystal, not rotated), with the rotation matrices of the whole batch built in one
        SciPy call instead of one ``Rotation.random`` per item."""
        b = len(indices)
        rotations = np.broadcast_to(_EYE, (b, 3, 3)).copy()
        translations = np.zeros((b, 3))
        if not self.active:
            return rotations, translations
        if self.rotate and not _batched_rotations_match():
            for k, i in enumerate(indices):  # a SciPy that draws differently: per item
                xf = self.transform(i, epoch, None, bool(periodic[k]))
                rotations[k], translations[k] = xf.rotation, xf.translation
            return rotations, translations
        quats = np.empty((b, 4))
        for k, i in enumerate(indices):
            seq = np.random.SeedSequence(self.seed, spawn_key=(int(epoch), int(i)))
            rng = np.random.default_rng(seq)
            if self.rotate:
                quats[k] = rng.normal(size=4)  # what Rotation.random(rng=rng) draws
            if self.translate > 0:
                translations[k] = rng.uniform(-self.translate, self.translate, size=3)
        if self.rotate and b:
            keep = ~np.asarray(periodic, dtype=bool)
            rotations[keep] = Rotation.from_quat(quats).as_matrix()[keep]
        return rotations, translations

    def __repr__(self) -> str:
        more = ", shift_lattice=True" if self.shift_lattice else ""
        return (
            f"Augmentation(rotate={self.rotate}, translate={self.translate}, "
            f"seed={self.seed}{more})"
        )


_BATCHED_OK: bool | None = None


def _batched_rotations_match() -> bool:
    """Whether ``Rotation.from_quat(rng.normal(size=4))`` is bit for bit
    ``Rotation.random(rng=rng)`` in this SciPy (checked once per process on a few
    seeds): :meth:`Augmentation.draws` relies on it, and falls back to per-item draws
    otherwise."""
    global _BATCHED_OK
    if _BATCHED_OK is None:
        ok = True
        for k in range(4):
            seq = np.random.SeedSequence(12345, spawn_key=(k, 7 * k))
            want = Rotation.random(rng=np.random.default_rng(seq)).as_matrix()
            quat = np.random.default_rng(seq).normal(size=4)
            got = Rotation.from_quat(quat[np.newaxis]).as_matrix()[0]
            ok = ok and np.array_equal(want, got)
        _BATCHED_OK = ok
    return _BATCHED_OK
