"""XYZ and extended XYZ (read with ASE): frames cut at their atom-count line."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator

import numpy as np

from ..core.structure import Structure
from .files import Lines
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


def _frame_xyz(lines: Lines, source: str) -> Iterator[RawRecord | Rejection]:
    """XYZ frames: an atom count, a comment line, then that many atom lines.

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
                size += len(nxt)
                body.append(nxt)
            else:
                if nxt:
                    lines.unread(nxt)
                break
        if size > limit:
            yield lines.too_large(source, record, _xyz_name(comment), start)
        else:
            text = "".join(body)
            yield RawRecord(source, record, "xyz", text, _xyz_name(comment), lines.offset)
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
    info = {"warnings": warning_texts(caught)} if caught else {}
    return Structure(
        numbers=np.array(atoms.numbers, dtype=np.int64),
        positions=np.array(atoms.positions, dtype=np.float64),
        lattice=lattice,
        name=raw.name,
        source=raw.source,
        record=raw.record,
        info=info,
    )


def _preload() -> None:
    import ase.io  # noqa: F401


register(Reader("xyz", (".xyz", ".extxyz"), _frame_xyz, _parse_xyz, _preload, ("extxyz",)))
