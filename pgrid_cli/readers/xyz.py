"""XYZ and extended XYZ (read with ASE): frames cut at their atom-count line."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator

import numpy as np

from ..core.structure import Structure
from .files import Lines
from .properties import set_properties
from .records import (
    BAD_CELL,
    MALFORMED,
    PARSE_ERROR,
    TRUNCATED,
    RawRecord,
    ReadOptions,
    Rejection,
    one_line,
    reject,
    warning_texts,
)
from .registry import Reader, register


def _is_count_line(s: str) -> bool:
    """An atom count: ASCII digits only (``str.isdigit`` also accepts '²' and '٣', which
    ``int`` refuses), at most 12 of them (``int`` refuses thousands)."""
    return len(s) <= 12 and s.isascii() and s.isdigit()


#: A QM9 comment line: ``gdb``, the molecule's index, then 15 numbers (docs/grid.md,
#: "QM9"); numbers may use Mathematica's ``*^`` exponent.
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:(?:[eE]|\*\^)[-+]?\d+)?"
QM9_COMMENT = re.compile(rf"^gdb\s+\d+(?:\s+{_NUM}){{15}}\s*$")
#: Lines after a QM9 frame's atoms: frequencies, SMILES (GDB, relaxed), InChI (likewise).
QM9_TRAILER = 3


def is_qm9_comment(comment: str) -> bool:
    """Whether an XYZ comment line is a QM9 one (then the frame has a 3-line trailer)."""
    return comment.startswith("gdb") and QM9_COMMENT.match(comment.strip()) is not None


def frame_xyz(lines: Lines, source: str, qm9: bool = False) -> Iterator[RawRecord | Rejection]:
    """XYZ frames: an atom count, a comment line, then that many atom lines.

    A frame whose comment line is a QM9 one (:func:`is_qm9_comment`), or every frame
    with ``qm9``, also owns the three lines after its atoms, and is a ``qm9`` record.

    Blank lines between frames are skipped. A count line that is not a number rejects the
    lines up to the next line holding only a number (the next frame); a frame cut short
    (by the end of the file or by a line holding only a number) is rejected as truncated;
    a frame larger than ``lines.limit`` is read to its end without being kept and
    rejected.
    """
    record = 0
    limit = lines.limit
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
        size = len(line) + len(comment)
        missing = 0 if comment else natoms + 1
        if comment:
            for k in range(natoms):
                atom = lines.readline()
                if not atom or (len(atom) <= 12 and _is_count_line(atom.strip())):
                    if atom:
                        lines.unread(atom)
                    missing = natoms - k
                    break
                size += len(atom)
                if size <= limit:  # beyond it the frame is only read to its end
                    body.append(atom)
        fmt = "qm9" if comment and (qm9 or is_qm9_comment(comment)) else "xyz"
        if fmt == "qm9" and not missing:
            for k in range(QM9_TRAILER):
                extra = lines.readline()
                if not extra or (len(extra) <= 12 and _is_count_line(extra.strip())):
                    if extra:
                        lines.unread(extra)
                    yield Rejection(
                        source,
                        record,
                        _xyz_name(comment, fmt),
                        f"line {start}: truncated QM9 record, {k} of the {QM9_TRAILER} lines "
                        f"after the atoms (frequencies, SMILES, InChI) found",
                        TRUNCATED,
                    )
                    break
                size += len(extra)
                if size <= limit:
                    body.append(extra)
            else:
                extra = "ok"
            if extra != "ok":
                record += 1
                continue
        if missing:
            found = "no comment line" if not comment else f"{natoms - missing} atom lines"
            yield Rejection(
                source,
                record,
                _xyz_name(comment, fmt) if comment else "",
                f"line {start}: truncated frame, {natoms} atoms announced but {found} found",
                TRUNCATED,
            )
            record += 1
            continue
        while fmt == "xyz":  # VEC1..VEC3 cell lines that some writers append to a frame
            nxt = lines.readline()
            if nxt.lstrip().startswith("VEC"):
                size += len(nxt)
                body.append(nxt)
            else:
                if nxt:
                    lines.unread(nxt)
                break
        if size > limit:
            yield lines.too_large(source, record, _xyz_name(comment, fmt), start)
        else:
            text = "".join(body)
            yield RawRecord(source, record, fmt, text, _xyz_name(comment, fmt), lines.offset)
        record += 1


_NAME_KEY = re.compile(r"""(?:^|\s)(?:name|Name|NAME|title|Title)=("[^"]*"|'[^']*'|\S+)""")


