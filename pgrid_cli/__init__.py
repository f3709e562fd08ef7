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

from . import core as _core_api
from .core import *  # noqa: F403  (the public API is the core's, see pgrid_cli.core.__all__)
from .core.version import __version__

__all__ = [*_core_api.__all__, "__version__"]
