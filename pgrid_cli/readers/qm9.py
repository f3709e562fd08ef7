"""QM9 (Ramakrishnan et al., Sci. Data 1, 140022 (2014)): XYZ files with a property line.

A QM9 record is an XYZ frame whose comment line is ``gdb <index>`` and 15 numbers, whose
atom lines have a fifth column (the Mulliken partial charge, e), and which is followed
by three lines: the harmonic frequencies (cm⁻¹), the SMILES from GDB-17 and after
relaxation, the InChI likewise. Numbers may be written with Mathematica's exponent
(``1.2*^-5`` = 1.2e-5). ``.xyz`` files whose frames have such a comment line are read
as QM9 (the XYZ framing detects it); ``--format qm9`` reads every frame so.

Properties (units as in the paper's Table 3): ``gdb_id``; ``A``, ``B``, ``C`` rotational
constants (GHz); ``mu`` dipole moment (Debye); ``alpha`` isotropic polarizability
(Bohr³); ``homo``, ``lumo``, ``gap`` (Hartree); ``r2`` electronic spatial extent (Bohr²);
``zpve`` (Hartree); ``U0``, ``U`` internal energy at 0 K and 298.15 K, ``H`` enthalpy and
``G`` free energy at 298.15 K (Hartree); ``Cv`` heat capacity at 298.15 K (cal/(mol K));
``frequencies`` (an array, cm⁻¹); ``smiles_gdb``, ``smiles_relaxed``, ``inchi_gdb``,
``inchi_relaxed`` (strings). Atom property: ``charges`` (Mulliken, e).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..core.channels import atomic_number
from ..core.structure import Structure
from .files import Lines
from .properties import set_properties
from .records import MALFORMED, PARSE_ERROR, RawRecord, ReadOptions, Rejection, reject
from .registry import Reader, register
from .xyz import QM9_TRAILER, frame_xyz

#: The 15 numbers after ``gdb <index>``, in file order.
QM9_PROPERTIES = (
    "A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv",
)  # fmt: skip
#: Units of every QM9 property (the paper's Table 3).
QM9_UNITS = {
    "gdb_id": "",
    "A": "GHz",
    "B": "GHz",
    "C": "GHz",
    "mu": "Debye",
    "alpha": "Bohr^3",
    "homo": "Hartree",
    "lumo": "Hartree",
    "gap": "Hartree",
    "r2": "Bohr^2",
    "zpve": "Hartree",
    "U0": "Hartree",
    "U": "Hartree",
    "H": "Hartree",
    "G": "Hartree",
    "Cv": "cal/(mol K)",
    "frequencies": "cm^-1",
    "charges": "e",
}


def qm9_float(text: str) -> float:
    """A QM9 number: ``1.5``, ``-3e-2`` or Mathematica's ``1.2*^-5``."""
    return float(text.replace("*^", "e"))


def _frame_qm9(lines: Lines, source: str) -> Iterator[RawRecord | Rejection]:
    return frame_xyz(lines, source, qm9=True)


def _parse_qm9(raw: RawRecord, _options: ReadOptions) -> Structure | Rejection:
    lines = raw.text.splitlines()
    try:
        natoms = int(lines[0].strip())
    except (IndexError, ValueError):
        return reject(raw, "a QM9 record starts with its number of atoms", MALFORMED)
    if len(lines) < natoms + 2 + QM9_TRAILER:
        return reject(raw, "truncated QM9 record", MALFORMED)
    head = lines[1].split()
    if len(head) != 17 or head[0] != "gdb":
        return reject(
            raw, f"QM9 comment line must be 'gdb <index>' and 15 numbers, got {len(head)} fields",
            MALFORMED,
        )  # fmt: skip
    try:
        props: dict[str, object] = {"gdb_id": float(int(head[1]))}
        props.update(zip(QM9_PROPERTIES, (qm9_float(v) for v in head[2:]), strict=True))
    except ValueError as exc:
        return reject(raw, f"QM9 comment line: {exc}", PARSE_ERROR)
    numbers = np.zeros(natoms, dtype=np.int64)
    positions = np.zeros((natoms, 3))
    charges = np.full(natoms, np.nan)
    for i, line in enumerate(lines[2 : 2 + natoms]):
        fields = line.split()
        try:
            numbers[i] = atomic_number(fields[0])
            positions[i] = [qm9_float(v) for v in fields[1:4]]
            if len(fields) > 4:
                charges[i] = qm9_float(fields[4])
        except (IndexError, ValueError) as exc:
            return reject(raw, f"QM9 atom line {i + 1}: {exc}", PARSE_ERROR)
    freq_line, smiles_line, inchi_line = lines[2 + natoms : 2 + natoms + QM9_TRAILER]
    try:
        props["frequencies"] = np.array([qm9_float(v) for v in freq_line.split()])
    except ValueError as exc:
        return reject(raw, f"QM9 frequencies line: {exc}", PARSE_ERROR)
    smiles, inchi = smiles_line.split(), inchi_line.split()
    if len(smiles) != 2 or len(inchi) != 2:
        return reject(
            raw, "QM9 records end with two SMILES on one line and two InChI on the next",
            MALFORMED,
        )  # fmt: skip
    props.update(
        smiles_gdb=smiles[0], smiles_relaxed=smiles[1], inchi_gdb=inchi[0], inchi_relaxed=inchi[1]
    )
    info = set_properties({}, props, {"charges": charges})
    return Structure(
        numbers, positions, name=raw.name, source=raw.source, record=raw.record, info=info
    )


def _preload() -> None:
    pass


register(Reader("qm9", (), _frame_qm9, _parse_qm9, _preload))
