"""The grid options are ``pgrid grid``'s own (:class:`pgrid_cli.preprocess.GridOptions`):
σ, grid size, box, padding and channels mean the same in a dataset as on the command line.
Only those five matter here; the storage options (dtype, compression, ...) are ignored."""

from __future__ import annotations

from typing import Any

from ..box import Box
from ..channels import ChannelSpec
from ..preprocess import GridOptions, Settings

__all__ = ["GridOptions", "Settings", "channel_spec", "make_box", "resolve"]


def resolve(options: GridOptions | Settings | None) -> Settings:
    """Validated settings (ValueError with a specific message for a bad option)."""
    if options is None:
        options = GridOptions()
    if isinstance(options, Settings):
        return options
    if not isinstance(options, GridOptions):
        raise TypeError(
            f"options must be a pgrid_cli.torch.GridOptions, got {type(options).__name__}"
        )
    return options.resolve()


def channel_spec(settings: Settings) -> ChannelSpec:
    return ChannelSpec(list(settings.channels))


def make_box(settings: Settings, positions: Any, lattice: Any = None) -> Box:
    """The grid box of a structure: its unit cell if ``lattice`` (3, 3) Å is given, else
    the molecule box of ``settings.box`` around ``positions`` (M, 3) Å."""
    if lattice is not None:
        return Box.from_lattice(lattice, settings.shape)
    return Box.for_molecule(settings.box, positions, settings.shape, settings.padding)
