"""SDF / MDL mol files (read with RDKit): records cut at their ``$$$$`` line."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from ..core.structure import Structure
from .files import Lines
from .properties import set_properties, text_value
from .records import EMPTY, NO_3D, PARSE_ERROR, RawRecord, ReadOptions, Rejection, reject
from .registry import Reader, register
from .smiles import embed_3d


def _frame_sdf(lines: Lines, source: str) -> Iterator[RawRecord | Rejection]:
    """SDF records: everything up to a ``$$$$`` line (the last one may lack it).

    A record larger than ``lines.limit`` is read to its end without being kept (but for
    its first line, the name) and rejected.
    """
    record = 0
    body: list[str] = []
    size = 0
    limit = lines.limit
    start = 1
    while True:
        line = lines.readline()
        if not line or line.startswith("$$$$"):
            if size > limit:
                name = body[0].strip()[:200] if body else ""
                yield lines.too_large(source, record, name, start)
                record += 1
            else:
                text = "".join(body)
                if line or text.strip():
                    if text.strip():
                        name = body[0].strip()[:200]
                        yield RawRecord(source, record, "sdf", text, name, lines.offset)
                    else:
                        reason = f"line {start}: empty SDF record"
                        yield Rejection(source, record, "", reason, EMPTY)
                    record += 1
            if not line:
                return
            body = []
            size = 0
            start = lines.lineno + 1
        else:
            size += len(line)
            if size <= limit:
                body.append(line)
            elif len(body) > 1:  # too large: keep the name line only
                del body[1:]


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\]\s*")


def _rdkit_reason(messages: list[str]) -> str:
    """The last meaningful line RDKit logged (its final line names the problem)."""
    lines = [_TIMESTAMP.sub("", m).strip() for m in messages]
    lines = [ln for ln in lines if ln and not ln.startswith(("*", "-")) and "#" not in ln[:4]]
    return lines[-1] if lines else "RDKit could not parse the record"


def _parse_sdf(raw: RawRecord, options: ReadOptions) -> Structure | Rejection:
    from rdkit import Chem, rdBase

    # RDKit reports why a record failed only through its log: route the log to Python
    # logging for this call and keep the messages instead of printing them.
    logger = logging.getLogger("rdkit")
    capture = _LogCapture()
    saved = (logger.handlers[:], logger.propagate, logger.level)
    rdBase.LogToPythonLogger()
    logger.handlers[:] = [capture]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        # Gridding needs elements and coordinates only, so the molecule is not
        # sanitised: an unusual valence is no reason to lose a record.
        mol = Chem.MolFromMolBlock(raw.text, sanitize=False, removeHs=False, strictParsing=True)
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])
        rdBase.LogToCppStreams()
    if mol is None:
        return reject(
            raw, f"RDKit cannot parse the record: {_rdkit_reason(capture.messages)}", PARSE_ERROR
        )
    name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else raw.name
    if mol.GetNumAtoms() == 0:
        return reject(raw, "empty structure (no atoms)", EMPTY, name)
    notes: list[str] = []
    text = raw.text  # the atoms of ``mol``, in order (not after an embedding)
    k = raw.conformer  # with conformers K > 1 (and embed): 0 … K-1
    flat = mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D()
    if flat or k:
        if flat and not options.embed:
            return reject(
                raw,
                "no 3D coordinates (a 2D record; embed it in 3D first, or embed=True)",
                NO_3D,
                name,
            )
        # A 2D record is embedded (hydrogens added); conformer k >= 1 of a 3D record is
        # a new embedding of the record's own atoms. Conformer 0 of a 3D record is the
        # record as it is.
        embedded = _embed(mol, raw, options, k, flat)
        if isinstance(embedded, str):
            return reject(
                raw, embedded if k is None else f"conformer {k}: {embedded}", PARSE_ERROR, name
            )
        mol, notes = embedded
        text = "" if flat else text
    positions = np.array(mol.GetConformer().GetPositions(), dtype=np.float64)
    numbers = atomic_numbers(mol, text)
    notes = [_TIMESTAMP.sub("", m).strip() for m in capture.messages if m.strip()] + notes
    info: dict[str, object] = {"warnings": notes} if notes else {}
    props, per_atom = sdf_tags(raw.text, len(numbers))
    if k is not None:
        props["conformer"] = k
    set_properties(info, props, per_atom)
    return Structure(
        numbers, positions, name=name, source=raw.source, record=raw.record, info=info, mol=mol
    )


@functools.cache
def _element_table() -> dict[str, int]:
    """Element symbol → atomic number, 1-118, from RDKit's periodic table."""
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    return {table.GetElementSymbol(z): z for z in range(1, 119)}


