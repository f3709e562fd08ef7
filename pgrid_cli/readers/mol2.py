"""Tripos mol2 files (``.mol2``, optionally ``.gz``), read with RDKit.

RDKit reads mol2 atom types into chemistry (bond orders, aromaticity, formal charges),
which is what mol2 ligands are used for (typing), and keeps each atom's partial charge;
gemmi has no mol2 reader. A file holds one record per ``@<TRIPOS>MOLECULE`` section.

Kept per record: ``Structure.mol`` (RDKit, same atom order), the partial charges of the
``ATOM`` section as ``info['charges']`` ((M,) float64, e) and as the per-atom property
``charge`` (stored in shards). The molecule is not sanitised, so that an unusual valence
loses no record. Of the PDB policies only ``hydrogens`` applies (``keep`` | ``drop`` |
``add``; ``add`` sanitises the molecule and places hydrogens with RDKit, their charges
are 0). A record RDKit cannot read is rejected with its log's reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.structure import Structure
from .files import Lines
from .properties import set_properties
from .records import EMPTY, PARSE_ERROR, RawRecord, ReadOptions, Rejection, one_line, reject
from .registry import Reader, register

_MOLECULE = "@<TRIPOS>MOLECULE"


def _frame_mol2(lines: Lines, source: str) -> Iterator[RawRecord | Rejection]:
    """Records from one ``@<TRIPOS>MOLECULE`` line to the next (anything before the
    first one, such as comments, is skipped)."""
    record = 0
    body: list[str] | None = None
    size = 0
    start = 0
    while True:
        line = lines.readline()
        if not line or line.startswith(_MOLECULE):
            if body is not None:
                name = body[1].strip()[:200] if len(body) > 1 else ""
                if size > lines.limit:
                    yield lines.too_large(source, record, name, start)
                else:
                    yield RawRecord(source, record, "mol2", "".join(body), name, lines.offset)
                record += 1
            if not line:
                if record == 0:
                    yield Rejection(source, 0, "", f"no {_MOLECULE} section", EMPTY)
                return
            body, size, start = [line], len(line), lines.lineno
        elif body is not None:
            size += len(line)
            if size <= lines.limit:
                body.append(line)
            elif len(body) > 2:
                del body[2:]


def _parse_mol2(raw: RawRecord, options: ReadOptions) -> Structure | Rejection:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        mol = Chem.MolFromMol2Block(raw.text, sanitize=False, removeHs=False)
    finally:
        RDLogger.EnableLog("rdApp.*")
    if mol is None:
        return reject(
            raw, "RDKit cannot parse the mol2 record (bad ATOM or BOND section)", PARSE_ERROR
        )
    if mol.GetNumAtoms() == 0:
        return reject(raw, "empty structure (no atoms)", EMPTY)
    if mol.GetNumConformers() == 0:
        return reject(raw, "the record has no coordinates", PARSE_ERROR)
    notes: list[str] = []
    if options.hydrogens == "drop":
        mol = Chem.RWMol(mol)
        for i in sorted(
            (a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() == 1), reverse=True
        ):
            mol.RemoveAtom(i)
        mol = mol.GetMol()
        if mol.GetNumAtoms() == 0:
            return reject(raw, "no atoms left after dropping hydrogens", EMPTY)
    elif options.hydrogens == "add":
        n_old = mol.GetNumAtoms()
        for atom in mol.GetAtoms():  # mol2 atoms are all explicit: let RDKit count missing Hs
            atom.SetNoImplicit(False)
        try:
            Chem.SanitizeMol(mol)
        except Exception as exc:  # RDKit raises its own exception types
            return reject(
                raw,
                f"hydrogens=add: RDKit cannot sanitise the molecule ({one_line(str(exc))})",
                PARSE_ERROR,
            )
        mol = Chem.AddHs(mol, addCoords=True)
        if mol.GetNumAtoms() > n_old:
            notes.append(f"{mol.GetNumAtoms() - n_old} hydrogens added by RDKit")
    charges = np.array([_charge(a) for a in mol.GetAtoms()], dtype=np.float64)
    info: dict[str, object] = {"warnings": notes} if notes else {}
    info["charges"] = charges
    set_properties(info, None, {"charge": charges})
    name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else raw.name
    return Structure(
        np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64),
        np.array(mol.GetConformer().GetPositions(), dtype=np.float64),
        name=name or raw.name,
        source=raw.source,
        record=raw.record,
        info=info,
        mol=mol,
    )


def _charge(atom: Any) -> float:
    return (
        atom.GetDoubleProp("_TriposPartialCharge") if atom.HasProp("_TriposPartialCharge") else 0.0
    )


def _preload() -> None:
    from rdkit import Chem  # noqa: F401


register(Reader("mol2", (".mol2",), _frame_mol2, _parse_mol2, _preload))
