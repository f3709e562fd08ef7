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
policy; molecules in the box the policy puts around them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .box import Box, ShapeLike, normalize_shape, parse_box_kind
from .channels import ChannelSpec
from .kernel import Batch, check_sigma, render_batch
from .structure import Structure

#: Atoms farther than this many σ outside a fixed ``cube:L`` box make the structure
#: unfit for it (the box would cut off a visible part of their density).
OUTSIDE_SIGMAS = 3.0


class OutsideBoxError(ValueError):
    """Atoms of a molecule lie too far outside the fixed cube of the recipe."""


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

    Raises ValueError (naming the parameter) when any of them is unusable.
    """

    grid_size: ShapeLike = 32
    sigma: float = 0.5
    channels: Any = "elements"
    box: str = "fit"
    padding: float = 2.0
    spec: ChannelSpec = field(init=False, repr=False, compare=False)
    _cube_side: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: the normalised values are set once, here
        set_(self, "grid_size", normalize_shape(self.grid_size))
        set_(self, "sigma", check_sigma(self.sigma))
        spec = self.channels if isinstance(self.channels, ChannelSpec) else None
        if spec is None:
            text = self.channels if isinstance(self.channels, str) else ",".join(self.channels)
            spec = ChannelSpec.parse(text)
        set_(self, "spec", spec)
        set_(self, "channels", ",".join(spec.names))
        kind, side = parse_box_kind(self.box)
        set_(self, "box", f"cube:{side:g}" if kind == "cube" else kind)
        set_(self, "_cube_side", side)
        try:
            padding = float(self.padding)
        except (TypeError, ValueError):
            padding = float("nan")
        if not (np.isfinite(padding) and padding >= 0):
            raise ValueError(f"padding must be a non-negative length in Å, got {self.padding!r}")
        set_(self, "padding", padding)

    # ------------------------------------------------------------------ derived values
    @property
    def shape(self) -> tuple[int, int, int]:
        """(nx, ny, nz) voxels."""
        return self.grid_size  # type: ignore[return-value]

    @property
    def n_channels(self) -> int:
        return self.spec.n_channels

    def parameters(self) -> dict[str, Any]:
        """The values that determine a grid (JSON-friendly; stored with every shard)."""
        return {
            "grid_shape": list(self.shape),
            "sigma": self.sigma,
            "channels": list(self.spec.names),
            "box": self.box,
            "padding": self.padding,
        }

    # ------------------------------------------------------------------ structures → grids
    def box_for(self, positions: Any, lattice: Any = None) -> Box:
        """The grid box of one structure: its unit cell if ``lattice`` (3, 3) Å is given,
        else the molecule box of the recipe around ``positions`` (M, 3) Å."""
        if lattice is not None:
            return Box.from_lattice(lattice, self.shape)
        return Box.for_molecule(self.box, positions, self.shape, self.padding)

    def prepare(self, structure: Structure) -> tuple[np.ndarray, Box]:
        """(channel of each atom (M,) int32, box) of one structure.

        Raises :class:`~pgrid_cli.core.channels.UnknownElementError` for an element with
        no channel, :class:`OutsideBoxError` for atoms far outside a fixed cube and
        ValueError when no box can be placed.
        """
        chans = self.spec.assign(structure.numbers)
        box = self.box_for(structure.positions, structure.lattice)
        if structure.lattice is None and self._cube_side:
            self._check_inside(structure.positions, box)
        return chans, box

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
        weighted = any(s.weights is not None for s in structures)
        return Batch.from_structures(
            [s.positions for s in structures],
            [box for _, box in prepared],
            self.sigma,
            channels=[chans for chans, _ in prepared],
            n_channels=self.n_channels,
            weights=[s.weights if s.weights is not None else np.ones(len(s)) for s in structures]
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
        return render_batch(self.batch(structures), out, threads=threads, isa=isa)

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
        s = Structure(
            np.asarray(numbers),
            np.asarray(positions, dtype=np.float64),
            None if lattice is None else np.asarray(lattice, dtype=np.float64),
            None if weights is None else np.asarray(weights, dtype=np.float64),
        )
        target = None if out is None else out[np.newaxis]
        return self.grid_structures([s], target, threads=threads, isa=isa)[0]
