"""Gaussian cube files (``.cube``), written with ASE's :func:`ase.io.cube.write_cube`.

What the file holds:

* **Units: Bohr.** Voxel counts are written positive, which by the cube convention means
  that the origin, the three voxel vectors and the atom positions are in Bohr
  (ASE converts from Å with ``ase.units.Bohr``).
* **Values:** ``density`` (default) = amount / voxel volume in **atoms per Bohr³**, the
  per-volume quantity cube readers expect (electron densities are e/Bohr³);
  ``amount`` = pgrid's values unchanged (atoms per voxel). Written with ``%e``
  (7 significant digits).
* **Origin at the voxel centre:** the header origin is the centre of voxel (0, 0, 0),
  pgrid's corner origin + ½ (a/nx + b/ny + c/nz); point (i, j, k) is at origin + i·a/nx
  + j·b/ny + k·c/nz. The voxel vectors are a/nx, b/ny, c/nz, so triclinic cells are fine.
* **Order:** x outer, z inner, which is pgrid's [i, j, k] order with k fastest.
* **Atoms:** every atom of the structure at its Cartesian position (not wrapped), with
  its atomic number; the charge column is 0 (ASE's choice).
* The first comment line says what the grid is; the second is ASE's fixed
  ``OUTER LOOP: X, MIDDLE LOOP: Y, INNER LOOP: Z``. One channel per file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.box import Box
from . import ExportAtoms, Format, first_point, register, scaled


def write_cube_file(
    path: Path, grid: np.ndarray, box: Box, atoms: ExportAtoms | None, quantity: str, comment: str
) -> None:
    from ase import Atoms
    from ase.io.cube import write_cube
    from ase.units import Bohr

    if atoms is None:
        structure = Atoms(cell=box.axes)
    else:
        structure = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=box.axes)
    unit = "atoms/Bohr^3" if quantity == "density" else "atoms per voxel"
    with open(path, "w") as fh:
        write_cube(
            fh,
            structure,
            scaled(grid, box, quantity, Bohr),
            origin=first_point(box),
            comment=f"{comment} [{unit}]",
        )


FORMAT = register(
    Format(
        name="cube",
        suffixes=(".cube", ".cub"),
        writer=write_cube_file,
        summary="Gaussian cube: Bohr, atoms/Bohr³, atoms included, any cell (VMD, PyMOL, "
        "VESTA, Avogadro, ChimeraX)",
        atoms=True,
    )
)
