"""``pharmacophore``: eight channels of pharmacophoric atom types, like moleculekit's.

``donor``, ``acceptor``, ``aromatic``, ``hydrophobe``, ``pos_ionizable`` and
``neg_ionizable`` are RDKit's feature families of ``BaseFeatures.fdef`` (in
``RDConfig.RDDataDir``): an atom is in a channel when it belongs to a feature of that
family — every atom of the feature, so a carboxylate's C, O and O are all
``neg_ionizable`` and every atom of an aromatic ring is ``aromatic`` (RDKit's aromatic
features are rings). ``hydrophobe`` is the atom-level ``Hydrophobe`` family (not
``LumpedHydrophobe``'s groups). The file also defines anionic oxygens (``[O;-]`` not on an
N=O) and aromatic ``o`` as acceptors on two ``Atomtype`` lines that RDKit's parser does
not apply (RDKit 2026.09: a carboxylate's O⁻ is no acceptor); pgrid adds them back, so
both carboxylate oxygens are acceptors. ``metal`` holds the metal atoms
(:data:`~pgrid_cli.typers.base.METALS`) and ``occupancy`` every heavy atom (Z > 1).
Hydrogens are in no channel. Every weight is 1; an atom may sit in several channels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.structure import Structure
from .base import METALS, rdkit_mol, register

CHANNELS = (
    "donor",
    "acceptor",
    "aromatic",
    "hydrophobe",
    "pos_ionizable",
    "neg_ionizable",
    "metal",
    "occupancy",
)
#: RDKit feature family → channel.
FAMILIES = {
    "Donor": "donor",
    "Acceptor": "acceptor",
    "Aromatic": "aromatic",
    "Hydrophobe": "hydrophobe",
    "PosIonizable": "pos_ionizable",
    "NegIonizable": "neg_ionizable",
}
#: Acceptors of BaseFeatures.fdef's ``Atomtype ChalcAcceptor`` lines (see the docstring).
EXTRA_ACCEPTORS = ("[O,S;-;!$(*-N=O)]", "[o;+0]")

_factory: Any = None
_extra: Any = None


def feature_factory() -> Any:
    """RDKit's feature factory of ``BaseFeatures.fdef`` (built once per process)."""
    global _factory, _extra
    if _factory is None:
        from rdkit import Chem, RDConfig
        from rdkit.Chem import ChemicalFeatures

        path = os.path.join(RDConfig.RDDataDir, "BaseFeatures.fdef")
        _factory = ChemicalFeatures.BuildFeatureFactory(path)
        _extra = [Chem.MolFromSmarts(s) for s in EXTRA_ACCEPTORS]
    return _factory


@dataclass(frozen=True)
class PharmacophoreTyper:
    """The eight pharmacophore channels (see the module docstring)."""

    name: str = "pharmacophore"
    channels: tuple[str, ...] = CHANNELS
    signed: bool = False

    def memberships(self, structure: Structure) -> np.ndarray:
        """(M, 8) float64 of 0/1. Raises TypingError without an RDKit molecule."""
        mol = rdkit_mol(structure)
        out = np.zeros((mol.GetNumAtoms(), len(CHANNELS)))
        column = {name: c for c, name in enumerate(CHANNELS)}
        for feature in feature_factory().GetFeaturesForMol(mol):
            channel = FAMILIES.get(feature.GetFamily())
            if channel is not None:
                out[list(feature.GetAtomIds()), column[channel]] = 1.0
        for pattern in _extra:
            for (atom,) in mol.GetSubstructMatches(pattern):
                out[atom, column["acceptor"]] = 1.0
        out = out[: len(structure)]  # not the hydrogens rdkit_mol added
        z = np.asarray(structure.numbers)
        out[np.isin(z, list(METALS)), column["metal"]] = 1.0
        out[z > 1, column["occupancy"]] = 1.0
        return out


register(PharmacophoreTyper)
