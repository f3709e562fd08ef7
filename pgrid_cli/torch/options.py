"""What a grid looks like: σ, voxel counts, box choice and channels (the CLI's options)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..box import Box, ShapeLike, _check_padding, normalize_shape, parse_cube_side
from ..channels import ChannelSpec


@dataclass(frozen=True)
class GridOptions:
    """The gridding options shared by a dataset, its collate function and ``pgrid grid``.

    Parameters
    ----------
    sigma : float
        Gaussian standard deviation of every atom, Å (SPEC §1).
    shape : int or (int, int, int)
        Voxels along the box axes (nx, ny, nz).
    box : str
        Molecule box (SPEC §4): ``fit`` (cube around the atoms, side = extent + 2·padding),
        ``tight`` (per-axis bounding box ± padding) or ``cube:L`` (fixed side L Å).
        Crystals always use their periodic unit cell.
    padding : float
        Å around the atoms for ``fit`` and ``tight``.
    channels : str or ChannelSpec
        ``single``, ``elements`` or a list like ``C,H,N,O,*`` (SPEC §5).
    """

    sigma: float = 0.5
    shape: ShapeLike = 32
    box: str = "fit"
    padding: float = 2.0
    channels: str | ChannelSpec = "elements"

    def __post_init__(self) -> None:
        sigma = float(self.sigma)
        if not np.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"sigma must be a positive width in Å, got {self.sigma!r}")
        _check_padding(self.padding)
        box = str(self.box).strip().lower()
        if box.startswith("cube:"):
            parse_cube_side(box)
        elif box not in ("fit", "tight"):
            raise ValueError(f"unknown box {self.box!r}: use fit, tight or cube:L (L in Å)")
        spec = self.channels
        if not isinstance(spec, ChannelSpec):
            spec = ChannelSpec.parse(str(spec))
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "shape", normalize_shape(self.shape))
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "padding", float(self.padding))
        object.__setattr__(self, "channels", spec)

    @property
    def channel_spec(self) -> ChannelSpec:
        """The channels as a :class:`ChannelSpec`."""
        assert isinstance(self.channels, ChannelSpec)
        return self.channels

    @property
    def n_channels(self) -> int:
        return self.channel_spec.n_channels

    @property
    def grid_shape(self) -> tuple[int, int, int, int]:
        """(C, nx, ny, nz) of one structure's grid."""
        return (self.n_channels, *self.shape)  # type: ignore[misc]

    def make_box(self, positions: Any, lattice: Any = None) -> Box:
        """The grid box of a structure: its unit cell if ``lattice`` (3, 3) Å is given,
        else the molecule box of :attr:`box` around ``positions`` (M, 3) Å."""
        if lattice is not None:
            return Box.from_lattice(lattice, self.shape)
        return Box.for_molecule(self.box, positions, self.shape, self.padding)
