"""VASP CHGCAR files, written with pymatgen's :class:`pymatgen.io.vasp.outputs.Chgcar`.

CHGCAR is VASP's charge density over one periodic cell, so only periodic boxes (crystals)
are exported; a molecule box is refused (use cube or dx).

What the file holds:

* **A POSCAR header:** the comment, the lattice (the box's a, b, c in Å) and the atoms
  (VASP 5: element symbols and counts, then direct coordinates).
* **Values: ρ·V_cell**, VASP's convention: the density per Å³ times the cell volume in
  Å³, which for a pgrid grid is amount × (nx·ny·nz). The sum of all values divided by
  nx·ny·nz is then the number of atoms, as it is the number of electrons for VASP. The
  convention is fixed, so ``quantity="amount"`` is refused.
* **Order:** x fastest (Fortran order), 5 values per line, as VASP writes them.
* **Where the points are:** a CHGCAR has no origin: point (i, j, k) is at fractional
  (i/nx, j/ny, k/nz) of the cell. pgrid's values belong to the voxel centres,
  fractional (i+½)/nx … from the box origin, so the atoms are written translated by
  −(box origin + ½ voxel): every atom keeps its exact place relative to the grid, and a
  crystal is the same crystal after a translation. Readers that add the atoms back to
  the picture (VESTA, OVITO) therefore show them where pgrid's density is. Direct
  coordinates are wrapped into [0, 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.box import Box
from . import ExportAtoms, Format, register


def write_chgcar_file(
    path: Path, grid: np.ndarray, box: Box, atoms: ExportAtoms | None, quantity: str, comment: str
) -> None:
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.vasp.inputs import Poscar
    from pymatgen.io.vasp.outputs import Chgcar

    if quantity != "density":
        raise ValueError(
            f"CHGCAR stores ρ·V_cell (amount × nx·ny·nz) by definition; quantity "
            f"{quantity!r} does not apply"
        )
    if not box.periodic:
        raise ValueError(
            "CHGCAR holds one periodic cell (VASP's charge density); this is a molecule box, "
            "not a cell: export it as cube or dx"
        )
    if atoms is None or len(atoms.numbers) == 0:
        raise ValueError("a CHGCAR needs the atoms of the cell (its POSCAR header)")
    shape = np.asarray(box.shape, dtype=np.float64)
    frac = (box.fractional(atoms.positions) - 0.5 / shape) % 1.0
    frac[frac >= 1.0] = 0.0  # -1e-17 % 1.0 == 1.0
    structure = Structure(Lattice(box.axes), [int(z) for z in atoms.numbers], frac)
    data = grid * float(np.prod(box.shape))  # amount → ρ·V_cell
    chgcar = Chgcar(Poscar(structure), {"total": data})
    chgcar.name = comment or "pgrid grid"  # the first line (pymatgen writes .name there)
    chgcar.write_file(path)


FORMAT = register(
    Format(
        name="chgcar",
        suffixes=(".chgcar", ".vasp"),
        file_names=("CHGCAR", "CHG", "PARCHG"),
        writer=write_chgcar_file,
        summary="VASP CHGCAR: ρ·V_cell with lattice and atoms, periodic cells only "
        "(VESTA, OVITO, pymatgen, ASE)",
        atoms=True,
    )
)