def atomic_numbers(mol: Any, text: str) -> np.ndarray:
    """(M,) int64 atomic numbers of ``mol``, which RDKit parsed from the mol block ``text``.

    Asking RDKit atom by atom costs ~1 µs per atom from Python, more than the rest of the
    parse; so for a V2000 block whose atom symbols (columns 32-34, which RDKit reads) are
    all plain element symbols, they are looked up instead: the same atoms in the same
    order. Anything else (V3000, D/T, R#, query atoms and lists, ``text`` empty) asks RDKit.
    """
    n = mol.GetNumAtoms()
    lines = text.split("\n", n + 4) if text else []
    if len(lines) > n + 3 and lines[3].rstrip()[-5:] == "V2000":
        table = _element_table()
        found = [table.get(ln[31:34].strip(), 0) for ln in lines[4 : 4 + n]]
        if all(found):
            return np.array(found, dtype=np.int64)
    # Indexing atoms directly is twice as fast as RDKit's Python-level atom sequence.
    return np.array([mol.GetAtomWithIdx(i).GetAtomicNum() for i in range(n)], dtype=np.int64)


def _embed(
    mol: Any, raw: RawRecord, options: ReadOptions, k: int | None, flat: bool
) -> tuple[Any, list[str]] | str:
    """One ETKDG v3 conformer of a record, seeded by the record, its canonical SMILES and
    ``k`` (conformer k >= 1), as SMILES inputs are: of a 2D record (``flat``; sanitised,
    hydrogens placed anew), or conformer k >= 1 of a 3D record (its own atoms: none added,
    the order kept, so every conformer has the atoms of conformer 0)."""
    from rdkit import Chem

    mol = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # RDKit raises its own exception types
        what = (
            "the 2D record: RDKit cannot sanitise it"
            if flat
            else "another conformer: RDKit cannot sanitise the record"
        )
        return f"cannot embed {what} ({exc})"
    if flat:
        mol = Chem.RemoveHs(mol)  # explicit 2D hydrogens are placed again in 3D
    smiles = Chem.MolToSmiles(mol)
    embedded = embed_3d(
        mol,
        raw.record,
        f"{smiles}:{k}" if k else smiles,
        options if flat else replace(options, add_hydrogens=False),
    )
    if isinstance(embedded, str):
        return embedded
    note = (
        "embedded in 3D from a 2D record (ETKDG v3)"
        if flat
        else f"conformer {k}: a new ETKDG v3 embedding of the record"
    )
    return embedded[0], [*embedded[1], note]


#: What ``str.splitlines`` splits at.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_TAG = re.compile(r"^>.*?<([^>]+)>")
_ATOM_LIST = re.compile(r"^atom\.(d|i|b|)prop\.(.+)$")


def sdf_tags(text: str, n_atoms: int) -> tuple[dict[str, object], dict[str, object]]:
    """The data items of an SDF record (``> <name>`` then value lines up to a blank
    line), as RDKit's ``GetPropsAsDict`` has them: a value that reads as a number is a
    number, a multi-line value is its lines joined by newlines. RDKit's atom property
    lists (``atom.dprop.NAME``, ``atom.iprop.``, ``atom.bprop.``, ``atom.prop.``: one
    value per atom, ``n/a`` for none) are per-atom properties instead."""
    # Only the lines after the first ``M  END`` line matter: when the first "M  END" in the
    # text starts a line (as it does), split just the rest.
    pos = text.find("M  END")
    if pos < 0:
        return {}, {}
    if pos == 0 or text[pos - 1] in _LINE_BREAKS:
        lines, start = text[pos:].splitlines(), 1
    else:
        lines = text.splitlines()
        try:
            start = next(i for i, ln in enumerate(lines) if ln.startswith("M  END")) + 1
        except StopIteration:
            return {}, {}
    props: dict[str, object] = {}
    per_atom: dict[str, object] = {}
    i = start
    while i < len(lines):
        m = _TAG.match(lines[i])
        i += 1
        if not m:
            continue
        name = m.group(1).strip()
        value: list[str] = []
        while i < len(lines) and lines[i].strip():
            value.append(lines[i].rstrip())
            i += 1
        joined = "\n".join(value)
        listed = _ATOM_LIST.match(name)
        if listed:
            fields = joined.split()
            if len(fields) == n_atoms:
                kind = listed.group(1)
                if kind in ("d", "i"):
                    per_atom[listed.group(2)] = np.array(
                        [float("nan") if f == "n/a" else float(f) for f in fields]
                    )
                elif kind == "b":
                    per_atom[listed.group(2)] = np.array(
                        [f.lower() in ("1", "true") for f in fields], dtype=np.float64
                    )
                else:
                    vals = [float("nan") if f == "n/a" else text_value(f) for f in fields]
                    numeric = all(isinstance(v, float) for v in vals)
                    per_atom[listed.group(2)] = np.array(
                        vals, dtype=np.float64 if numeric else object
                    )
                continue
        v = text_value(joined)
        props[name] = "" if v is None else v
    return props, per_atom


def _preload() -> None:
    from rdkit import Chem  # noqa: F401


register(
    Reader(
        "sdf",
        (".sdf", ".sd", ".mol"),
        _frame_sdf,
        _parse_sdf,
        _preload,
        ("mol", "sd"),
        conformers=True,
        conformers_need_embed=True,  # ReadOptions.embed: conformers are new embeddings
    )
)
