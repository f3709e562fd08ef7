"""VASP structure files, POSCAR and CONTCAR (read with pymatgen): one crystal per file.

Selected by the names ``POSCAR*``/``CONTCAR*`` or the suffix ``.vasp`` (optionally
``.gz``). Selective dynamics flags and velocities are ignored; species must be named in
the file (VASP 5 format), since a POSCAR without them needs the POTCAR to be read.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..core.structure import Structure
from .files import Lines
from .records import EMPTY, PARSE_ERROR, RawRecord, ReadOptions, Rejection, one_line, reject
from .registry import Reader, register
from .whole import read_whole


def _frame_vasp(lines: Lines, source: str) -> Iterator[RawRecord | Rejection]:
    text = read_whole(lines)
    if text is None:
        yield lines.too_large(source, 0, "", 1)
    elif not text.strip():
        yield Rejection(source, 0, "", "empty POSCAR file", EMPTY)
    else:
        name = text.splitlines()[0].strip()[:200]
        yield RawRecord(source, 0, "vasp", text, name, lines.offset)


def _parse_vasp(raw: RawRecord, _options: ReadOptions) -> Structure | Rejection:
    from pymatgen.io.vasp import Poscar

    try:
        poscar = Poscar.from_str(raw.text, read_velocities=False)
    except Exception as exc:
        return reject(raw, f"pymatgen cannot read the POSCAR: {one_line(str(exc))}", PARSE_ERROR)
    s = poscar.structure
    if not s.is_ordered:  # pragma: no cover - a POSCAR has one species per site
        return reject(raw, "a POSCAR site holds several species", PARSE_ERROR)
    return Structure(
        np.array([site.specie.Z for site in s], dtype=np.int64),
        np.array(s.cart_coords, dtype=np.float64).reshape(-1, 3),
        np.array(s.lattice.matrix, dtype=np.float64),
        name=raw.name,
        source=raw.source,
        record=raw.record,
    )


def _preload() -> None:
    from pymatgen.io.vasp import Poscar  # noqa: F401


register(
    Reader(
        "vasp",
        (".vasp", ".poscar"),
        _frame_vasp,
        _parse_vasp,
        _preload,
        ("poscar", "contcar"),
        ("POSCAR*", "CONTCAR*"),
    )
)
