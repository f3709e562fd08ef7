"""Tiles: a structure gridded at a fixed spacing, cut into N³-voxel focus regions, each
seen with M voxels of context on every side (the EDNN scheme: a network predicts per tile
and an extensive property is the sum over tiles).

The *parent grid* is the structure at voxel edge ``spacing`` H (Å):

* a molecule: an open axis-aligned box centred on its atoms' bounding box, per axis the
  smallest multiple of N voxels of edge H that spans the atoms ± ``padding`` — the grid is
  rounded *up* to a multiple of N with the spacing fixed;
* a crystal, ``cell`` view: the periodic unit cell with, per lattice axis, the smallest
  multiple of N voxels whose edge is at most H (|a|/n ≤ H: the cell must hold a whole
  number of voxels to wrap, so here the spacing is an upper bound, not exact);
* a crystal, ``cube:L`` view: the axis-aligned cube of the infinite crystal centred on the
  cell centre, of n voxels of edge H with n the smallest multiple of N with n·H ≥ L (the
  cube grows to n·H).

So no tile is partial: the focus regions partition the parent grid exactly. Tile
``(i, j, k)`` has focus voxels ``[i·N, (i+1)·N)`` × … of the parent grid and is gridded in
its own open box of ``N + 2M`` voxels per axis on the same voxel lattice, from voxel
``i·N − M``: its context is the true density there — empty space (still the molecule's
own density, where it reaches) around a molecule, the neighbouring cells of a crystal
(every lattice image within reach is an atom of the tile, the periodic wrap) — gridded,
never padded. Each tile's voxel ``[M, M + N)`` per axis is its focus.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .box import Box, _bounds
from .crystalview import REACH_SIGMAS, cell_centre, lattice_images, parse_crystal_view
from .errors import ParameterError
from .kernel import Batch, render_batch
from .recipe import GridRecipe
from .structure import Structure


@dataclass(frozen=True)
class Tile:
    """One tile of a parent grid.

    Attributes
    ----------
    index : (i, j, k), the tile's place among the parent's tiles
    focus : ((x0, x1), (y0, y1), (z0, z1)), its focus voxels in the parent grid (half-open)
    box : Box, open, ``N + 2M`` voxels per axis: the tile's grid box
    positions : (K, 3) float64, Å, the atoms (and lattice images) the tile's grid sums
    atoms : (K,) int64, the atom of the structure each comes from
    """

    index: tuple[int, int, int]
    focus: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    box: Box
    positions: np.ndarray
    atoms: np.ndarray


@dataclass(frozen=True)
class TilePlan:
    """How one structure is tiled: its parent grid box and the tile and context sizes."""

    parent: Box
    tile: int
    context: int

    @property
    def counts(self) -> tuple[int, int, int]:
        """Tiles per axis (the parent grid is a whole number of tiles)."""
        return tuple(n // self.tile for n in self.parent.shape)  # type: ignore[return-value]

    @property
    def n_tiles(self) -> int:
        return math.prod(self.counts)

    @property
    def tile_shape(self) -> tuple[int, int, int]:
        n = self.tile + 2 * self.context
        return (n, n, n)

    def indices(self) -> list[tuple[int, int, int]]:
        """Every tile index (i, j, k), k fastest."""
        return list(itertools.product(*(range(c) for c in self.counts)))

    def focus(self, index: tuple[int, int, int]) -> tuple[tuple[int, int], ...]:
        return tuple((int(i) * self.tile, (int(i) + 1) * self.tile) for i in index)

    def tile_box(self, index: tuple[int, int, int]) -> Box:
        """The open box of tile ``index``: focus ± context voxels on the parent's lattice."""
        step = self.parent.voxel_axes
        start = np.asarray(index, dtype=np.float64) * self.tile - self.context
        origin = self.parent.origin + start @ step
        return Box(origin, step * (self.tile + 2 * self.context), self.tile_shape)


def check_tiles(tile: Any, context: Any) -> tuple[int, int]:
    """(N, M) as ints: N ≥ 1 voxels per focus edge, M ≥ 0 context voxels."""
    try:
        n, m = int(tile), int(context)
    except (TypeError, ValueError):
        raise ParameterError(
            f"{{tiles}} and {{context}} must be whole numbers of voxels, got {tile!r}, {context!r}"
        ) from None
    if n != tile or m != context or n < 1 or m < 0:
        raise ParameterError(
            f"{{tiles}} must be at least 1 and {{context}} at least 0 voxels, got {tile!r}, "
            f"{context!r}"
        )
    return n, m


def _multiple(n_voxels: float, tile: int) -> int:
    """The smallest multiple of ``tile`` that is at least ``n_voxels`` (and ≥ tile)."""
    return tile * max(1, math.ceil(n_voxels / tile - 1e-9))


