"""pgrid: exact, fast 3D Gaussian density grids of molecules and crystals.

The public API::

    from pgrid_cli import Box, grid, grid_batch, grid_gradient, ChannelSpec

    box = Box.fit(positions, shape=32, padding=2.0)        # a cube around the molecule
    g = grid(positions, box, sigma=0.5, channels=chans)     # (C, 32, 32, 32) float32

See ``Box`` for the box choices (fit / tight / cube:L / a crystal's lattice), ``grid`` for
the density (SPEC §3) and ``kernel_info()`` for the instruction set in use.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .box import Box
from .channels import ChannelSpec, UnknownElementError
from .grid import (
    Batch,
    available_isas,
    get_memory_limit,
    gradient_batch,
    grid,
    grid_batch,
    grid_gradient,
    kernel_info,
    render_batch,
    resolve_isa,
    set_memory_limit,
)

try:
    __version__ = _version("pgrid-cli")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "Batch",
    "Box",
    "ChannelSpec",
    "UnknownElementError",
    "__version__",
    "available_isas",
    "get_memory_limit",
    "gradient_batch",
    "grid",
    "grid_batch",
    "grid_gradient",
    "kernel_info",
    "render_batch",
    "resolve_isa",
    "set_memory_limit",
]
