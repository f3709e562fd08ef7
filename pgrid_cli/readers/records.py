"""What reading produces besides structures: raw record texts, rejections and their kinds.

Every input record becomes exactly one :class:`~pgrid_cli.core.Structure` or one
:class:`Rejection` (why it cannot be gridded, in one line), so that every input record is
accounted for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.box import Box
from ..core.channels import TypingError, UnknownElementError
from ..core.complexes import NotAComplexError
from ..core.errors import ParameterError
from ..core.recipe import GridRecipe, OutsideBoxError
from ..core.structure import Structure

#: Policies for partially occupied CIF sites (``disorder``).
DISORDER_POLICIES = ("error", "majority", "weight")

#: Policies of the PDB and mol2 readers (docs/grid.md, "PDB and mol2"); the first is the
#: default of each.
PDB_POLICIES = {
    "waters": ("drop", "keep"),
    "altlocs": ("highest-occupancy", "first", "all"),
    "hydrogens": ("keep", "drop", "add"),
    "hetatm": ("keep", "drop"),
    "models": ("first", "all"),
}


# Rejection kinds: short, stable labels for the summary table (the reason says the rest).
UNREADABLE = "unreadable file"
MALFORMED = "malformed record"
TRUNCATED = "truncated record"
PARSE_ERROR = "parse error"
NO_3D = "no 3D coordinates"
NON_FINITE = "non-finite coordinates"
UNKNOWN_ELEMENT = "unknown element"
DISORDER = "disorder"
EMPTY = "empty structure"
BAD_CELL = "bad cell"
OUTSIDE_BOX = "atoms outside box"
CANNOT_GRID = "cannot grid"
TOO_LARGE = "record too large"
MODEL_NOT_KEPT = "model not kept"
NO_RECEPTOR = "receptor unusable"
CANNOT_TYPE = "cannot type"

#: The largest record (and line) read, in characters of text (bytes, for ASCII files):
#: a larger one is skipped to its end and rejected, so memory stays bounded whatever
#: the input (a file without record separators, a file of one huge line).
MAX_RECORD_BYTES = 64 << 20


@dataclass(frozen=True)
class ReadOptions:
    """How records are read and interpreted.

    ``disorder`` is the policy for partially occupied CIF sites: ``error`` (reject the
    block), ``majority`` (each site keeps its most occupied species) or ``weight``
    (every species of a site, weighted by occupancy). ``max_record_bytes`` is the
    largest record text read (see :data:`MAX_RECORD_BYTES`); a larger record is
    rejected (kind :data:`TOO_LARGE`) and reading goes on with the next one.
    ``cif_tags`` are the CIF data items (``_cell_volume``, ``_chemical_formula_sum``, …)
    kept as properties of each block. ``embed_seed``, ``relax`` and ``add_hydrogens``
    govern SMILES records: their 3D conformer (ETKDG v3, seeded per record), an optional
    MMFF94/UFF relaxation, and whether hydrogens are added; ``embed`` treats 2D SDF records
    the same way instead of rejecting them.

    ``waters``, ``altlocs``, ``hydrogens``, ``hetatm`` and ``models`` are the PDB/mol2
    policies (:data:`PDB_POLICIES`, defaults first there; see :mod:`.pdb`). ``receptor``
    (a path) makes every record read a ligand gridded with that receptor, and
    ``data_root`` is the directory relative paths of a ``.types`` list are resolved
    against (default: the list file's directory); see :mod:`.complexes`.
    """

    disorder: str = "error"
    max_record_bytes: int = MAX_RECORD_BYTES
    cif_tags: tuple[str, ...] = ()
    embed_seed: int = 0
    relax: bool = False
    add_hydrogens: bool = True
    embed: bool = False  #: embed 2D SDF/mol records in 3D (as SMILES are) instead of rejecting
    # PDB / mol2 policies (readers/pdb.py, readers/mol2.py)
    waters: str = "drop"
    altlocs: str = "highest-occupancy"
    hydrogens: str = "keep"
    hetatm: str = "keep"
    models: str = "first"
    # complexes (readers/complexes.py)
    receptor: str | None = None
    data_root: str | None = None
    #: SMILES (SDF/mol with ``embed``): conformers per molecule, each one record (``conformer``)
    conformers: int = 1

    def __post_init__(self) -> None:
        if self.disorder not in DISORDER_POLICIES:
            raise ValueError(
                f"unknown disorder policy {self.disorder!r}: use one of "
                f"{', '.join(DISORDER_POLICIES)}"
            )
        for policy, choices in PDB_POLICIES.items():
            if getattr(self, policy) not in choices:
                raise ParameterError(
                    f"{{{policy}}} must be one of {', '.join(choices)}, got "
                    f"{getattr(self, policy)!r}"
                )
        if not isinstance(self.max_record_bytes, int) or self.max_record_bytes < 1:
            raise ValueError(
                f"max_record_bytes must be a positive number of bytes, got "
                f"{self.max_record_bytes!r}"
            )
        if not isinstance(self.conformers, int) or self.conformers < 1:
            raise ValueError(f"conformers must be a positive integer, got {self.conformers!r}")


class UnreadableDirectory(type(Path())):  # type: ignore[misc]
    """A directory among the inputs that could not be listed (``reason`` says why).

    :func:`~pgrid_cli.readers.expand_inputs` lists it in place of its files so that it is
    accounted for: reading it gives one rejection (record -1), its format is
    :data:`DIRECTORY`.
    """

    reason: str = ""


#: The "format" of an :class:`UnreadableDirectory` (no reader: it is only rejected).
DIRECTORY = "directory"


@dataclass(frozen=True)
class Rejection:
    """An input record that could not be gridded, and why (one line).

    ``record`` is the index of the record in its file, or -1 when the file itself could
    not be opened. ``kind`` is a short label (one of the module's kind constants) used to
    count rejections by cause.
    """

    source: str
    record: int
    name: str
    reason: str
    kind: str = PARSE_ERROR

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "record": self.record,
            "name": self.name,
            "reason": self.reason,
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Rejection:
        return cls(
            str(d["source"]),
            int(d["record"]),
            str(d.get("name", "")),
            str(d["reason"]),
            str(d.get("kind", PARSE_ERROR)),
        )


@dataclass(frozen=True)
class RawRecord:
    """The text of one record, cut from its file but not yet parsed (picklable).

    ``offset`` is how many bytes of the (possibly compressed) file had been read when the
    record was complete — for progress reporting only.
    """

    source: str
    record: int
    format: str
    text: str
    name: str = ""
    offset: int = 0
    conformer: int | None = None  #: which conformer of the record (``conformers`` > 1)


def reject(raw: RawRecord, reason: str, kind: str, name: str | None = None) -> Rejection:
    """The rejection of a raw record (its provenance kept)."""
    return Rejection(raw.source, raw.record, raw.name if name is None else name, reason, kind)


def printable(text: str, backslashes: bool = True) -> str:
    """``text`` as one printable line: every character that is not printable written as
    a backslash escape — ``\\n``, ``\\t``, ``\\r``, ``\\xNN`` for other ASCII control
    characters and for the bytes of a file name that are not UTF-8 (``os.fsdecode``'s
    surrogate escapes), ``\\uNNNN`` / ``\\UNNNNNNNN`` for other characters.

    With ``backslashes`` a backslash is doubled, which makes the escaping reversible
    (:func:`~pgrid_cli.readers.source_bytes`). Printable text without a backslash is
    returned unchanged.
    """
    if text.isprintable() and not (backslashes and "\\" in text):
        return text
    out = []
    for c in text:
        if c.isprintable():
            out.append("\\\\" if backslashes and c == "\\" else c)
            continue
        code = ord(c)
        if c in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[c])
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


_SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def one_line(text: str) -> str:
    """A library's (possibly multi-line) message as one line of at most 300 characters."""
    parts = [p.strip() for p in text.strip().splitlines() if p.strip()]
    return "; ".join(parts)[:300] if parts else "unknown error"


def warning_texts(caught: list[warnings.WarningMessage]) -> list[str]:
    """The distinct warnings a library raised while parsing, one line each."""
    out: list[str] = []
    for w in caught:
        if issubclass(w.category, ResourceWarning):
            continue
        text = one_line(str(w.message))
        if text not in out:
            out.append(text)
    return out


def check_structure(s: Structure) -> Structure | Rejection:
    """Reject structures that cannot be gridded: no atoms, non-finite coordinates, atoms
    of no known element, a degenerate cell."""

    def reject(reason: str, kind: str) -> Rejection:
        return Rejection(s.source, s.record, s.name, reason, kind)

    if len(s.numbers) == 0:
        return reject("empty structure (no atoms)", EMPTY)
    if np.isfinite(s.positions).all():  # the common case, in one pass
        bad = None
    else:
        bad = ~np.all(np.isfinite(s.positions), axis=1)
    if bad is not None:
        i = int(np.flatnonzero(bad)[0])
        return reject(
            f"non-finite coordinates (NaN or inf) for {int(bad.sum())} atom(s), first atom {i}",
            NON_FINITE,
        )
    z = np.asarray(s.numbers)
    unknown = (z < 1) | (z > 118)
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        return reject(
            f"atom {i} has no chemical element (atomic number {int(z[i])}: a dummy or query atom)",
            UNKNOWN_ELEMENT,
        )
    if s.lattice is not None:
        lat = np.asarray(s.lattice, dtype=np.float64)
        if not np.all(np.isfinite(lat)) or abs(np.linalg.det(lat)) < 1e-6:
            return reject("the unit cell is degenerate (zero volume)", BAD_CELL)
    if s.weights is not None and not np.all(np.isfinite(s.weights)):
        return reject("non-finite atom weights", NON_FINITE)
    return s


def prepare_structure(
    s: Structure, recipe: GridRecipe, exclude: tuple[int, ...] = ()
) -> tuple[Any, Box] | Rejection:
    """(channel of each atom, box) of a parsed structure — with a typed recipe, (its
    particles, box), ``exclude`` the elements typed but not gridded —, or why it cannot
    be gridded."""
    try:
        return recipe.prepare(s, exclude) if exclude else recipe.prepare(s)
    except TypingError as exc:
        return Rejection(s.source, s.record, s.name, f"cannot type: {exc}", CANNOT_TYPE)
    except UnknownElementError as exc:
        return Rejection(s.source, s.record, s.name, str(exc), UNKNOWN_ELEMENT)
    except OutsideBoxError as exc:
        return Rejection(s.source, s.record, s.name, str(exc), OUTSIDE_BOX)
    except NotAComplexError as exc:
        return Rejection(s.source, s.record, s.name, str(exc), MALFORMED)
    except ValueError as exc:
        return Rejection(s.source, s.record, s.name, f"no {recipe.box} box: {exc}", OUTSIDE_BOX)
