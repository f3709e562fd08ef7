"""PDB files (``.pdb``, ``.ent``, optionally ``.gz``): proteins, receptors, ligands.

Read with **gemmi**, with an RDKit molecule alongside. gemmi is the structural-biology
library that models what a PDB file holds — models, chains, residues, alternate
locations with their occupancies, HETATM flags, waters — so the policies below are a
few lines over its model, and it is fast on large receptors. RDKit's PDB parser, by
contrast, silently keeps one alternate location and discards the rest, so it cannot
implement ``altlocs``; it is used for what it does well — chemistry: once gemmi has
selected the atoms, RDKit reads them (in the same order, bonds from the standard residue
templates, CONECT records and proximity) into ``Structure.mol`` for chemistry-aware
channel typing, and adds hydrogens when asked.

Records: a file without ``MODEL`` lines is one record; otherwise each ``MODEL`` …
``ENDMDL`` block is one record (record k = model k + 1 of the file).

Policies (:class:`~pgrid_cli.readers.ReadOptions`, ``pgrid grid`` flags of the same
names; the default first):

* ``waters`` ``drop`` | ``keep``: water residues (HOH, WAT, DOD, … as gemmi knows them).
* ``altlocs`` ``highest-occupancy`` | ``first`` | ``all``: of a residue's alternate
  conformers (altloc letters), keep the one with the highest mean occupancy (a tie: the
  first in the file), or the first in the file, or all of them with each atom weighted
  by its occupancy (the grid then sums to the occupied atoms, as CIF ``disorder=weight``
  does). Atoms without an altloc are always kept. With ``all``, ``mol`` is not set (an
  RDKit molecule cannot hold two positions of one atom).
* ``hydrogens`` ``keep`` | ``drop`` | ``add``: ``add`` places missing hydrogens with RDKit
  (``AddHs(addCoords=True)``) after sanitising the molecule; bond orders come from RDKit's
  standard-residue templates and CONECT records, so a HETATM ligand without CONECT bond
  orders gets hydrogens for single bonds. A molecule RDKit cannot sanitise is rejected.
* ``hetatm`` ``keep`` | ``drop``: HETATM residues other than waters (ligands, ions,
  cofactors); waters follow ``waters``.
* ``models`` ``first`` | ``all``: with ``first``, records after the first model are
  rejected with kind ``model not kept`` (so that they are accounted for).

Each atom's occupancy and B-factor are kept as per-atom properties (``occupancy``,
``b_factor``), and residue-level facts as ``hetatm`` (1 for HETATM atoms).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.structure import Structure
from .files import Lines
from .properties import set_properties
from .records import (
    EMPTY,
    MODEL_NOT_KEPT,
    PARSE_ERROR,
    RawRecord,
    ReadOptions,
    Rejection,
    one_line,
    reject,
)
from .registry import Reader, register


def _frame_pdb(lines: Lines, source: str) -> Iterator[RawRecord | Rejection]:
    """One record per ``MODEL`` block, or the whole file when it has none."""
    record = 0
    body: list[str] = []
    size = 0
    in_model = False
    too_large = False
    start = 1
    while True:
        line = lines.readline()
        tag = line[:6].rstrip()
        if line and tag == "MODEL" and not in_model:
            if any(ln[:6].rstrip() in ("ATOM", "HETATM") for ln in body):
                yield RawRecord(source, record, "pdb", "".join(body), "", lines.offset)
                record += 1
            body, size, too_large, in_model, start = [], 0, False, True, lines.lineno
        if line:
            size += len(line)
            if size > lines.limit:
                too_large = True
                body = []
            elif not too_large:
                body.append(line)
        if not line or (in_model and tag == "ENDMDL"):
            name = f"model {record + 1}" if in_model or record else ""
            if too_large:
                yield lines.too_large(source, record, name, start)
                record += 1
            elif any(ln[:6].rstrip() in ("ATOM", "HETATM") for ln in body):
                yield RawRecord(source, record, "pdb", "".join(body), name, lines.offset)
                record += 1
            elif not line and record == 0:
                yield Rejection(source, 0, "", "no ATOM or HETATM records", EMPTY)
            if not line:
                return
            body, size, too_large, in_model = [], 0, False, False
            start = lines.lineno + 1


def _parse_pdb(raw: RawRecord, options: ReadOptions) -> Structure | Rejection:
    import gemmi

    if options.models == "first" and raw.record > 0:
        return reject(
            raw,
            f"model {raw.record + 1}: only the first model is kept (models=first)",
            MODEL_NOT_KEPT,
        )
    st = gemmi.read_pdb_string(raw.text)
    if len(st) == 0:
        return reject(raw, "no model with atoms", EMPTY)
    model = st[0]
    weights: list[float] = []
    for chain in model:
        for k in range(len(chain) - 1, -1, -1):
            res = chain[k]
            if (res.is_water() and options.waters == "drop") or (
                not res.is_water() and res.het_flag == "H" and options.hetatm == "drop"
            ):
                del chain[k]
                continue
            _select_altlocs(res, options.altlocs)
            if options.hydrogens == "drop":
                for i in range(len(res) - 1, -1, -1):
                    if res[i].is_hydrogen():
                        del res[i]
    st.remove_empty_chains()
    atoms = [(res, a) for chain in st[0] for res in chain for a in res]
    if not atoms:
        return reject(raw, "no atoms left after the waters/hetatm/hydrogens policies", EMPTY)
    numbers = np.array([a.element.atomic_number for _, a in atoms], dtype=np.int64)
    positions = np.array([[a.pos.x, a.pos.y, a.pos.z] for _, a in atoms], dtype=np.float64)
    occupancy = np.array([a.occ for _, a in atoms], dtype=np.float64)
    hetatm = np.array([r.het_flag == "H" for r, _ in atoms], dtype=np.float64)
    bfactor = np.array([a.b_iso for _, a in atoms], dtype=np.float64)
    weights = None
    if options.altlocs == "all" and any(a.has_altloc() for _, a in atoms):
        weights = np.where([a.has_altloc() for _, a in atoms], occupancy, 1.0)
    notes: list[str] = []
    mol = None
    if options.altlocs != "all" or weights is None:
        for _, a in atoms:
            a.altloc = "\0"  # one conformer is left: RDKit must not drop any atom
        text = st.make_pdb_string(gemmi.PdbWriteOptions(minimal=True))
        mol = _rdkit_mol(text, len(atoms), notes)
    if options.hydrogens == "add":
        added = _add_hydrogens(mol)
        if isinstance(added, str):
            return reject(raw, added, PARSE_ERROR)
        mol = added
        n_old = len(numbers)
        extra = mol.GetNumAtoms() - n_old
        numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
        positions = np.array(mol.GetConformer().GetPositions(), dtype=np.float64)
        occupancy, hetatm, bfactor = (
            np.concatenate([v, np.full(extra, fill)])
            for v, fill in ((occupancy, 1.0), (hetatm, 0.0), (bfactor, 0.0))
        )
        if extra:
            heavy = [a.GetNeighbors()[0].GetIdx() for a in mol.GetAtoms()][n_old:]
            hetatm[n_old:] = hetatm[heavy]
            notes.append(f"{extra} hydrogens added by RDKit")
    info: dict[str, object] = {"warnings": notes} if notes else {}
    set_properties(info, None, {"occupancy": occupancy, "b_factor": bfactor, "hetatm": hetatm})
    name = raw.name or (st.name if st.name else "")
    return Structure(
        numbers,
        positions,
        weights=weights,
        name=name,
        source=raw.source,
        record=raw.record,
        info=info,
        mol=mol,
    )


def _select_altlocs(res: Any, policy: str) -> None:
    """Keep one alternate conformer of a residue (in place) unless ``policy`` is ``all``."""
    if policy == "all":
        return
    letters: dict[str, list[float]] = {}
    for a in res:
        if a.has_altloc():
            letters.setdefault(a.altloc, []).append(a.occ)
    if len(letters) < 2:
        return
    if policy == "first":
        keep = next(iter(letters))
    else:  # highest mean occupancy; max() keeps the first of equals
        keep = max(letters, key=lambda k: float(np.mean(letters[k])))
    for i in range(len(res) - 1, -1, -1):
        if res[i].has_altloc() and res[i].altloc != keep:
            del res[i]


def _rdkit_mol(pdb_text: str, n_atoms: int, notes: list[str]) -> Any:
    """RDKit's molecule of the selected atoms (same order), or None (with a note)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        mol = Chem.MolFromPDBBlock(pdb_text, sanitize=False, removeHs=False)
    finally:
        RDLogger.EnableLog("rdApp.*")
    if mol is None or mol.GetNumAtoms() != n_atoms:
        notes.append("RDKit could not read the atoms as a molecule (no chemistry for typing)")
        return None
    return mol


def _add_hydrogens(mol: Any) -> Any:
    """``mol`` sanitised, with hydrogens placed by RDKit; or why not (one line)."""
    from rdkit import Chem

    if mol is None:
        return "hydrogens=add needs an RDKit molecule, and RDKit could not read the atoms"
    mol = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # RDKit raises its own exception types
        return f"hydrogens=add: RDKit cannot sanitise the molecule ({one_line(str(exc))})"
    return Chem.AddHs(mol, addCoords=True, addResidueInfo=True)


def _preload() -> None:
    import gemmi  # noqa: F401
    from rdkit import Chem  # noqa: F401


register(Reader("pdb", (".pdb", ".ent"), _frame_pdb, _parse_pdb, _preload, ("ent",)))
