"""The gridding recipe: one validated value that says how a structure becomes a grid.

A :class:`GridRecipe` holds σ (Å), the grid shape, the molecule box policy (``fit``,
``tight`` or ``cube:L``) and its padding (Å), and the channel set. It is validated once,
when it is built, and then used everywhere a structure is gridded: ``pgrid grid``, the
PyTorch datasets, ``pgrid bench`` and the inversion's checks::

    from pgrid_cli import GridRecipe

    recipe = GridRecipe(grid_size=32, sigma=0.5, channels="elements", box="fit")
    g = recipe.grid(positions, numbers)           # (11, 32, 32, 32) float32
    grids = recipe.grid_structures(structures)    # (B, 11, 32, 32, 32), one kernel call

Crystals (a structure with a lattice) are gridded over their unit cell whatever the box
policy (``crystal_view="cell"``), or over an axis-aligned cube of side L Å of their
infinite periodic density (``crystal_view="cube:L"``, :mod:`pgrid_cli.core.crystalview`);
molecules in the box the policy puts around them.

With a ``typer`` (:mod:`pgrid_cli.typers`: ``pharmacophore``, ``xs``, charges, your own)
the channels are the typer's and each atom goes into the channels the typer gives it, with
a weight per channel (:mod:`~pgrid_cli.core.particles`); ``channels`` is then unused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _core
from .box import Box, ShapeLike, normalize_shape, parse_box_kind
from .channels import ChannelSpec
from .crystalview import CubeWindow, cube_window, parse_crystal_view
from .energy import EnergySpec
from .kernel import (
    Batch,
    _check_out,
    _threads,
    check_memory,
    check_sigma,
    get_memory_limit,
    render_batch,
    resolve_isa,
)
from .particles import Particles, check_memberships, expand, signed_channels
from .structure import Structure

#: The native kernel's codes of the molecule box policies (pgrid/grid.hpp, BoxKind).
_BOX_CODES = {"fit": 0, "tight": 1, "cube": 2}

#: Atoms farther than this many σ outside a fixed ``cube:L`` box make the structure
#: unfit for it (the box would cut off a visible part of their density).
OUTSIDE_SIGMAS = 3.0


class OutsideBoxError(ValueError):
    """Atoms of a molecule lie too far outside the fixed cube of the recipe."""


def grid_total(g: np.ndarray) -> float:
    """Σ of a (C, nx, ny, nz) float32 grid: float32 sums of each (ny, nz) plane (numpy's
    pairwise summation, relative error ≲ 1e-6 for these non-negative values, ~1e-8 in
    practice) added in float64 — a fifth of the time of a float64 sum of every value."""
    rows = g.reshape(g.shape[0] * g.shape[1], -1) if g.ndim >= 2 else g.reshape(1, -1)
    return float(rows.sum(axis=1).sum(dtype=np.float64))


@dataclass(frozen=True)
class GridRecipe:
    """How structures become grids: σ, grid shape, box policy and channels.

    Parameters
    ----------
    grid_size : int or (nx, ny, nz)
        Voxels along each box edge.
    sigma : float
        Gaussian standard deviation of every atom, Å.
    channels : str or sequence of str or ChannelSpec
        ``single``, ``elements`` or a list such as ``C,H,N,O,*`` (see
        :class:`~pgrid_cli.core.channels.ChannelSpec`).
    box : str
        Molecule box: ``fit`` (the paper's cube around the atoms), ``tight`` (per-axis
        bounding box) or ``cube:L`` (a fixed cube of side L Å). Crystals use their cell.
    padding : float
        Å added around the atoms for ``fit`` and ``tight``.
    crystal_view : str
        Crystals: ``cell`` (one periodic unit cell) or ``cube:L`` (an axis-aligned cube of
        side L Å centred on the cell centre, of the infinite periodic density).
    typer : a :class:`pgrid_cli.typers.Typer` or None
        Chemistry-typed channels (its ``channels`` and ``memberships``) instead of
        ``channels``; get one with :func:`pgrid_cli.typers.get_typer`.
    energy : EnergySpec or str or dict, optional
        An energy channel (``lj:<probe>``) appended after the density channels by
        ``pgrid grid`` (:mod:`pgrid_cli.core.energy`); the ``grid*`` methods here return
        the density channels only, :func:`pgrid_cli.core.energy.lj_grid` the energy one.

    Raises ValueError (naming the parameter) when any of them is unusable.
    """

    grid_size: ShapeLike = 32
    sigma: float = 0.5
    channels: Any = "elements"
    box: str = "fit"
    padding: float = 2.0
    crystal_view: str = "cell"
    typer: Any = None
    energy: Any = None
    spec: ChannelSpec = field(init=False, repr=False, compare=False)
    _cube_side: float = field(init=False, repr=False, compare=False)
    # What the native per-call path needs, computed once: element → channel (int32,
    # -1 for none) and the box policy's code.
    _element_channel: np.ndarray = field(init=False, repr=False, compare=False)
    _box_code: int = field(init=False, repr=False, compare=False)
    _outside_limit: float = field(init=False, repr=False, compare=False)
    _grid_shape: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)
    _grid_bytes: int = field(init=False, repr=False, compare=False)
    _view_side: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: the normalised values are set once, here
        set_(self, "grid_size", normalize_shape(self.grid_size))
        set_(self, "sigma", check_sigma(self.sigma))
        spec = self.channels if isinstance(self.channels, ChannelSpec) else None
        if self.typer is not None:
            spec = ChannelSpec.named(tuple(self.typer.channels))
        elif spec is None:
            text = self.channels if isinstance(self.channels, str) else ",".join(self.channels)
            spec = ChannelSpec.parse(text)
        set_(self, "spec", spec)
        set_(self, "channels", ",".join(spec.names))
        kind, side = parse_box_kind(self.box)
        set_(self, "box", f"cube:{side:g}" if kind == "cube" else kind)
        set_(self, "_cube_side", side)
        set_(self, "_box_code", _BOX_CODES[kind])
        table = np.ascontiguousarray(spec._lookup, dtype=np.int32)
        table.flags.writeable = False
        set_(self, "_element_channel", table)
        try:
            padding = float(self.padding)
        except (TypeError, ValueError):
            padding = float("nan")
        if not (np.isfinite(padding) and padding >= 0):
            raise ValueError(f"padding must be a non-negative length in Å, got {self.padding!r}")
        set_(self, "padding", padding)
        if self.energy is not None and not isinstance(self.energy, EnergySpec):
            e = self.energy
            set_(self, "energy", EnergySpec(**e) if isinstance(e, dict) else EnergySpec(str(e)))
        set_(self, "_outside_limit", OUTSIDE_SIGMAS * self.sigma if side else -1.0)
        set_(self, "_grid_shape", (spec.n_channels, *self.grid_size))  # type: ignore[misc]
        set_(self, "_grid_bytes", 4 * math.prod(self._grid_shape))
        view, view_side = parse_crystal_view(self.crystal_view)
        set_(self, "crystal_view", f"cube:{view_side:g}" if view == "cube" else view)
        set_(self, "_view_side", view_side)
        if self.typer is not None and self._view_side:
            raise ValueError("typed channels (typer) and a cube:L crystal_view cannot be combined")

    # ------------------------------------------------------------------ derived values
    @property
    def shape(self) -> tuple[int, int, int]:
        """(nx, ny, nz) voxels."""
        return self.grid_size  # type: ignore[return-value]

    @property
    def n_channels(self) -> int:
        return self.spec.n_channels

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Every channel of a stored grid: the density channels (element channels or the
        typer's), then the energy one."""
        extra = (self.energy.channel,) if self.energy is not None else ()
        return (*self.spec.names, *extra)

    def parameters(self) -> dict[str, Any]:
        """The values that determine a grid (JSON-friendly; stored with every shard)."""
        out = {
            "grid_shape": list(self.shape),
            "sigma": self.sigma,
            "channels": list(self.spec.names),
            "box": self.box,
            "padding": self.padding,
            # only when not the default, so that the run ids of cell views do not change
            **({"crystal_view": self.crystal_view} if self._view_side else {}),
        }
        if self.typer is not None:
            out["typer"] = str(self.typer.name)
        if self.energy is not None:
            out["energy"] = self.energy.parameters()
        return out

    def captured(
        self,
        grid: np.ndarray,
        structure: Structure,
        prepared: Any = None,
        grid_sum: float | None = None,
    ) -> float:
        """Share of ``structure``'s weight that its (density) ``grid`` (C, nx, ny, nz) holds
        — for a ``cube:L`` crystal view, of the cube's share of the crystal
        (:meth:`expected_sum`); with a typer, over its unsigned channels only (a charge
        channel may sum to 0). ``prepared``: :meth:`prepare`'s first result when already
        computed; ``grid_sum``: Σ ``grid`` when the caller has it."""
        if self.typer is not None:
            p = (
                prepared
                if isinstance(prepared, Particles)
                else self._prepare_typed(structure, ())[0]
            )
            unsigned = ~np.asarray(signed_channels(self.typer, self.n_channels), dtype=bool)
            total = float(p.weights[unsigned[p.channels]].sum())
            return grid_total(grid[unsigned]) / total if total else 1.0
        total = self.expected_sum(structure)
        got = grid_total(grid) if grid_sum is None else grid_sum
        return got / total if total else 1.0

    # ------------------------------------------------------------------ structures → grids
    def box_for(self, positions: Any, lattice: Any = None) -> Box:
        """The grid box of one structure: its unit cell if ``lattice`` (3, 3) Å is given,
        else the molecule box of the recipe around ``positions`` (M, 3) Å."""
        if lattice is not None:
            if self._view_side:
                return self.crystal_window(positions, lattice).box
            return Box.from_lattice(lattice, self.shape)
        return Box.for_molecule(self.box, positions, self.shape, self.padding)

    def prepare(
        self, structure: Structure, exclude: Sequence[int] = ()
    ) -> tuple[np.ndarray | Particles, Box]:
        """(channel of each atom (M,) int32, box) of one structure; with a typer,
        (its :class:`~pgrid_cli.core.particles.Particles`, box), the atoms of the
        ``exclude`` elements (atomic numbers) typed with the others but not gridded.

        Raises :class:`~pgrid_cli.core.channels.UnknownElementError` for an element with
        no channel, :class:`~pgrid_cli.core.channels.TypingError` for a structure the
        typer cannot type, :class:`OutsideBoxError` for atoms far outside a fixed cube and
        ValueError when no box can be placed.
        """
        if self.typer is not None:
            return self._prepare_typed(structure, exclude)
        chans = self.spec.assign(structure.numbers)
        if structure.lattice is not None and self._view_side:
            window = self.crystal_window(structure.positions, structure.lattice)
            return chans[window.index], window.box
        box = self.box_for(structure.positions, structure.lattice)
        if structure.lattice is None and self._cube_side:
            self._check_inside(structure.positions, box)
        return chans, box

    def crystal_window(self, positions: Any, lattice: Any, centre: Any = None) -> CubeWindow:
        """The ``cube:L`` view of a crystal (atoms ``positions`` (M, 3) Å, cell rows
        ``lattice`` (3, 3) Å): its open box and image atoms (see
        :func:`~pgrid_cli.core.crystalview.cube_window`; ``centre`` defaults to the cell
        centre). ValueError when the recipe's crystal view is ``cell``."""
        if not self._view_side:
            raise ValueError("crystal_window needs crystal_view='cube:L'")
        return cube_window(positions, lattice, self._view_side, self.shape, self.sigma, centre)

    def gridded_atoms(self, structure: Structure) -> tuple[np.ndarray, np.ndarray | None]:
        """(positions (K, 3) Å, weights (K,) or None) of the atoms the grid of ``structure``
        sums: its own atoms, or for a ``cube:L`` crystal view the images that reach the
        cube (the order of :meth:`prepare`'s channels)."""
        if structure.lattice is None or not self._view_side:
            return structure.positions, structure.weights
        window = self.crystal_window(structure.positions, structure.lattice)
        w = structure.weights
        return window.positions, None if w is None else np.asarray(w)[window.index]

    def expected_sum(self, structure: Structure) -> float:
        """What the grid of ``structure`` sums to when its box holds all its density: Σ
        weights, or for a ``cube:L`` crystal view Σ weights × L³ ÷ cell volume (the
        cube's share of the infinite crystal). The denominator of ``captured``."""
        total = (
            float(np.sum(structure.weights)) if structure.weights is not None else len(structure)
        )
        if structure.lattice is None or not self._view_side:
            return total
        volume = abs(float(np.linalg.det(np.asarray(structure.lattice, dtype=np.float64))))
        return total * self._view_side**3 / volume

    def memberships(self, structure: Structure) -> np.ndarray:
        """(M, C) float64: the weight of each atom of ``structure`` in each channel of the
        recipe's typer, checked (:func:`~pgrid_cli.core.particles.check_memberships`).
        Raises TypingError when the typer cannot type it."""
        typer = self.typer
        signed = signed_channels(typer, self.n_channels)
        return check_memberships(
            typer.memberships(structure), len(structure), self.spec.names, signed
        )

    def _prepare_typed(self, s: Structure, exclude: Sequence[int]) -> tuple[Particles, Box]:
        m = self.memberships(s)
        keep = None
        positions = np.asarray(s.positions, dtype=np.float64)
        if len(exclude):
            keep = ~np.isin(np.asarray(s.numbers), list(exclude))
            positions = positions[keep]
        box = self.box_for(positions, s.lattice)
        if s.lattice is None and self._cube_side:
            self._check_inside(positions, box)
        return expand(m, s.positions, s.weights, keep), box

    def _check_inside(self, positions: np.ndarray, box: Box) -> None:
        lo = box.origin
        hi = box.origin + np.diag(box.axes)
        outside = np.maximum(lo - positions, positions - hi).max(axis=1)
        limit = OUTSIDE_SIGMAS * self.sigma
        far = outside > limit
        if np.any(far):
            raise OutsideBoxError(
                f"{int(far.sum())} atom(s) lie more than {OUTSIDE_SIGMAS:g}σ = {limit:.2f} Å "
                f"outside the {self._cube_side:g} Å cube (up to {float(outside.max()):.2f} Å); "
                f"use a larger cube or the fit box"
            )

    def batch(
        self,
        structures: Sequence[Structure],
        prepared: Sequence[tuple[np.ndarray, Box]] | None = None,
    ) -> Batch:
        """The kernel's :class:`Batch` of ``structures`` (``prepared``: their
        :meth:`prepare` results, when already computed)."""
        if prepared is None:
            prepared = [self.prepare(s) for s in structures]
        if self.typer is not None:
            return Batch.from_structures(
                [p.positions for p, _ in prepared],  # type: ignore[union-attr]
                [box for _, box in prepared],
                self.sigma,
                channels=[p.channels for p, _ in prepared],  # type: ignore[union-attr]
                n_channels=self.n_channels,
                weights=[p.weights for p, _ in prepared],  # type: ignore[union-attr]
            )
        atoms = [self.gridded_atoms(s) for s in structures]
        weighted = any(w is not None for _, w in atoms)
        return Batch.from_structures(
            [p for p, _ in atoms],
            [box for _, box in prepared],
            self.sigma,
            channels=[chans for chans, _ in prepared],
            n_channels=self.n_channels,
            weights=[w if w is not None else np.ones(len(p)) for p, w in atoms]
            if weighted
            else None,
        )

    def grid_structures(
        self,
        structures: Sequence[Structure],
        out: np.ndarray | None = None,
        *,
        threads: int | None = None,
        isa: str | None = None,
    ) -> np.ndarray:
        """Grids of ``structures``: (B, C, nx, ny, nz) float32, in one kernel call."""
        n = len(structures)
        grids = None
        if n and self.typer is not None:
            return render_batch(self.batch(structures), out, threads=threads, isa=isa)
        if n and not (self._view_side and any(s.lattice is not None for s in structures)):
            try:
                pos = np.concatenate([s.positions for s in structures])
                numbers = np.concatenate([np.asarray(s.numbers) for s in structures])
            except ValueError:
                pos = numbers = None
            if pos is not None:
                offsets = np.zeros(n + 1, dtype=np.int64)
                np.cumsum([len(s.numbers) for s in structures], out=offsets[1:])
                crystal = [s.lattice is not None for s in structures]
                lattices = periodic = None
                if any(crystal):
                    lattices = np.zeros((n, 3, 3))
                    for i, s in enumerate(structures):
                        if s.lattice is not None:
                            lattices[i] = s.lattice
                    periodic = np.array(crystal)
                weights = None
                if any(s.weights is not None for s in structures):
                    weights = np.concatenate(
                        [
                            s.weights if s.weights is not None else np.ones(len(s))
                            for s in structures
                        ]
                    )
                grids = self._grid_native(
                    pos, numbers, offsets, lattices, periodic, weights, out, threads, isa
                )
        if grids is not None:
            return grids
        return render_batch(self.batch(structures), out, threads=threads, isa=isa)

    def _grid_native(
        self,
        positions: Any,
        numbers: Any,
        offsets: np.ndarray | None,
        lattices: np.ndarray | None,
        periodic: np.ndarray | None,
        weights: Any,
        out: np.ndarray | None,
        threads: int | None,
        isa: str | None,
    ) -> np.ndarray | None:
        """Boxes, channels and grids of a flat batch (``offsets`` None: one structure) in
        one native call (``_core.grid_structures``); None when the input needs the Python path — odd
        shapes or types, or anything the native call rejects, so that the error raised is
        the Python path's (UnknownElementError, OutsideBoxError, the Box's messages)."""
        pos = np.ascontiguousarray(positions, dtype=np.float64)
        z = np.asarray(numbers)
        if z.dtype != np.int64 and z.dtype != np.int32:
            if z.dtype.kind not in "iub":
                return None
            z = z.astype(np.int64)
        if pos.ndim != 2 or pos.shape[1] != 3 or z.ndim != 1 or len(pos) != len(z):
            return None
        b = 1 if offsets is None else len(offsets) - 1
        m = len(z)
        if weights is not None:
            weights = np.ascontiguousarray(weights, dtype=np.float64)
            if weights.shape != (m,):
                return None
        shape = (b, *self._grid_shape)
        if out is None:
            if b * self._grid_bytes > get_memory_limit():
                check_memory(shape)  # raises, naming the limit
            out = np.empty(shape, dtype=np.float32)
        else:
            _check_out(out, shape)
        try:
            _core.grid_structures(  # positional: pybind11 matches keywords slowly
                pos,
                z if z.flags.c_contiguous else np.ascontiguousarray(z),
                offsets,
                lattices,
                periodic,
                weights,
                self._element_channel,
                self.sigma,
                self._box_code,
                self.padding,
                self._cube_side,
                self._outside_limit,
                out,
                None,
                None,
                _threads(threads),
                resolve_isa(isa),
            )
        except ValueError:
            return None
        return out

    def grid(
        self,
        positions: Any,
        numbers: Any,
        *,
        lattice: Any = None,
        weights: Any = None,
        out: np.ndarray | None = None,
        threads: int | None = None,
        isa: str | None = None,
    ) -> np.ndarray:
        """The grid of one structure: (C, nx, ny, nz) float32.

        ``positions`` (M, 3) Å, ``numbers`` (M,) atomic numbers, ``lattice`` (3, 3) Å rows
        a, b, c for a crystal, ``weights`` (M,) (default 1), ``out`` a (C, nx, ny, nz)
        float32 array to fill.
        """
        if self.typer is not None:
            lattice = None if lattice is None else np.asarray(lattice, dtype=np.float64)
            s = Structure(np.asarray(numbers), np.asarray(positions, dtype=np.float64), lattice)
            s.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
            target = None if out is None else out[np.newaxis]
            return self.grid_structures([s], target, threads=threads, isa=isa)[0]
        if lattice is None:
            lattices = None
        else:
            lattices = np.asarray(lattice, dtype=np.float64)
            lattices = lattices.reshape(1, 3, 3) if lattices.shape == (3, 3) else None
        if lattice is None or (lattices is not None and not self._view_side):
            z = np.asarray(numbers)
            grids = self._grid_native(
                positions,
                z,
                None,
                lattices,
                None,
                weights,
                None if out is None else out[np.newaxis],
                threads,
                isa,
            )
            if grids is not None:
                return grids[0]
        s = Structure(
            np.asarray(numbers),
            np.asarray(positions, dtype=np.float64),
            None if lattice is None else np.asarray(lattice, dtype=np.float64),
            None if weights is None else np.asarray(weights, dtype=np.float64),
        )
        target = None if out is None else out[np.newaxis]
        return self.grid_structures([s], target, threads=threads, isa=isa)[0]
