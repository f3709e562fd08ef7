"""SMILES with 3D conformers (RDKit): ``.smi``/``.smiles`` files, and CSV/TSV tables with
a SMILES column (``--format smiles``; the column is the first whose header is ``smiles``,
any case, else the first column).

Each line is one record. A ``.smi`` line is ``SMILES [name]`` (whitespace-separated); a
table's other columns are kept as properties (numbers as numbers), its ``name``/``id``
column as the name. Every molecule gets hydrogens (``ReadOptions.add_hydrogens``) and one
3D conformer from RDKit's ETKDG v3 with a seed fixed by the record (``embed_seed``, the
record's index and its SMILES), so a run gives the same coordinates for any number of
workers; ``relax`` then optimises it with MMFF94 (UFF when MMFF has no parameters).
Invalid SMILES and embedding failures are rejected records.

With ``ReadOptions.conformers`` K > 1 every line is read K times (records ``conformer``
0 … K-1, the property ``conformer``), each an ETKDG v3 embedding seeded by the record,
its SMILES and the conformer number (conformer 0 is the conformer of K = 1); a conformer
that fails to embed is rejected alone, the others are kept.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.structure import Structure
from .files import Lines
from .properties import set_properties
from .records import EMPTY, MALFORMED, PARSE_ERROR, RawRecord, ReadOptions, Rejection, reject
from .registry import Reader, register

#: Separator of a table's columns in a record's text (tab: never inside a SMILES).
_SEP = "\t"


def _frame_smiles(lines: Lines, source: str) -> Iterator[RawRecord | Rejection]:
    """One record per non-blank, non-comment line; a table's header line is read first."""
    first = lines.readline()
    while first and (not first.strip() or first.startswith("#")):
        first = lines.readline()
    if not first:
        return
    delimiter = "\t" if "\t" in first else ("," if "," in first else None)
    header: list[str] | None = None
    if delimiter is not None:
        cells = next(csv.reader([first], delimiter=delimiter))
        if any(c.strip().lower() == "smiles" for c in cells):
            header = [c.strip() for c in cells]
        else:
            lines.unread(first)
    else:
        lines.unread(first)
    record = 0
    while line := lines.readline():
        if not line.strip() or line.startswith("#"):
            continue
        if len(line) > lines.limit:
            yield lines.too_large(source, record, "", lines.lineno)
            record += 1
            continue
        if delimiter is not None:
            cells = next(csv.reader([line], delimiter=delimiter))
        else:
            cells = line.split(maxsplit=1)
        cells = [c.strip() for c in cells]
        names = header or (["smiles", "name"] if delimiter is None else [])
        if not names:  # a table without a header: SMILES first, then the name
            names = ["smiles", "name", *(f"column_{k}" for k in range(2, len(cells)))]
        if len(cells) > len(names):
            yield Rejection(
                source, record, "", f"line {lines.lineno}: more columns than the header", MALFORMED
            )
            record += 1
            continue
        row = dict(zip(names, cells, strict=False))
        name = next((row[k] for k in row if k.lower() in ("name", "id", "title")), "")
        text = _SEP.join(f"{k}={v}" for k, v in row.items())
        yield RawRecord(source, record, "smiles", text, name[:200], lines.offset)
        record += 1


def _parse_smiles(raw: RawRecord, options: ReadOptions) -> Structure | Rejection:
    from rdkit import Chem

    row = dict(cell.split("=", 1) for cell in raw.text.split(_SEP))
    key = next((k for k in row if k.lower() == "smiles"), next(iter(row)))
    smiles = row.pop(key)
    if not smiles:
        return reject(raw, "empty SMILES", EMPTY)
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        why = f"RDKit cannot parse the SMILES {smiles[:80]!r}"
        return reject(
            raw, why if raw.conformer is None else f"conformer {raw.conformer}: {why}", PARSE_ERROR
        )
    k = raw.conformer
    # conformer 0 is the one conformer of a run without conformers; the others are seeded
    # by their number too
    embedded = embed_3d(mol, raw.record, f"{smiles}:{k}" if k else smiles, options)
    if isinstance(embedded, str):
        return reject(raw, f"conformer {k}: {embedded}" if k is not None else embedded, PARSE_ERROR)
    mol, notes = embedded
    info: dict[str, object] = {"warnings": notes} if notes else {}
    props = {k: _number(v) for k, v in row.items() if k.lower() not in ("name", "id", "title")}
    if k is not None:
        props["conformer"] = k
    set_properties(info, {"smiles": smiles, **props})
    n = mol.GetNumAtoms()
    return Structure(
        np.array([mol.GetAtomWithIdx(i).GetAtomicNum() for i in range(n)], dtype=np.int64),
        np.array(mol.GetConformer().GetPositions(), dtype=np.float64),
        name=raw.name,
        source=raw.source,
        record=raw.record,
        info=info,
        mol=mol,
    )


def embed_3d(mol: Any, record: int, key: str, options: ReadOptions) -> tuple[Any, list[str]] | str:
    """``mol`` (an RDKit molecule) with hydrogens (``options.add_hydrogens``) and one 3D
    conformer (ETKDG v3 seeded by :func:`embed_seed` of ``record`` and ``key``), relaxed
    if ``options.relax``: (molecule, notes), or why it could not be embedded."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    if options.add_hydrogens:
        mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = embed_seed(options.embed_seed, record, key)
    if AllChem.EmbedMolecule(mol, params) != 0:
        return f"RDKit could not embed {key[:80]!r} in 3D (ETKDG v3)"
    notes = []
    if options.relax:
        if AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol)
        else:
            AllChem.UFFOptimizeMolecule(mol)
            notes.append("relaxed with UFF (MMFF94 has no parameters for the molecule)")
    return mol, notes


def embed_seed(seed: int, record: int, smiles: str) -> int:
    """ETKDG's random seed of a record: fixed by the run's seed, the record's index and
    its SMILES (not by which worker parses it)."""
    return zlib.crc32(f"{seed}:{record}:{smiles}".encode()) & 0x7FFFFFFF


def _number(v: str) -> object:
    try:
        return float(v)
    except ValueError:
        return v


def _preload() -> None:
    from rdkit.Chem import AllChem  # noqa: F401


register(
    Reader(
        "smiles",
        (".smi", ".smiles"),
        _frame_smiles,
        _parse_smiles,
        _preload,
        ("smi",),
        conformers=True,
    )
)
