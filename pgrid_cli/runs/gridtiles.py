"""Tiles in ``pgrid grid`` (``--tiles N --context M --spacing H``): each input structure
becomes one record per tile (:mod:`pgrid_cli.core.tiles`), with its parent, place and
focus region as properties (docs/format.md §6, "Tiles").

A tile record holds its parent's atoms and provenance, its own grid and open box, and the
properties ``parent_id`` (the parent's item number), ``tile_index`` [i, j, k],
``focus`` [x0, x1, y0, y1, z0, z1] (half-open voxel ranges of the parent grid; in the
tile, voxels [M, M + N) on every axis) and ``parent_shape`` [nx, ny, nz]. Its ``id`` is
``parent_id × TILE_ID_STRIDE + t`` (t the tile's number, k fastest), unique in the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.box import Box
from ..core.structure import Structure
from ..core.tiles import grid_tiles

if TYPE_CHECKING:
    from .gridoptions import Settings

#: A tile record's id is its parent's item number × this + the tile's number.
TILE_ID_STRIDE = 1 << 20


@dataclass
class TileRecord:
    """One tile of a structure, gridded and encoded (part of a worker's result)."""

    box: Box
    chunk: tuple[bytes, int] | None
    grid: np.ndarray | None
    properties: dict[str, Any]


def tile_records(s: Structure, settings: Settings) -> tuple[list[TileRecord], float]:
    """The tile records of ``s`` and the share of its density the tiles' focus regions
    hold (Σ focus ÷ :meth:`GridRecipe.expected_sum`, before rounding)."""
    n, m = settings.tiles  # type: ignore[misc]
    recipe, codec = settings.recipe, settings.codec
    plan, tiles, grids = grid_tiles(
        recipe,
        s,
        settings.spacing,
        n,
        m,
        threads=settings.threads,  # type: ignore[arg-type]
    )
    if plan.n_tiles >= TILE_ID_STRIDE:
        raise ValueError(f"{plan.n_tiles} tiles: at most {TILE_ID_STRIDE - 1} per structure")
    focus = grids[:, :, m : m + n, m : m + n, m : m + n].sum(dtype=np.float64)
    total = recipe.expected_sum(s)
    out = []
    for t, g in zip(tiles, grids, strict=True):
        codec.round(g)
        props = {
            "tile_index": np.asarray(t.index, dtype=np.float64),
            "focus": np.asarray([v for r in t.focus for v in r], dtype=np.float64),
            "parent_shape": np.asarray(plan.parent.shape, dtype=np.float64),
        }
        out.append(
            TileRecord(
                t.box,
                codec.encode(g) if codec.encodes_chunks else None,
                None if codec.encodes_chunks else g.astype(codec.np_dtype),
                props,
            )
        )
    return out, float(focus / total) if total else 1.0


def tile_columns(item: int, tiles: list[TileRecord]) -> tuple[list[int], list[dict[str, Any]]]:
    """(ids, tile properties) of the records of item ``item``'s tiles."""
    ids = [item * TILE_ID_STRIDE + t for t in range(len(tiles))]
    props = [{"parent_id": float(item), **r.properties} for r in tiles]
    return ids, props


def tile_attributes(settings: Settings) -> dict[str, Any]:
    """Shard attributes of a tile run (none otherwise)."""
    if settings.tiles is None:
        return {}
    return {"tile": settings.tiles[0], "tile_context": settings.tiles[1]}
