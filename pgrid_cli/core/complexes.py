"""Receptor + ligand complexes on one grid: a cube centred on the ligand, with the
receptor's and the ligand's channels distinct (names prefixed ``receptor:`` and
``ligand:``), as libmolgrid/gnina grid them.

A complex is one :class:`~pgrid_cli.core.Structure` holding the receptor's atoms then
the ligand's, with the per-atom property ``ligand`` (``info['atom_properties']``: 1.0
for a ligand atom, 0.0 for a receptor atom; :mod:`pgrid_cli.readers.complexes` builds
it). :class:`ComplexRecipe` grids it:

* **Centre**: the mean position of the ligand's heavy atoms (of all its atoms when it
  has only hydrogens) — libmolgrid's choice (its ligand centre is the mean of the typed
  atoms, and its default typers leave hydrogens out), and one that does not move when
  hydrogens are added or dropped. :func:`ligand_center`.
* **Box**: ``cube:L`` of side L Å (default in ``pgrid grid``: 24 Å at 48³, 0.5 Å
  voxels) centred there. A ligand atom more than 3σ outside it rejects the complex (as
  for molecules in a fixed cube); receptor atoms may lie anywhere.
* **Channels**: :func:`assemble_channels` merges per-part channel memberships
  ((M_p, C_p) float64, weight of atom m in channel c) into one block-diagonal (M, ΣC_p)
  matrix with prefixed names. Without a typer each part's membership is one-hot from a
  :class:`~pgrid_cli.core.channels.ChannelSpec` (element channels); with one
  (``ComplexRecipe(typer=...)``: ``pharmacophore``, ``xs``, charges, your own) each part is
  typed on its own molecule — the reader keeps the parts (:data:`PARTS_KEY`) — and the
  receptor's memberships are computed once per receptor and reused across its ligands.
* **Receptor cropping** (exact): a receptor atom farther than the kernel's truncation
  radius (``TRUNC_SIGMAS`` σ = 6σ) outside the cube along some axis touches no voxel of
  it, so it is left out of the kernel call; the grid is identical (tested bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _core
from .box import Box, parse_box_kind
from .channels import TypingError
from .errors import ParameterError
from .kernel import Batch, render_batch
from .particles import Particles, check_memberships, expand, signed_channels
from .recipe import GridRecipe, OutsideBoxError
from .structure import Structure

#: The per-atom property that marks ligand atoms (1.0) among receptor atoms (0.0).
LIGAND_FLAG = "ligand"
#: Channel name prefixes of the two parts, in channel order.
PARTS = ("receptor", "ligand")
#: Where a complex's cube is centred (the only choice today).
CENTERS = ("ligand",)
#: ``Structure.info`` key of a complex's parts as read, ``(receptor, ligand)`` Structures
#: with their RDKit molecules: what a typer types. Kept in the worker only (never stored).
PARTS_KEY = "complex_parts"
#: ``Structure.info`` key under which a part caches its memberships per typer.
_TYPED_KEY = "_typed_memberships"


def part_memberships(part: Structure, typer: Any) -> np.ndarray:
    """(M_p, C) memberships of one part by ``typer``, cached on the part (a receptor read
    once is typed once, however many ligands it is paired with)."""
    cache: list[tuple[Any, np.ndarray]] = part.info.setdefault(_TYPED_KEY, [])  # type: ignore[assignment]
    for known, m in cache:  # by identity: the typer object itself is kept, never an id
        if known is typer:
            return m
    m = np.asarray(typer.memberships(part), dtype=np.float64)
    cache.append((typer, m))
    return m


def ligand_center(positions: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """Centre of a ligand's cube (3,) Å: mean of its heavy atoms' positions (M, 3) Å
    (of all atoms when every atom is a hydrogen)."""
    positions = np.asarray(positions, dtype=np.float64)
    heavy = np.asarray(numbers) != 1
    return positions[heavy].mean(axis=0) if heavy.any() else positions.mean(axis=0)


def one_hot(channels: np.ndarray, n_channels: int) -> np.ndarray:
    """(M, n_channels) float64 memberships of atoms each in one channel (``channels``
    (M,) ints)."""
    m = np.zeros((len(channels), n_channels), dtype=np.float64)
    m[np.arange(len(channels)), np.asarray(channels, dtype=np.int64)] = 1.0
    return m


def assemble_channels(
    parts: Sequence[tuple[str, np.ndarray, Sequence[str]]],
) -> tuple[np.ndarray, tuple[str, ...]]:
    """One membership matrix of a structure made of parts.

    ``parts`` are ``(prefix, memberships, names)``: the part's atoms' memberships
    (M_p, C_p) float64 and its channel names, in atom order (part 0's atoms first).
    Returns the block-diagonal (ΣM_p, ΣC_p) float64 matrix and the names
    ``prefix:name``: a part's atoms only ever fall in its own channels.
    """
    rows = sum(int(np.shape(m)[0]) for _, m, _ in parts)
    cols = sum(len(names) for _, _, names in parts)
    out = np.zeros((rows, cols), dtype=np.float64)
    names: list[str] = []
    r = c = 0
    for prefix, m, part_names in parts:
        m = np.asarray(m, dtype=np.float64)
        if m.ndim != 2 or m.shape[1] != len(part_names):
            raise ValueError(
                f"{prefix}: memberships must be (atoms, {len(part_names)}), got {m.shape}"
            )
        out[r : r + m.shape[0], c : c + m.shape[1]] = m
        names += [f"{prefix}:{n}" for n in part_names]
        r += m.shape[0]
        c += m.shape[1]
    return out, tuple(names)


class NotAComplexError(ValueError):
    """A structure without the per-atom ligand flags of a receptor + ligand complex."""


def ligand_mask(structure: Structure) -> np.ndarray:
    """(M,) bool: which atoms of a complex are the ligand's. Raises ValueError for a
    structure that is not a complex."""
    flags = structure.info.get("atom_properties", {}).get(LIGAND_FLAG)  # type: ignore[union-attr]
    if flags is None or len(flags) != len(structure.numbers):
        raise NotAComplexError(
            "not a receptor + ligand complex (no per-atom 'ligand' flags): complexes come "
            "from .types lists or with a receptor; grid other files in another run"
        )
    mask = np.asarray(flags, dtype=np.float64) > 0.5
    if not mask.any():
        raise NotAComplexError("the complex has no ligand atoms")
    return mask


class _ComplexChannels:
    """The channel names of a complex (what the writer and summaries read)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.n_channels = len(names)
        self.is_single = False

    def describe(self) -> str:
        return f"channels {','.join(self.names)}"


@dataclass(frozen=True)
class ComplexRecipe(GridRecipe):
    """A :class:`~pgrid_cli.core.GridRecipe` for receptor + ligand complexes (see the
    module docstring): ``channels`` is each part's channel set (element channels),
    ``box`` must be ``cube:L``, ``center`` is ``ligand``. Grids are (2C, nx, ny, nz),
    the receptor's C channels first."""

    center: str = "ligand"
    part_spec: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        kind, _ = parse_box_kind(self.box)
        if kind != "cube":
            raise ParameterError(
                f"{{box}} of a receptor + ligand complex must be a cube cube:L centred on the "
                f"ligand (e.g. cube:24), got {self.box}"
            )
        if self.center not in CENTERS:
            raise ParameterError(f"{{center}} must be one of {', '.join(CENTERS)}")
        part = self.spec
        _, names = assemble_channels(
            [(p, np.zeros((0, part.n_channels)), part.names) for p in PARTS]
        )
        spec = _ComplexChannels(names)
        object.__setattr__(self, "part_spec", part)
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "_grid_shape", (spec.n_channels, *self.grid_size))
        object.__setattr__(self, "_grid_bytes", 4 * int(np.prod(self._grid_shape)))

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "center": self.center, "complex": list(PARTS)}

    def box_for(self, positions: Any, lattice: Any = None, numbers: Any = None) -> Box:
        """The cube around the ligand atoms ``positions`` (M, 3) Å."""
        if lattice is not None:
            raise ValueError("a complex cannot be periodic")
        pos = np.asarray(positions, dtype=np.float64)
        z = np.zeros(len(pos), dtype=np.int64) if numbers is None else np.asarray(numbers)
        return Box._centred_cube(ligand_center(pos, z), self._cube_side, self.shape)

    def memberships(self, structure: Structure) -> tuple[np.ndarray, np.ndarray]:
        """(ligand mask (M,) bool, memberships (M, 2C) float64) of a complex, in its atom
        order (the parts' element memberships assembled)."""
        lig = ligand_mask(structure)
        z = np.asarray(structure.numbers)
        n = self.part_spec.n_channels
        if self.typer is not None:
            rec_m, lig_m = self._typed_parts(structure, lig)
        else:
            rec_m = one_hot(self.part_spec.assign(z[~lig]), n)
            lig_m = one_hot(self.part_spec.assign(z[lig]), n)
        merged, _ = assemble_channels(
            [(PARTS[0], rec_m, self.part_spec.names), (PARTS[1], lig_m, self.part_spec.names)]
        )
        order = np.concatenate([np.flatnonzero(~lig), np.flatnonzero(lig)])
        out = np.empty_like(merged)
        out[order] = merged
        return lig, out

    def _typed_parts(self, structure: Structure, lig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The typer's (receptor, ligand) memberships, checked, from the parts the reader
        kept. Raises TypingError when they are missing or unusable."""
        parts = structure.info.get(PARTS_KEY)
        if parts is None:
            raise TypingError(
                "typed channels of a complex need its receptor and ligand molecules as read "
                "(complexes from .types lists or with a receptor, not from structures shards)"
            )
        rec, ligand = parts  # type: ignore[misc]
        if len(rec) != int((~lig).sum()) or len(ligand) != int(lig.sum()):
            raise TypingError("the complex's parts do not match its atoms")
        names = self.part_spec.names
        signed = signed_channels(self.typer, len(names))
        out = []
        for label, part in zip(PARTS, (rec, ligand), strict=True):
            try:
                m = check_memberships(part_memberships(part, self.typer), len(part), names, signed)
            except TypingError as exc:
                raise TypingError(f"{label}: {exc}") from None
            out.append(m)
        return out[0], out[1]

    def prepare(  # type: ignore[override]
        self, structure: Structure, exclude: Sequence[int] = ()
    ) -> tuple[Particles, Box]:
        """(the kernel's particles of the complex, box): receptor atoms that cannot reach
        the cube left out. Raises OutsideBoxError for ligand atoms far outside the cube.

        With element channels (one-hot memberships) the particles are the atoms with
        their channel (:meth:`element_particles`, the same result as expanding
        :meth:`memberships` with :func:`~.particles.expand`, without the (M, 2C) matrix)."""
        lig = ligand_mask(structure)
        pos = np.asarray(structure.positions, dtype=np.float64)
        box = self.box_for(pos[lig], structure.lattice, np.asarray(structure.numbers)[lig])
        try:
            self._check_inside(pos[lig], box)
        except OutsideBoxError as exc:
            raise OutsideBoxError(f"ligand: {exc}") from None
        keep = lig | reaches(pos, box, self.sigma)
        if len(exclude):  # typed with every atom, excluded elements not gridded
            keep &= ~np.isin(np.asarray(structure.numbers), list(exclude))
        if self.typer is None:
            return self.element_particles(structure, lig, keep), box
        _, m = self.memberships(structure)
        return expand(m, structure.positions, structure.weights, keep), box

    def element_particles(
        self, structure: Structure, lig: np.ndarray, keep: np.ndarray
    ) -> Particles:
        """Particles of the ``keep`` atoms ((M,) bool), each in its element's channel of
        its part (``lig`` (M,) bool: the ligand's atoms): what :func:`~.particles.expand`
        makes of :meth:`memberships`, without the (M, 2C) matrix."""
        atom = np.flatnonzero(keep)
        chans = self.part_spec.assign(np.asarray(structure.numbers)[atom]).astype(np.int32)
        chans += np.where(lig[atom], self.part_spec.n_channels, 0).astype(np.int32)
        w = (
            np.ones(len(atom))
            if structure.weights is None
            else np.asarray(structure.weights, dtype=np.float64)[atom]
        )
        pos = np.asarray(structure.positions, dtype=np.float64)[atom].reshape(-1, 3)
        return Particles(pos, chans, w, atom.astype(np.int64))

    def batch(
        self,
        structures: Sequence[Structure],
        prepared: Sequence[tuple[Particles, Box]] | None = None,
    ) -> Batch:
        if prepared is None:
            prepared = [self.prepare(s) for s in structures]
        return Batch.from_structures(
            [p.positions for p, _ in prepared],
            [box for _, box in prepared],
            self.sigma,
            channels=[p.channels for p, _ in prepared],
            n_channels=self.n_channels,
            weights=[p.weights for p, _ in prepared],
        )

    def grid_structures(
        self,
        structures: Sequence[Structure],
        out: np.ndarray | None = None,
        *,
        threads: int | None = None,
        isa: str | None = None,
    ) -> np.ndarray:
        return render_batch(self.batch(structures), out, threads=threads, isa=isa)

    def grid(self, *_args: Any, **_kwargs: Any) -> np.ndarray:
        raise TypeError("a complex is gridded from its Structure: use grid_structures([s])")

    def grid_in_box(self, structure: Structure, box: Box, threads: int | None = None) -> np.ndarray:
        """The (2C, nx, ny, nz) float32 grid of a complex in a given ``box`` (e.g. the
        cube of the ligand before an augmentation's translation moved the atoms)."""
        _, m = self.memberships(structure)
        pos = np.asarray(structure.positions, dtype=np.float64)
        # every part: what cannot reach the box is left out
        p = expand(m, pos, structure.weights, reaches(pos, box, self.sigma))
        batch = Batch.from_structures(
            [p.positions],
            [box],
            self.sigma,
            channels=[p.channels],
            n_channels=self.n_channels,
            weights=[p.weights],
        )
        return render_batch(batch, threads=threads)[0]

    def captured(
        self,
        grid: np.ndarray,
        structure: Structure,
        prepared: Any = None,  # noqa: ARG002 (the recipe's signature)
        grid_sum: float | None = None,  # noqa: ARG002
    ) -> float:
        """Share of the ligand's weight in the ligand channels of ``grid`` (C, …) (typed:
        of its unsigned channels); ``prepared`` and ``grid_sum`` are not needed."""
        lig = ligand_mask(structure)
        w = np.ones(len(lig)) if structure.weights is None else np.asarray(structure.weights)
        n = self.part_spec.n_channels
        if self.typer is None:
            total = float(w[lig].sum())
            return float(grid[n:].sum(dtype=np.float64)) / total if total else 1.0
        # typed: the ligand's unsigned channels against what its memberships put there
        signed = signed_channels(self.typer, n)
        unsigned = ~np.asarray(signed, dtype=bool)
        _, lig_m = self._typed_parts(structure, lig)
        total = float((lig_m[:, unsigned] * w[lig][:, None]).sum())
        got = float(grid[n:][unsigned].sum(dtype=np.float64))
        return got / total if total else 1.0


def reaches(positions: np.ndarray, box: Box, sigma: float) -> np.ndarray:
    """(M,) bool: atoms whose Gaussian (σ Å) the kernel evaluates on some voxel of the
    orthogonal ``box``: within ``TRUNC_SIGMAS``·σ of it along every axis (with a
    safety margin of 1e-6 Å, so that an atom on the edge is kept)."""
    lo = box.origin
    hi = box.origin + np.diag(box.axes)
    outside = np.maximum(lo - positions, positions - hi).max(axis=1)
    return outside <= float(_core.TRUNC_SIGMAS) * sigma + 1e-6
