"""Reading structures from files: XYZ / extended XYZ (ASE), SDF (RDKit), CIF (pymatgen).

Every record of an input file becomes exactly one item: a :class:`Structure` (atoms, and a
lattice for crystals) or a :class:`Rejection` (why it cannot be gridded, in one line), so
that every input record is accounted for.

Reading happens in two steps, so that the second can run in worker processes:

1. :func:`iter_raw_records` streams a file and cuts it into the text of its records
   (:class:`RawRecord`) — XYZ frames by their atom-count line, SDF records by their
   ``$$$$`` line, CIF data blocks by their ``data_`` line. This only finds record
   boundaries; it never interprets chemistry, and it never holds more than one record.
2. :func:`parse_record` hands one record's text to the field's library (``ase.io.read``,
   ``rdkit.Chem.MolFromMolBlock``, ``pymatgen.io.cif.CifParser``) and checks the result.

:func:`iter_records` does both. Record indices count from 0 within each file. A file that
cannot be opened at all yields a single Rejection with ``record = -1``; a read error part
way through (e.g. a corrupt gzip stream) rejects the record where it happened and ends
that file.
"""

from __future__ import annotations

import glob
import gzip
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .box import Box, ShapeLike

#: Input formats, and the file extensions that select them (a trailing ``.gz`` is allowed).
FORMATS = ("xyz", "sdf", "cif")
EXTENSIONS = {
    ".xyz": "xyz",
    ".extxyz": "xyz",
    ".sdf": "sdf",
    ".sd": "sdf",
    ".mol": "sdf",
    ".cif": "cif",
}
_FORMAT_ALIASES = {"extxyz": "xyz", "mol": "sdf", "sd": "sdf"}
#: Policies for partially occupied CIF sites (``--disorder``).
DISORDER_POLICIES = ("error", "majority", "weight")

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


@dataclass
class Structure:
    """A molecule (``lattice is None``) or a periodic crystal.

    Attributes
    ----------
    numbers : (M,) int atomic numbers
    positions : (M, 3) float64 Cartesian positions, Å
    lattice : (3, 3) float64 rows a, b, c (Å) for a periodic cell, else None
    weights : (M,) float64 per-atom weights (default 1; site occupancies for disorder)
    name, source, record : provenance (record = index of the record in its file)
    info : anything else the reader found worth keeping (e.g. ``warnings``)
    """

    numbers: np.ndarray
    positions: np.ndarray
    lattice: np.ndarray | None = None
    weights: np.ndarray | None = None
    name: str = ""
    source: str = ""
    record: int = 0
    info: dict[str, object] = field(default_factory=dict)

    @property
    def periodic(self) -> bool:
        return self.lattice is not None

    def __len__(self) -> int:
        return len(self.numbers)

    def box(self, kind: str = "fit", shape: ShapeLike = 32, padding: float = 2.0) -> Box:
        """Its grid box: the unit cell for crystals, a SPEC §4 box for molecules."""
        if self.lattice is not None:
            return Box.from_lattice(self.lattice, shape)
        return Box.for_molecule(kind, self.positions, shape, padding)


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


# ---------------------------------------------------------------------- finding files
def detect_format(path: str | os.PathLike[str], override: str | None = None) -> str:
    """``xyz``, ``sdf`` or ``cif``: ``override`` if given, else from the file extension.

    ``.xyz``/``.extxyz`` → xyz, ``.sdf``/``.sd``/``.mol`` → sdf, ``.cif`` → cif, each
    optionally followed by ``.gz``. Raises ValueError when neither tells.
    """
    if override is not None:
        key = override.strip().lower()
        key = _FORMAT_ALIASES.get(key, key)
        if key not in FORMATS:
            raise ValueError(f"unknown format {override!r}: use one of {', '.join(FORMATS)}")
        return key
    fmt = _format_from_name(Path(path))
    if fmt is None:
        raise ValueError(
            f"cannot tell the format of {path} from its extension "
            f"(known: {', '.join(sorted(EXTENSIONS))}, optionally .gz); use --format"
        )
    return fmt