def plan_tiles(
    structure: Structure,
    spacing: float,
    tile: int,
    context: int,
    *,
    padding: float = 2.0,
    crystal_view: str = "cell",
) -> TilePlan:
    """The :class:`TilePlan` of ``structure`` at voxel edge ``spacing`` Å (see the module
    docstring for the parent grid of molecules, unit cells and cube views)."""
    tile, context = check_tiles(tile, context)
    h = float(spacing)
    if not (math.isfinite(h) and h > 0):
        raise ParameterError(f"{{spacing}} must be a positive number of Å, got {spacing!r}")
    if structure.lattice is None:
        lo, hi = _bounds(structure.positions)
        n = [_multiple((hi[d] - lo[d] + 2 * padding) / h, tile) for d in range(3)]
        lengths = np.asarray(n, dtype=np.float64) * h
        parent = Box((lo + hi) / 2 - lengths / 2, np.diag(lengths), n)
        return TilePlan(parent, tile, context)
    lattice = np.asarray(structure.lattice, dtype=np.float64)
    kind, side = parse_crystal_view(crystal_view)
    if kind == "cell":
        lengths = np.linalg.norm(lattice, axis=1)
        n = [_multiple(lengths[d] / h, tile) for d in range(3)]
        return TilePlan(Box.from_lattice(lattice, n), tile, context)
    n_side = _multiple(side / h, tile)
    full = n_side * h
    parent = Box(cell_centre(lattice) - full / 2, np.eye(3) * full, n_side)
    return TilePlan(parent, tile, context)


def make_tiles(plan: TilePlan, structure: Structure, sigma: float) -> list[Tile]:
    """Every tile of ``plan`` with the atoms it sums: for a molecule, its atoms within
    reach of the tile; for a crystal, every lattice image within reach (``sigma`` Å sets
    the reach, the kernel's truncation radius plus a margin)."""
    reach = REACH_SIGMAS * float(sigma)
    pos = np.asarray(structure.positions, dtype=np.float64)
    out = []
    for index in plan.indices():
        box = plan.tile_box(index)
        if structure.lattice is None:
            near = _within(pos, box, reach)
            images, atoms = pos[near], np.flatnonzero(near).astype(np.int64)
        else:
            images, atoms, _ = lattice_images(
                pos, structure.lattice, box, lambda img, b=box: _within(img, b, reach), reach
            )
        out.append(Tile(index, plan.focus(index), box, images, atoms))  # type: ignore[arg-type]
    return out


def _within(points: np.ndarray, box: Box, reach: float) -> np.ndarray:
    """(K,) bool: points within ``reach`` Å of the parallelepiped ``box``, measured across
    each pair of its faces (a superset of the points whose Gaussian reaches a voxel)."""
    pts = np.asarray(points, dtype=np.float64)
    frac = box.fractional(pts.reshape(-1, 3))
    m = reach * np.linalg.norm(np.linalg.inv(box.axes), axis=0)
    return np.all((frac >= -m) & (frac <= 1.0 + m), axis=-1).reshape(pts.shape[:-1])


def grid_tiles(
    recipe: GridRecipe,
    structure: Structure,
    spacing: float,
    tile: int,
    context: int,
    *,
    threads: int | None = None,
    isa: str | None = None,
) -> tuple[TilePlan, list[Tile], np.ndarray]:
    """The tiles of ``structure`` at ``spacing`` Å and their grids, in one kernel call:
    (plan, tiles, grids (T, C, N + 2M, N + 2M, N + 2M) float32), tile t =
    ``plan.indices()[t]``. The recipe gives σ, channels, the molecule padding and the
    crystal view (its grid size is not used: the tile shape is)."""
    plan = plan_tiles(
        structure,
        spacing,
        tile,
        context,
        padding=recipe.padding,
        crystal_view=recipe.crystal_view,
    )
    tiles = make_tiles(plan, structure, recipe.sigma)
    chans = recipe.spec.assign(structure.numbers)
    w = None if structure.weights is None else np.asarray(structure.weights, dtype=np.float64)
    batch = Batch.from_structures(
        [t.positions for t in tiles],
        [t.box for t in tiles],
        recipe.sigma,
        channels=[chans[t.atoms] for t in tiles],
        n_channels=recipe.n_channels,
        weights=None if w is None else [w[t.atoms] for t in tiles],
    )
    return plan, tiles, render_batch(batch, threads=threads, isa=isa)


def assemble(plan: TilePlan, grids: np.ndarray) -> np.ndarray:
    """The parent grid (C, nx, ny, nz) from the focus parts of the tiles' ``grids``
    (T, C, n, n, n) in ``plan.indices()`` order: what the tiles partition."""
    n, m = plan.tile, plan.context
    out = np.empty((grids.shape[1], *plan.parent.shape), dtype=grids.dtype)
    for g, index in zip(grids, plan.indices(), strict=True):
        (x0, x1), (y0, y1), (z0, z1) = plan.focus(index)
        out[:, x0:x1, y0:y1, z0:z1] = g[:, m : m + n, m : m + n, m : m + n]
    return out
