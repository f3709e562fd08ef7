"""pymatgen JSON (the way Materials Project data is shared): one structure, a list of
structures, or entries that hold one (``ComputedStructureEntry``: ``{"structure": …,
"energy": …}``). Each structure is one record.

Selected by ``.json`` (optionally ``.gz``). The whole file is one JSON document, so it
must fit the record size limit (``ReadOptions.max_record_bytes``, 64 MiB by default);
split larger collections into several files. An entry's scalar fields (``energy``,
``correction``, ``entry_id``, and its ``data`` items) are kept in the structure's ``info``
(``info["properties"]``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.structure import Structure
from .files import Lines
from .records import (
    DISORDER,
    EMPTY,
    MALFORMED,
    PARSE_ERROR,
    RawRecord,
    ReadOptions,
    Rejection,
    one_line,
    reject,
)
from .registry import Reader, register
from .whole import read_whole


def _items(doc: Any) -> list[Any]:
    return doc if isinstance(doc, list) else [doc]


def _frame_json(lines: Lines, source: str) -> Iterator[RawRecord | Rejection]:
    text = read_whole(lines)
    if text is None:
        yield lines.too_large(source, 0, "", 1)
        return
    try:
        doc = json.loads(text)
    except ValueError as exc:
        yield Rejection(source, 0, "", f"not valid JSON: {one_line(str(exc))}", MALFORMED)
        return
    items = _items(doc)
    if not items:
        yield Rejection(source, 0, "", "an empty JSON list: no structure", EMPTY)
    for k, item in enumerate(items):
        name = ""
        if isinstance(item, dict):
            name = str(item.get("entry_id") or item.get("material_id") or "")[:200]
        yield RawRecord(source, k, "json", json.dumps(item), name, lines.offset)


def _parse_json(raw: RawRecord, _options: ReadOptions) -> Structure | Rejection:
    from pymatgen.core import Structure as PmgStructure

    item = json.loads(raw.text)
    if not isinstance(item, dict):
        return reject(raw, f"a JSON {type(item).__name__}, not a structure or entry", MALFORMED)
    entry = item if "structure" in item else None
    doc = item["structure"] if entry is not None else item
    try:
        s = PmgStructure.from_dict(doc)
    except Exception as exc:
        return reject(raw, f"not a pymatgen Structure: {one_line(str(exc))}", PARSE_ERROR)
    if not s.is_ordered:
        return reject(raw, "partial occupancy (a disordered structure)", DISORDER)
    info: dict[str, object] = {}
    if entry is not None:
        props = {k: v for k, v in entry.items() if _scalar(v) and not k.startswith("@")}
        props.update({k: v for k, v in (entry.get("data") or {}).items() if _scalar(v)})
        info["properties"] = props
    return Structure(
        np.array([site.specie.Z for site in s], dtype=np.int64),
        np.array(s.cart_coords, dtype=np.float64).reshape(-1, 3),
        np.array(s.lattice.matrix, dtype=np.float64),
        name=raw.name or str(s.composition.reduced_formula),
        source=raw.source,
        record=raw.record,
        info=info,
    )


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) and not isinstance(v, bytes)


def _preload() -> None:
    from pymatgen.core import Structure  # noqa: F401


register(Reader("json", (".json",), _frame_json, _parse_json, _preload, ("pymatgen", "mp")))
