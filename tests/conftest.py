"""Shared fixtures: real molecules and crystals, and the instruction sets to test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pgrid_cli import available_isas

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"
MOSES100 = ROOT / "benchmarks" / "data" / "moses100.xyz"

#: Every instruction-set path this CPU can run; each kernel test runs on all of them.
ISAS = available_isas()


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def ase_molecules() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Real molecules from ASE's bundled G2 set: (name, positions Å, atomic numbers)."""
    from ase.build import molecule

    out = []
    for name in ("C6H6", "CH3CH2OH", "CH3COOH", "C4H4NH", "CH3SCH3", "CF3CN", "H2O"):
        atoms = molecule(name)
        out.append((name, atoms.get_positions(), atoms.get_atomic_numbers()))
    return out


@pytest.fixture(scope="session")
def drug_molecules() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """A few of sample_data/drugs.sdf (RDKit-embedded, with hydrogens)."""
    from rdkit import Chem

    mols = Chem.SDMolSupplier(str(SAMPLE / "drugs.sdf"), removeHs=False)
    out = []
    for i, m in enumerate(mols):
        if i >= 6:
            break
        z = np.array([a.GetAtomicNum() for a in m.GetAtoms()])
        out.append((m.GetProp("_Name"), m.GetConformer().GetPositions(), z))
    return out


def triclinic_lattice(a=6.0, b=6.5, c=7.0, alpha=75.0, beta=80.0, gamma=65.0) -> np.ndarray:
    """Rows a, b, c (Å) of a triclinic cell from its lengths and angles (degrees)."""
    al, be, ga = np.radians([alpha, beta, gamma])
    cx = c * np.cos(be)
    cy = c * (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    return np.array(
        [
            [a, 0, 0],
            [b * np.cos(ga), b * np.sin(ga), 0],
            [cx, cy, np.sqrt(c * c - cx * cx - cy * cy)],
        ]
    )
