"""``xs``: the XS atom types of AutoDock Vina / smina, gnina's and libmolgrid's default
typing, one channel per type (rules as in Vina's ``model::assign_types``, perceived with
RDKit; docs/typing.md):

* carbon: ``C_P`` when bonded to a heteroatom (any neighbour other than C and H), else
  the hydrophobic ``C_H``;
* nitrogen and oxygen: *donor* when bonded to a hydrogen (explicit or implicit), *acceptor*
  as AutoDock's NA/OA types, which smina takes from OpenBabel's ``IsHbondAcceptor``: every
  oxygen but a positively charged one; a nitrogen unless it is positively charged, has
  four neighbours, or has three and is planar (sp2 or aromatic: amide, aniline, pyrrole
  and nitro nitrogens); → ``N_P``/``N_D``/``N_A``/``N_DA`` and ``O_P``/``O_D``/``O_A``/
  ``O_DA``;
* ``S_P``, ``P_P``; the halogens ``F_H``, ``Cl_H``, ``Br_H``, ``I_H``; metals
  (:data:`~pgrid_cli.typers.base.METALS`) ``Met_D``; any other heavy atom (B, Si, Se …)
  ``other``. Hydrogens are in no channel (Vina and gnina's default types leave them out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.structure import Structure
from .base import METALS, rdkit_mol, register

CHANNELS = (
    "C_H",
    "C_P",
    "N_P",
    "N_D",
    "N_A",
    "N_DA",
    "O_P",
    "O_D",
    "O_A",
    "O_DA",
    "S_P",
    "P_P",
    "F_H",
    "Cl_H",
    "Br_H",
    "I_H",
    "Met_D",
    "other",
)
_FIXED = {15: "P_P", 16: "S_P", 9: "F_H", 17: "Cl_H", 35: "Br_H", 53: "I_H"}


def xs_type(atom: object) -> str | None:
    """The XS type of one atom of a sanitised RDKit molecule (None for hydrogen)."""
    from rdkit import Chem

    z = atom.GetAtomicNum()  # type: ignore[attr-defined]
    if z == 1:
        return None
    if z in _FIXED:
        return _FIXED[z]
    if z in METALS:
        return "Met_D"
    if z not in (6, 7, 8):
        return "other"
    neighbours = atom.GetNeighbors()  # type: ignore[attr-defined]
    if z == 6:
        return "C_P" if any(n.GetAtomicNum() not in (1, 6) for n in neighbours) else "C_H"
    donor = atom.GetTotalNumHs(includeNeighbors=True) > 0  # type: ignore[attr-defined]
    charge = atom.GetFormalCharge()  # type: ignore[attr-defined]
    if z == 8:
        acceptor = charge <= 0
    else:
        degree = atom.GetTotalDegree()  # type: ignore[attr-defined]
        planar = atom.GetIsAromatic() or atom.GetHybridization() in (  # type: ignore[attr-defined]
            Chem.HybridizationType.SP2,
        )
        acceptor = charge <= 0 and degree < 4 and not (degree == 3 and planar)
    element = "N" if z == 7 else "O"
    suffix = "DA" if donor and acceptor else "D" if donor else "A" if acceptor else "P"
    return f"{element}_{suffix}"


@dataclass(frozen=True)
class XSTyper:
    """One channel per XS type (see the module docstring)."""

    name: str = "xs"
    channels: tuple[str, ...] = CHANNELS
    signed: bool = False

    def memberships(self, structure: Structure) -> np.ndarray:
        """(M, 18) float64 one-hot rows (zero rows for hydrogens)."""
        mol = rdkit_mol(structure)
        out = np.zeros((len(structure), len(CHANNELS)))
        column = {name: c for c, name in enumerate(CHANNELS)}
        for atom in mol.GetAtoms():
            if atom.GetIdx() >= len(structure):
                break  # hydrogens added by rdkit_mol
            t = xs_type(atom)
            if t is not None:
                out[atom.GetIdx(), column[t]] = 1.0
        return out


register(XSTyper)
