"""Partial charges as a signed channel ``charge`` (``--charge-channel gasteiger|file``).

The weight of an atom in ``charge`` is its partial charge (e), so the channel's grid sums
to the molecule's total charge (when the box holds its density).

* ``gasteiger``: Gasteiger–Marsili charges computed by RDKit (12 iterations) on the
  sanitised molecule with every hydrogen explicit; the charges of hydrogens the record
  lacks are added to their atom, so that the charges sum to the total formal charge also
  without explicit hydrogens. Elements without Gasteiger parameters (most metals) make the record
  ``cannot type``.
* ``file``: charges that came with the record, looked up in this order: the per-atom
  properties (``Structure.info["atom_properties"]``) ``partial_charge``,
  ``partial_charges``, ``PartialCharge``, ``PartialCharges``, ``_GasteigerCharge``,
  ``charge``, ``charges`` (SDF files carry them as RDKit atom property lists,
  ``> <atom.dprop.PartialCharge>``; extended XYZ as a ``charges`` column; QM9 its
  Mulliken ``charges``), then the RDKit atom
  properties ``_TriposPartialCharge`` (mol2 read by RDKit), ``PartialCharge`` and
  ``_GasteigerCharge`` of ``Structure.mol``. A record with none (or with a missing value)
  is ``cannot type``. pgrid has no PQR reader yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.channels import TypingError
from ..core.structure import Structure
from ..readers.properties import atom_properties
from .base import rdkit_mol, register

#: Per-atom properties read as partial charges by ``file``, first found first.
ATOM_PROPERTY_NAMES = (
    "partial_charge",
    "partial_charges",
    "PartialCharge",
    "PartialCharges",
    "_GasteigerCharge",
    "charge",
    "charges",
)
#: RDKit atom properties read as partial charges by ``file``, after the above.
MOL_PROPERTY_NAMES = ("_TriposPartialCharge", "PartialCharge", "_GasteigerCharge")
CHANNEL = "charge"
_ORGANIC = {"H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I"}


def gasteiger_charges(structure: Structure) -> np.ndarray:
    """(M,) float64 Gasteiger charges (e), implicit hydrogens' folded into their atom."""
    from rdkit.Chem import rdPartialCharges

    mol = rdkit_mol(structure)
    rdPartialCharges.ComputeGasteigerCharges(mol, 12, False)
    n = len(structure)
    q = np.zeros(n)
    for atom in mol.GetAtoms():
        value = atom.GetDoubleProp("_GasteigerCharge")
        i = atom.GetIdx()
        if i >= n:  # a hydrogen rdkit_mol added: its charge goes to its atom
            i = atom.GetNeighbors()[0].GetIdx()
        q[i] += value
    if not np.all(np.isfinite(q)):  # one atom without parameters spoils them all
        odd = sorted({a.GetSymbol() for a in mol.GetAtoms()} - _ORGANIC)
        raise TypingError(
            "RDKit's Gasteiger charges are undefined (NaN) for the molecule"
            + (f" (it holds {', '.join(odd)})" if odd else "")
        )
    return q


def file_charges(structure: Structure) -> np.ndarray:
    """(M,) float64 partial charges that came with the record (see the module docstring)."""
    n = len(structure)
    props = atom_properties(structure)
    for name in ATOM_PROPERTY_NAMES:
        if name in props:
            q = np.asarray(props[name], dtype=np.float64).reshape(-1)
            if q.shape != (n,) or not np.all(np.isfinite(q)):
                raise TypingError(f"the atom property {name} is not one finite number per atom")
            return q
    mol = structure.mol
    if mol is not None and mol.GetNumAtoms() == n:  # type: ignore[attr-defined]
        atoms = [mol.GetAtomWithIdx(i) for i in range(n)]  # type: ignore[attr-defined]
        for name in MOL_PROPERTY_NAMES:
            if all(a.HasProp(name) for a in atoms):
                return np.array([float(a.GetProp(name)) for a in atoms])
    raise TypingError(
        f"no partial charges in the record (looked for the atom properties "
        f"{', '.join(ATOM_PROPERTY_NAMES + MOL_PROPERTY_NAMES)})"
    )


@dataclass(frozen=True)
class GasteigerCharges:
    """The signed channel ``charge`` of Gasteiger charges (RDKit)."""

    name: str = "gasteiger"
    channels: tuple[str, ...] = (CHANNEL,)
    signed: bool = True

    def memberships(self, structure: Structure) -> np.ndarray:
        return gasteiger_charges(structure)[:, np.newaxis]


@dataclass(frozen=True)
class FileCharges:
    """The signed channel ``charge`` of the record's own partial charges."""

    name: str = "file"
    channels: tuple[str, ...] = (CHANNEL,)
    signed: bool = True

    def memberships(self, structure: Structure) -> np.ndarray:
        return file_charges(structure)[:, np.newaxis]


register(GasteigerCharges)
register(FileCharges)
