"""MRC / CCP4 maps (``.mrc``, ``.map``), written with :mod:`mrcfile` (MRC2014, mode 2).

What the file holds:

* **Units: Å.** ``voxel_size`` = the voxel edge lengths (so ``cella`` = the box lengths),
  ``origin`` = the centre of voxel (0, 0, 0) in Å (pgrid's corner origin + ½ voxel),
  ``nxstart`` … = 0, cell angles 90°.
* **Values:** ``density`` (default) = amount / voxel volume in **atoms per Å³**;
  ``amount`` = pgrid's values. float32 (mode 2), header statistics filled in.
* **Order:** MRC stores sections with x fastest and z slowest (``mapc, mapr, maps`` =
  1, 2, 3), so pgrid's [i, j, k] array is written transposed, as [k, j, i]; point
  (i, j, k) is at origin + (i·dx, j·dy, k·dz).
* **No atoms** (MRC has no place for them).

**Only axis-aligned rectangular boxes** are exported (every molecule box of pgrid, and
orthorhombic cells given along x, y, z). MRC readers place a map along the x, y, z axes
and most of them (EM software, mrcfile's validator, many ChimeraX paths) assume 90° cells:
the cell-angle fields exist but are read inconsistently, their skewed frame is fixed to
the crystallographic standard orientation, and a rotated box cannot be expressed at all.
Writing a triclinic or rotated grid would therefore put the density somewhere other than
where the atoms are without any error. Such boxes are refused with a message pointing to
cube and dx, which carry the voxel vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.box import Box
from . import ExportAtoms, Format, first_point, register, scaled

#: Off-diagonal axis components allowed, relative to the axis length.
AXIS_RTOL = 1e-9


def check_axis_aligned(box: Box) -> None:
    """ValueError unless ``box``'s a, b, c point along +x, +y, +z."""
    axes = box.axes
    off = np.abs(axes - np.diag(np.diag(axes)))
    if np.all(off <= AXIS_RTOL * box.lengths[:, None]) and np.all(np.diag(axes) > 0):
        return
    if box.is_orthogonal:
        why = "this box's edges are perpendicular but not along +x, +y, +z"
    else:
        a, b, c = axes / box.lengths[:, None]
        ang = np.degrees(np.arccos(np.clip([b @ c, a @ c, a @ b], -1.0, 1.0)))
        why = f"this box is triclinic (α, β, γ = {ang[0]:.1f}°, {ang[1]:.1f}°, {ang[2]:.1f}°)"
    raise ValueError(
        f"MRC maps are axis-aligned rectangular grids, but {why}: export this box as cube "
        f"or dx, which carry the voxel vectors"
    )


def write_mrc_file(
    path: Path, grid: np.ndarray, box: Box, atoms: ExportAtoms | None, quantity: str, comment: str
) -> None:
    import mrcfile

    del atoms  # MRC carries no atoms
    check_axis_aligned(box)
    values = scaled(grid, box, quantity).astype(np.float32)
    step = np.diag(box.axes) / np.asarray(box.shape, dtype=np.float64)
    origin = first_point(box)
    unit = "atoms/A^3" if quantity == "density" else "atoms per voxel"
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(values.transpose(2, 1, 0)))
        mrc.voxel_size = tuple(float(s) for s in step)
        mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = (float(o) for o in origin)
        label = f"{comment} [{unit}]".encode("ascii", "replace").decode("ascii")
        mrc.add_label("".join(ch if ch.isprintable() else "?" for ch in label)[:80])


FORMAT = register(
    Format(
        name="mrc",
        suffixes=(".mrc", ".map", ".ccp4"),
        writer=write_mrc_file,
        summary="MRC2014/CCP4 map: Å, atoms/Å³, no atoms, axis-aligned boxes only "
        "(ChimeraX, PyMOL, Coot, EM tools)",
    )
)