def _xyz_name(comment: str, fmt: str = "xyz") -> str:
    """A frame's name: ``name=…`` of an extended-XYZ comment, else a plain comment;
    ``gdb_<index>`` for a QM9 record."""
    comment = comment.strip()
    if fmt == "qm9":
        parts = comment.split()
        return f"gdb_{parts[1]}" if len(parts) > 1 else comment[:200]
    m = _NAME_KEY.search(comment)
    if m:
        return m.group(1).strip("\"'")
    if "=" in comment:
        return ""
    return comment[:200]


def _parse_xyz(raw: RawRecord, _options: ReadOptions) -> Structure | Rejection:
    import ase.io

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            atoms = ase.io.read(io.StringIO(raw.text), format="extxyz")
        except KeyError as exc:  # ASE's lookup of an element symbol
            return reject(raw, f"unknown element symbol {exc}", PARSE_ERROR)
        except Exception as exc:
            return reject(raw, f"ASE cannot read the frame: {one_line(str(exc))}", PARSE_ERROR)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    lattice = None
    if pbc.all():
        lattice = np.array(atoms.cell[:], dtype=np.float64)
    elif pbc.any():
        flags = " ".join("T" if p else "F" for p in pbc)
        return reject(
            raw,
            f'partially periodic frame (pbc="{flags}"): pgrid grids molecules or fully '
            f"periodic crystals",
            BAD_CELL,
        )
    info: dict[str, object] = {"warnings": warning_texts(caught)} if caught else {}
    comment = raw.text.split("\n", 2)[1] if raw.text.count("\n") >= 1 else ""
    _xyz_properties(atoms, info, set(_KEY.findall(comment)))
    return Structure(
        numbers=np.array(atoms.numbers, dtype=np.int64),
        positions=np.array(atoms.positions, dtype=np.float64),
        lattice=lattice,
        name=raw.name,
        source=raw.source,
        record=raw.record,
        info=info,
    )


#: Per-frame info keys that describe the frame, not the record (kept out of properties).
_NOT_PROPERTIES = {"pbc", "Lattice", "Properties", "name", "Name", "NAME", "title", "Title"}
_NOT_ATOM_PROPERTIES = {"numbers", "positions", "species", "pos", "Z"}


_KEY = re.compile(r"""([A-Za-z_][\w.-]*)\s*=""")


def _xyz_properties(atoms: object, info: dict[str, object], keys: set[str]) -> None:
    """An extended-XYZ frame's ``key=value`` pairs (``keys``: those of its comment line;
    ASE also makes every bare word of a plain comment a ``True`` flag, which is no
    property) and per-atom arrays (``forces``, ``charges``, …) as properties; ASE moves
    ``energy``, ``forces`` (and the like) to a calculator, whose results are kept too."""
    props = {
        k: v
        for k, v in atoms.info.items()  # type: ignore[attr-defined]
        if k in keys and k not in _NOT_PROPERTIES
    }
    per_atom = {
        k: v
        for k, v in atoms.arrays.items()  # type: ignore[attr-defined]
        if k not in _NOT_ATOM_PROPERTIES
    }
    calc = getattr(atoms, "calc", None)
    n = len(atoms)  # type: ignore[arg-type]
    for k, v in (getattr(calc, "results", None) or {}).items():
        arr = np.asarray(v)
        if arr.ndim >= 1 and arr.shape[0] == n and k not in ("stress",):
            per_atom[k] = arr
        elif k in keys:
            props[k] = v
    set_properties(info, props, per_atom)


def _preload() -> None:
    import ase.io  # noqa: F401


register(Reader("xyz", (".xyz", ".extxyz"), frame_xyz, _parse_xyz, _preload, ("extxyz",)))