def _format_from_name(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return EXTENSIONS.get(suffixes[-1]) if suffixes else None


def expand_inputs(inputs: Sequence[str | os.PathLike[str]], recursive: bool = True) -> list[Path]:
    """The input files named by ``inputs``, in a deterministic order.

    Each input is a file (kept whatever its extension), a directory (its files with a
    known extension, sorted by their path below it; subdirectories too when
    ``recursive``; hidden files and directories skipped) or a glob pattern (its matches,
    sorted). Inputs keep the order given; a file reached twice is listed once. Raises
    ValueError for a path that does not exist, a pattern that matches nothing, or when no
    input file is found.
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for item in inputs:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            for f in _walk(p, recursive):
                add(f)
        elif p.exists():
            add(p)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise ValueError(f"no files match {text!r}")
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    for f in _walk(mp, recursive):
                        add(f)
                else:
                    add(mp)
        else:
            raise ValueError(f"{text}: no such file or directory")
    if not out:
        names = ", ".join(os.fspath(i) for i in inputs) or "(nothing)"
        raise ValueError(f"no input files with a known extension found in {names}")
    return out


def _walk(root: Path, recursive: bool) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        for name in filenames:
            if not name.startswith(".") and _format_from_name(Path(name)) is not None:
                files.append(Path(dirpath) / name)
    return sorted(files, key=lambda f: f.relative_to(root).parts)


# ---------------------------------------------------------------------- reading records
def iter_records(
    path: str | os.PathLike[str], format: str | None = None, *, disorder: str = "error"
) -> Iterator[Structure | Rejection]:
    """Stream the records of one file: one :class:`Structure` or :class:`Rejection` each.

    ``format`` overrides the extension (see :func:`detect_format`); ``disorder`` is the
    policy for partially occupied CIF sites: ``error`` (reject the block), ``majority``
    (each site keeps its most occupied species; a site that is mostly vacancy is dropped)
    or ``weight`` (every species of a site is an atom weighted by its occupancy).
    A file that cannot be opened yields one Rejection with ``record = -1``.
    """
    fmt = detect_format(path, format)
    check_disorder(disorder)
    for raw in iter_raw_records(path, fmt):
        yield raw if isinstance(raw, Rejection) else parse_record(raw, disorder=disorder)


def check_disorder(disorder: str) -> str:
    if disorder not in DISORDER_POLICIES:
        raise ValueError(
            f"unknown disorder policy {disorder!r}: use one of {', '.join(DISORDER_POLICIES)}"
        )
    return disorder


def iter_raw_records(path: str | os.PathLike[str], format: str) -> Iterator[RawRecord | Rejection]:
    """Stream the text of each record of one file (see the module docstring)."""
    source = os.fspath(path)
    framer = _FRAMERS[detect_format(path, format)]
    try:
        raw = open(path, "rb")
    except OSError as exc:
        yield Rejection(source, -1, "", f"cannot open the file: {_os_reason(exc)}", UNREADABLE)
        return
    with raw:
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if _is_gzip(path) else raw
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
        lines = _Lines(text, raw)
        records = framer(lines, source)
        count = 0
        while True:
            try:
                item = next(records)
            except StopIteration:
                break
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                # The stream itself broke (corrupt gzip, I/O error): the record being
                # read is lost and nothing after it can be found.
                if count == 0 and lines.lineno == 0:
                    reason = f"cannot read the file: {_os_reason(exc)}"
                else:
                    reason = (
                        f"read error at line {lines.lineno + 1}, the rest of the file is "
                        f"unreadable: {_os_reason(exc)}"
                    )
                yield Rejection(source, count if count else -1, "", reason, UNREADABLE)
                return
            count += 1
            yield item


def _is_gzip(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith(".gz")


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _Lines:
    """Line reader with one line of push-back and a running line number."""

    __slots__ = ("_pushed", "_raw", "_text", "lineno")

    def __init__(self, text: IO[str], raw: IO[bytes]) -> None:
        self._text = text
        self._raw = raw
        self._pushed: str | None = None
        self.lineno = 0

    def readline(self) -> str:
        if self._pushed is not None:
            line, self._pushed = self._pushed, None
        else:
            line = self._text.readline()
        if line:
            self.lineno += 1
        return line

    def unread(self, line: str) -> None:
        self._pushed = line
        self.lineno -= 1

    @property
    def offset(self) -> int:
        """Bytes of the file read so far (approximate: the reader buffers ahead)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0


def _is_count_line(s: str) -> bool:
    return s.isdigit()


def _frame_xyz(lines: _Lines, source: str) -> Iterator[RawRecord | Rejection]:
    """XYZ frames: an atom count, a comment line, then that many atom lines.

    Blank lines between frames are skipped. A count line that is not a number rejects the
    lines up to the next line holding only a number (the next frame); a frame cut short
    (by the end of the file or by a line holding only a number) is rejected as truncated.
    """
    record = 0
    while True:
        line = lines.readline()
        if not line:
            return
        s = line.strip()
        if not s:
            continue
        start = lines.lineno
        if not _is_count_line(s):
            while True:  # resynchronise on the next count line
                nxt = lines.readline()
                if not nxt:
                    break
                if _is_count_line(nxt.strip()):
                    lines.unread(nxt)
                    break
            yield Rejection(
                source,
                record,
                "",
                f"line {start}: expected the number of atoms of a frame, found {s[:40]!r}",
                MALFORMED,
            )
            record += 1
            continue
        natoms = int(s)
        comment = lines.readline()
        body = [line, comment]
        missing = 0 if comment else natoms + 1
        if comment:
            for k in range(natoms):
                atom = lines.readline()
                if not atom or (len(atom) <= 12 and _is_count_line(atom.strip())):
                    if atom:
                        lines.unread(atom)
                    missing = natoms - k
                    break
                body.append(atom)
        if missing:
            found = "no comment line" if not comment else f"{natoms - missing} atom lines"
            yield Rejection(
                source,
                record,
                _xyz_name(comment) if comment else "",
                f"line {start}: truncated frame, {natoms} atoms announced but {found} found",
                TRUNCATED,
            )
            record += 1
            continue
        while True:  # VEC1..VEC3 cell lines that some writers append to a frame
            nxt = lines.readline()
            if nxt.lstrip().startswith("VEC"):
                body.append(nxt)
            else:
                if nxt:
                    lines.unread(nxt)
                break
        yield RawRecord(source, record, "xyz", "".join(body), _xyz_name(comment), lines.offset)
        record += 1


_NAME_KEY = re.compile(r"""(?:^|\s)(?:name|Name|NAME|title|Title)=("[^"]*"|'[^']*'|\S+)""")


def _xyz_name(comment: str) -> str:
    """A frame's name: ``name=…`` of an extended-XYZ comment, else a plain comment."""
    comment = comment.strip()
    m = _NAME_KEY.search(comment)
    if m:
        return m.group(1).strip("\"'")
    if "=" in comment:
        return ""
    return comment[:200]


def _frame_sdf(lines: _Lines, source: str) -> Iterator[RawRecord | Rejection]:
    """SDF records: everything up to a ``$$$$`` line (the last one may lack it)."""
    record = 0
    body: list[str] = []
    start = 1
    while True:
        line = lines.readline()
        if not line or line.startswith("$$$$"):
            text = "".join(body)
            if line or text.strip():
                if text.strip():
                    name = body[0].strip()[:200]
                    yield RawRecord(source, record, "sdf", text, name, lines.offset)
                else:
                    yield Rejection(source, record, "", f"line {start}: empty SDF record", EMPTY)
                record += 1
            if not line:
                return
            body = []
            start = lines.lineno + 1
        else:
            body.append(line)


def _frame_cif(lines: _Lines, source: str) -> Iterator[RawRecord | Rejection]:
    """CIF data blocks: from one ``data_`` line to the next (outside ``;`` text fields).

    Lines before the first block (comments, ``#\\#CIF_2.0``) are put in front of it.
    """
    record = 0
    preamble: list[str] = []
    body: list[str] | None = None
    in_text = False
    name = ""
    while True:
        line = lines.readline()
        if line.startswith(";"):
            in_text = not in_text
        starts = bool(line) and not in_text and line[:5].lower() == "data_"
        if not line or starts:
            if body is not None:
                yield RawRecord(source, record, "cif", "".join(body), name, lines.offset)
                record += 1
            elif not line and any(s.strip() and not s.lstrip().startswith("#") for s in preamble):
                yield Rejection(source, 0, "", "no data_ block in the CIF file", MALFORMED)
            if not line:
                return
            name = line.strip()[5:][:200]
            body = [*preamble, line] if record == 0 else [line]
        elif body is None:
            preamble.append(line)
        else:
            body.append(line)


_FRAMERS = {"xyz": _frame_xyz, "sdf": _frame_sdf, "cif": _frame_cif}


# ---------------------------------------------------------------------- parsing records
def parse_record(raw: RawRecord, *, disorder: str = "error") -> Structure | Rejection:
    """Parse one record's text with the field's library and check it (see iter_records)."""
    parse = _PARSERS[raw.format]
    try:
        item = parse(raw, disorder)
    except Exception as exc:  # a library failing on odd input must not stop the run
        return _reject(raw, f"{type(exc).__name__}: {_one_line(str(exc))}", PARSE_ERROR)
    if isinstance(item, Rejection):
        return item
    return check_structure(item)


def check_structure(s: Structure) -> Structure | Rejection:
    """Reject structures that cannot be gridded: no atoms, non-finite coordinates, atoms
    of no known element, a degenerate cell."""

    def reject(reason: str, kind: str) -> Rejection:
        return Rejection(s.source, s.record, s.name, reason, kind)

    if len(s.numbers) == 0:
        return reject("empty structure (no atoms)", EMPTY)
    bad = ~np.all(np.isfinite(s.positions), axis=1)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        return reject(
            f"non-finite coordinates (NaN or inf) for {int(bad.sum())} atom(s), first atom {i}",
            NON_FINITE,
        )
    z = np.asarray(s.numbers)
    unknown = (z < 1) | (z > 118)
    if np.any(unknown):
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


def _reject(raw: RawRecord, reason: str, kind: str, name: str | None = None) -> Rejection:
    return Rejection(raw.source, raw.record, raw.name if name is None else name, reason, kind)


def _one_line(text: str) -> str:
    parts = [p.strip() for p in text.strip().splitlines() if p.strip()]
    return "; ".join(parts)[:300] if parts else "unknown error"


def _parse_xyz(raw: RawRecord, disorder: str) -> Structure | Rejection:
    import ase.io

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            atoms = ase.io.read(io.StringIO(raw.text), format="extxyz")
        except KeyError as exc:  # ASE's lookup of an element symbol
            return _reject(raw, f"unknown element symbol {exc}", PARSE_ERROR)
        except Exception as exc:
            return _reject(raw, f"ASE cannot read the frame: {_one_line(str(exc))}", PARSE_ERROR)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    lattice = None
    if pbc.all():
        lattice = np.array(atoms.cell[:], dtype=np.float64)
    elif pbc.any():
        flags = " ".join("T" if p else "F" for p in pbc)
        return _reject(
            raw,
            f'partially periodic frame (pbc="{flags}"): pgrid grids molecules or fully '
            f"periodic crystals",
            BAD_CELL,
        )
    info = {"warnings": _warning_texts(caught)} if caught else {}
    return Structure(
        numbers=np.array(atoms.numbers, dtype=np.int64),
        positions=np.array(atoms.positions, dtype=np.float64),
        lattice=lattice,
        name=raw.name,
        source=raw.source,
        record=raw.record,
        info=info,
    )


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


def _parse_sdf(raw: RawRecord, disorder: str) -> Structure | Rejection:
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
        return _reject(
            raw, f"RDKit cannot parse the record: {_rdkit_reason(capture.messages)}", PARSE_ERROR
        )
    name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else raw.name
    if mol.GetNumAtoms() == 0:
        return _reject(raw, "empty structure (no atoms)", EMPTY, name)
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        return _reject(raw, "no 3D coordinates (a 2D record; embed it in 3D first)", NO_3D, name)
    positions = np.array(mol.GetConformer().GetPositions(), dtype=np.float64)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    return Structure(numbers, positions, name=name, source=raw.source, record=raw.record)


def _parse_cif(raw: RawRecord, disorder: str) -> Structure | Rejection:
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(raw.text)
            structures = parser.parse_structures(primitive=False, on_error="raise")
        except Exception as exc:
            return _reject(
                raw, f"pymatgen cannot read the block: {_one_line(str(exc))}", PARSE_ERROR
            )
    notes = _warning_texts(caught)
    if not structures:
        why = notes[-1] if notes else "no structure in the block"
        return _reject(raw, f"pymatgen cannot read the block: {why}", PARSE_ERROR)
    s = structures[0]
    info: dict[str, object] = {"warnings": notes} if notes else {}
    lattice = np.array(s.lattice.matrix, dtype=np.float64)
    if s.is_ordered:
        numbers = np.array([site.specie.Z for site in s], dtype=np.int64)
        return Structure(
            numbers,
            np.array(s.cart_coords, dtype=np.float64),
            lattice,
            name=raw.name,
            source=raw.source,
            record=raw.record,
            info=info,
        )
    disordered = [i for i, site in enumerate(s) if not site.is_ordered]
    if disorder == "error":
        first = s[disordered[0]]
        return _reject(
            raw,
            f"partial occupancy at {len(disordered)} site(s), e.g. site {disordered[0]} "
            f"({first.species.formula}); choose --disorder majority or weight",
            DISORDER,
        )
    numbers_l: list[int] = []
    positions_l: list[np.ndarray] = []
    weights_l: list[float] = []
    for site in s:
        occ = sorted(
            ((float(o), sp) for sp, o in site.species.items()),
            key=lambda t: (-t[0], str(t[1])),
        )
        if disorder == "majority":
            top_occ, top = occ[0]
            vacancy = 1.0 - sum(o for o, _ in occ)
            if top_occ >= vacancy:
                numbers_l.append(int(top.Z))
                positions_l.append(site.coords)
                weights_l.append(1.0)
        else:  # weight
            for o, sp in occ:
                numbers_l.append(int(sp.Z))
                positions_l.append(site.coords)
                weights_l.append(o)
    info["disorder"] = f"{len(disordered)} partially occupied site(s), policy {disorder}"
    return Structure(
        np.array(numbers_l, dtype=np.int64),
        np.array(positions_l, dtype=np.float64).reshape(-1, 3),
        lattice,
        weights=np.array(weights_l, dtype=np.float64),
        name=raw.name,
        source=raw.source,
        record=raw.record,
        info=info,
    )


def _warning_texts(caught: list[warnings.WarningMessage]) -> list[str]:
    out: list[str] = []
    for w in caught:
        if issubclass(w.category, ResourceWarning):
            continue
        text = _one_line(str(w.message))
        if text not in out:
            out.append(text)
    return out


_PARSERS = {"xyz": _parse_xyz, "sdf": _parse_sdf, "cif": _parse_cif}
