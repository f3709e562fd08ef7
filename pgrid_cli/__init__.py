"""pgrid: exact, fast 3D Gaussian density grids of molecules and crystals.

The public API::

    from pgrid_cli import GridRecipe, Box, grid

    recipe = GridRecipe(grid_size=32, sigma=0.5, channels="elements", box="fit")
    g = recipe.grid(positions, numbers)                     # (11, 32, 32, 32) float32

    box = Box.fit(positions, shape=32, padding=2.0)         # or: a box of your own
    g1 = grid(positions, box, sigma=0.5)                    # (1, 32, 32, 32) float32

See ``GridRecipe`` for the recipe, ``Box`` for the box choices (fit / tight / cube:L / a
crystal's lattice), ``grid`` for the density (docs/format.md) and ``kernel_info()`` for
the instruction set in use.
"""

from __future__ import annotations

from .core import (
    Batch,
    Box,
    ChannelSpec,
    GridRecipe,
    Structure,
    UnknownElementError,
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
from .core.version import __version__

__all__ = [
    "Batch",
    "Box",
    "ChannelSpec",
    "GridRecipe",
    "Structure",
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
