"""CIF (read with pymatgen): one structure per ``data_`` block."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.structure import Structure
from .files import Lines
from .properties import set_properties, text_value
from .records import (
    DISORDER,
    MALFORMED,
    PARSE_ERROR,
    RawRecord,
    ReadOptions,
    Rejection,
    one_line,
    reject,
    warning_texts,
)
from .registry import Reader, register


def _frame_cif(lines: Lines, source: str) -> Iterator[RawRecord | Rejection]:
    """CIF data blocks: from one ``data_`` line to the next (outside ``;`` text fields).

    Lines before the first block (comments, ``#\\#CIF_2.0``) are put in front of it. A
    block larger than ``lines.limit`` (preamble included) is read to its end without
    being kept and rejected.
    """
    record = 0
    preamble: list[str] = []
    content = False  # anything but comments before the first block
    body: list[str] | None = None
    size = 0
    limit = lines.limit
    in_text = False
    name = ""
    start = 1
    while True:
        line = lines.readline()
        if line.startswith(";"):
            in_text = not in_text
        starts = bool(line) and not in_text and line[:5].lower() == "data_"
        if not line or starts:
            if body is not None and size > limit:
                yield lines.too_large(source, record, name, start)
                record += 1
            elif body is not None:
                yield RawRecord(source, record, "cif", "".join(body), name, lines.offset)
                record += 1
            elif not line and content:
                yield Rejection(source, 0, "", "no data_ block in the CIF file", MALFORMED)
            if not line:
                return
            name = line.strip()[5:][:200]
            start = lines.lineno
            body = [*preamble, line]  # the preamble goes in front of the first block
            size = (size if record == 0 else 0) + len(line)
            preamble = []
        else:
            size += len(line)
            if body is None:
                content = content or bool(line.strip() and not line.lstrip().startswith("#"))
                if size <= limit:
                    preamble.append(line)
            elif size <= limit:
                body.append(line)


def _parse_cif(raw: RawRecord, options: ReadOptions) -> Structure | Rejection:
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(raw.text)
            blocks = parser.as_dict()
            problem = _occupancy_problem(blocks, options.disorder)
            if problem is not None:
                return reject(raw, *problem)
            structures = parser.parse_structures(primitive=False, on_error="raise")
        except Exception as exc:
            return reject(raw, f"pymatgen cannot read the block: {one_line(str(exc))}", PARSE_ERROR)
    notes = warning_texts(caught)
    if not structures:
        why = notes[-1] if notes else "no structure in the block"
        return reject(raw, f"pymatgen cannot read the block: {why}", PARSE_ERROR)
    s = structures[0]
    info: dict[str, object] = {"warnings": notes} if notes else {}
    if options.cif_tags:
        set_properties(info, _cif_items(blocks, options.cif_tags))
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
    disorder = options.disorder
    if disorder == "error":
        first = s[disordered[0]]
        return reject(
            raw,
            f"partial occupancy at {len(disordered)} site(s), e.g. site {disordered[0]} "
            f"({first.species.formula}); choose the disorder policy majority or weight",
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


#: How far above 1 an occupancy may be (rounding in the file) before it is invalid.
OCCUPANCY_TOLERANCE = 0.01
_UNCERTAINTY = re.compile(r"\(.*$")


def _occupancy_problem(blocks: dict[str, Any], disorder: str) -> tuple[str, str] | None:
    """(reason, kind) when the raw ``_atom_site_occupancy`` values of the block would
    make pymatgen lose atoms silently, else None.

    pymatgen keeps a site only if its occupancy is > 0: it drops one of -0.5, nan, ``.``
    or 0 without a word, and the block would be gridded with an atom missing. A value
    that is not a number (``?``, unknown, counts as 1, as in pymatgen), not finite,
    negative or above 1 (+ :data:`OCCUPANCY_TOLERANCE`) rejects the block; so does an
    occupancy of 0 (a vacancy) when the disorder policy is ``error``.
    """
    if not blocks:
        return None
    data = next(iter(blocks.values()))
    values = _column(data, "_atom_site_occupancy")
    labels = _column(data, "_atom_site_label") or _column(data, "_atom_site_type_symbol")
    for i, text in enumerate(values):
        label = labels[i] if i < len(labels) else f"#{i + 1}"
        value = _occupancy(text)
        if value is None:
            return f"site {label} has occupancy {text!r}, which is not a number", MALFORMED
        if not math.isfinite(value) or value < 0 or value > 1 + OCCUPANCY_TOLERANCE:
            return (
                f"site {label} has occupancy {text}: an occupancy is a fraction from 0 to 1",
                MALFORMED,
            )
        if value == 0 and disorder == "error":
            return (
                f"partial occupancy: site {label} has occupancy 0 (a vacancy); choose the "
                f"disorder policy majority or weight",
                DISORDER,
            )
    return None


def _cif_items(blocks: dict[str, Any], tags: tuple[str, ...]) -> dict[str, object]:
    """The data items ``tags`` of the block (with or without the leading ``_``):
    numbers when they read as numbers (an uncertainty in brackets dropped), else text; a
    looped item is its values joined by spaces; ``?`` and ``.`` are missing."""
    data = next(iter(blocks.values())) if blocks else {}
    out: dict[str, object] = {}
    for tag in tags:
        key = tag if tag.startswith("_") else f"_{tag}"
        if key not in data:
            continue
        values = [v for v in _column(data, key) if v.strip() not in ("?", ".")]
        if not values:
            continue
        v = text_value(" ".join(values), uncertainty=len(values) == 1)
        if v is not None:
            out[key.lstrip("_")] = v
    return out


def _column(data: dict[str, Any], key: str) -> list[str]:
    v = data.get(key)
    if v is None:
        return []
    return [str(v)] if isinstance(v, str) else [str(x) for x in v]


def _occupancy(text: str) -> float | None:
    s = _UNCERTAINTY.sub("", text.strip())  # 0.25(3): the uncertainty in brackets
    if s == "?":
        return 1.0
    try:
        return float(s)
    except ValueError:
        return None


def _preload() -> None:
    from pymatgen.io.cif import CifParser  # noqa: F401


register(Reader("cif", (".cif",), _frame_cif, _parse_cif, _preload))
