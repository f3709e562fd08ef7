"""OpenDX scalar fields (``.dx``), written with gridDataFormats' :mod:`gridData.OpenDX`.

What the file holds (the "data follows" subset that VMD, PyMOL, ChimeraX and APBS read):

* **Units: Å.** ``origin`` and the three ``delta`` rows (the voxel vectors a/nx, b/ny,
  c/nz, one per row, so triclinic cells are written exactly as they are).
* **Values:** ``density`` (default) = amount / voxel volume in **atoms per Å³**;
  ``amount`` = pgrid's values. Written as ``type "double"`` (PyMOL needs it), fixed
  point with 15 decimals.
* **Origin at the voxel centre:** ``origin`` is the centre of voxel (0, 0, 0), pgrid's
  corner origin + ½ voxel; point (i, j, k) is at origin + i·delta₀ + j·delta₁ + k·delta₂.
  gridData writes the origin with 6 decimals (1e-6 Å).
* **Order:** z fastest (C order of [i, j, k], as pgrid stores it).
* **No atoms:** DX has no place for them; load the structure alongside.

We use gridData's low-level :class:`gridData.OpenDX.field` rather than
:meth:`gridData.Grid.export`: ``Grid`` keeps only a diagonal spacing, while the
``gridpositions`` writer takes the full 3×3 ``delta`` that a triclinic cell needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.box import Box
from . import ExportAtoms, Format, first_point, register, scaled


def write_dx_file(
    path: Path, grid: np.ndarray, box: Box, atoms: ExportAtoms | None, quantity: str, comment: str
) -> None:
    from gridData import OpenDX

    del atoms  # DX carries no atoms
    unit = "atoms/Angstrom^3" if quantity == "density" else "atoms per voxel"
    values = np.ascontiguousarray(scaled(grid, box, quantity), dtype=np.float64)
    field = OpenDX.field(
        "density",
        components={
            "positions": OpenDX.gridpositions(1, grid.shape, first_point(box), box.voxel_axes),
            "connections": OpenDX.gridconnections(2, grid.shape),
            "data": OpenDX.array(3, values, type="double"),
        },
        comments=[
            comment[:76],
            f"values: {unit}; positions: Angstrom",
            "origin: centre of voxel (0,0,0); data: z fastest, then y, then x",
        ],
    )
    field.write(str(path))


FORMAT = register(
    Format(
        name="dx",
        suffixes=(".dx",),
        writer=write_dx_file,
        summary="OpenDX: Å, atoms/Å³, no atoms, any cell (VMD, PyMOL, ChimeraX, APBS tools)",
    )
)
