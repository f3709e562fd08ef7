"""Readers: input files → structures, one record at a time.

Every record of every input file becomes one :class:`~pgrid_cli.core.Structure` or one
:class:`Rejection` with a one-line reason. Formats register themselves
(:mod:`.registry`); each lives in its own module: :mod:`.xyz` (ASE), :mod:`.sdf` (RDKit),
:mod:`.cif` (pymatgen).
"""

from __future__ import annotations

from ..core.structure import Structure
from . import cif, complexes, mol2, mpjson, pdb, qm9, sdf, smiles, vasp, xyz  # noqa: F401  (registering)
from .files import (
    expand_inputs,
    iter_raw_records,
    iter_records,
    parse_record,
    preload_readers,
    source_bytes,
    source_name,
)
from .records import (
    BAD_CELL,
    CANNOT_GRID,
    CANNOT_TYPE,
    DIRECTORY,
    DISORDER,
    DISORDER_POLICIES,
    EMPTY,
    MALFORMED,
    MAX_RECORD_BYTES,
    NO_3D,
    NON_FINITE,
    OUTSIDE_BOX,
    PARSE_ERROR,
    TOO_LARGE,
    TRUNCATED,
    UNKNOWN_ELEMENT,
    UNREADABLE,
    RawRecord,
    ReadOptions,
    Rejection,
    UnreadableDirectory,
    check_structure,
    prepare_structure,
    printable,
)
from .registry import Reader, conformers_of, detect_format, format_from_name, formats, register

__all__ = [
    "BAD_CELL",
    "CANNOT_GRID",
    "CANNOT_TYPE",
    "DIRECTORY",
    "DISORDER",
    "DISORDER_POLICIES",
    "EMPTY",
    "MALFORMED",
    "MAX_RECORD_BYTES",
    "NON_FINITE",
    "NO_3D",
    "OUTSIDE_BOX",
    "PARSE_ERROR",
    "TOO_LARGE",
    "TRUNCATED",
    "UNKNOWN_ELEMENT",
    "UNREADABLE",
    "RawRecord",
    "ReadOptions",
    "Reader",
    "Rejection",
    "Structure",
    "UnreadableDirectory",
    "check_structure",
    "conformers_of",
    "detect_format",
    "expand_inputs",
    "format_from_name",
    "formats",
    "iter_raw_records",
    "iter_records",
    "parse_record",
    "preload_readers",
    "prepare_structure",
    "printable",
    "register",
    "source_bytes",
    "source_name",
]
