"""Random rotations and translations of structures, reproducible per (seed, epoch, item).

Each item draws from its own generator, ``SeedSequence(seed, spawn_key=(epoch, index))``:
the same seed, epoch and index give the same transform in any worker process, whatever
the number of workers or the order in which items are read, and every epoch differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

_EYE = np.eye(3)


@dataclass(frozen=True)
class Transform:
    """A rigid motion of one structure: ``x -> R (x - centre) + centre + translation``.

    The grid box is built around the rotated atoms *before* the translation, so the
    translation moves the density inside the box (a box centred on the atoms would
    otherwise follow them and undo it).

    Attributes
    ----------
    rotation : (3, 3) float64, a proper rotation matrix (det +1)
    translation : (3,) float64, Å
    centre : (3,) float64, Å, the point the rotation keeps fixed (the atoms' centroid)
    """

    rotation: np.ndarray
    translation: np.ndarray
    centre: np.ndarray

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


class Augmentation:
    """Random rigid motions for data augmentation.

    Parameters
    ----------
    rotate : bool
        Rotate each molecule uniformly over SO(3) about its centroid. Crystals are not
        rotated: their grid covers the unit cell and turns with the lattice, so a rotation
        would leave it unchanged.
    translate : float
        Shift each structure by a vector whose components are uniform in
        [-translate, translate] Å (as libmolgrid's ``random_translation``).
    seed : int, optional
        Non-negative seed; ``None`` draws one from the OS once, at construction (then
        read :attr:`seed` to repeat the run).
    """

    def __init__(self, rotate: bool = False, translate: float = 0.0, seed: int | None = None):
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

    @property
    def active(self) -> bool:
        return self.rotate or self.translate > 0

    def transform(
        self, index: int, epoch: int = 0, centre: Any = None, periodic: bool = False
    ) -> Transform:
        """The transform of item ``index`` in ``epoch`` (rotation about ``centre``, Å)."""
        c = np.zeros(3) if centre is None else np.asarray(centre, dtype=np.float64)
        if not self.active:
            return Transform.identity(c)
        seq = np.random.SeedSequence(self.seed, spawn_key=(int(epoch), int(index)))
        rng = np.random.default_rng(seq)
        rotation = np.eye(3)
        if self.rotate:
            drawn = Rotation.random(rng=rng).as_matrix()
            if not periodic:
                rotation = drawn
        translation = np.zeros(3)
        if self.translate > 0:
            translation = rng.uniform(-self.translate, self.translate, size=3)
        return Transform(rotation, translation, c)

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
        return f"Augmentation(rotate={self.rotate}, translate={self.translate}, seed={self.seed})"


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
