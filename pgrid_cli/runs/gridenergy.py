"""The energy channel of ``pgrid grid`` (``--energy lj``): appended after the density
channels of a task's grids, at the same voxel centres (:mod:`pgrid_cli.core.energy`)."""

from __future__ import annotations

import numpy as np

from ..core.box import Box
from ..core.recipe import GridRecipe
from ..core.structure import Structure


def append_energy(
    grids: np.ndarray,
    ready: list[tuple[int, Structure, tuple[np.ndarray, Box]]],
    recipe: GridRecipe,
    threads: int,
    failed: list[tuple[int, Structure, str]],
) -> tuple[np.ndarray, list[tuple[int, Structure, str]]]:
    """(B, C + 1, nx, ny, nz) float32: ``grids`` (B, C, …) and the energy channel of each
    ready structure (crystals: its cell, every image within the cutoff; molecules: its
    box, no images). A structure the energy refuses (e.g. a cell too small for the
    cutoff) joins ``failed`` as (entry, structure, reason)."""
    spec = recipe.energy
    assert spec is not None
    b, c = grids.shape[:2]
    full = np.zeros((b, c + 1, *grids.shape[2:]), dtype=np.float32)
    full[:, :c] = grids
    done = {idx for idx, _, _ in failed}
    failed = list(failed)
    for k, (idx, s, (_, box)) in enumerate(ready):
        if idx in done:
            continue
        try:
            spec.grid_box(s.positions, s.numbers, box, s.lattice, out=full[k, c], threads=threads)
        except ValueError as exc:
            failed.append((idx, s, f"energy channel: {exc}"))
    return full, failed
