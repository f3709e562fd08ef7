"""Receptor + ligand pairs: ``.types`` list files (as gnina/libmolgrid use) and ligands
read with a receptor (``ReadOptions.receptor``, ``pgrid grid --receptor R``).

A ``.types`` line is ``label [label …] receptor ligand [# comment]``: one or more
numeric labels, the receptor's path and the ligand's path, whitespace separated; blank
lines and lines starting with ``#`` are skipped. Relative paths are resolved against
``ReadOptions.data_root`` (``--data-root``) when given, else against the list file's
directory. The ligand is the first record of its file (any format pgrid reads: SDF,
mol2, PDB, XYZ, …); the receptor is the first record of its file (PDB, mol2, …; the PDB
policies apply). Labels are stored as properties ``label0``, ``label1``, … or, when the
file's first line is a header comment naming every column and ending in ``receptor
ligand`` (e.g. ``# affinity rmsd receptor ligand``), under those names.

Each line is one record (``source`` = the list file, ``record`` = the line's record
index). With a receptor given, each record of each input file is a ligand paired with it
(``source``/``record`` = the ligand's). Either way the record is one
:class:`~pgrid_cli.core.Structure`: the receptor's atoms, then the ligand's, with the
per-atom property ``ligand`` (1 / 0; :mod:`pgrid_cli.core.complexes` grids it), the
properties ``receptor`` and ``ligand`` (paths) and ``ligand_record``, and the labels.
Per-atom properties of the parts are kept (NaN where a part has none).

A receptor is parsed once per process and reused across its ligands (a small cache keyed
by its resolved path, size, modification time and the reading options;
:data:`RECEPTOR_PARSES` counts the parses). An unreadable receptor or ligand rejects the
pair with the part's reason.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from ..core.complexes import PARTS_KEY
from ..core.structure import Structure
from .files import Lines, iter_records, source_bytes
from .properties import ATOM_PROPERTIES, PROPERTIES, set_properties
from .records import (
    EMPTY,
    MALFORMED,
    NO_RECEPTOR,
    RawRecord,
    ReadOptions,
    Rejection,
    reject,
)
from .registry import Reader, register

#: Receptors kept parsed per process (lists are usually grouped by receptor).
CACHE_SIZE = 8
_cache: OrderedDict[tuple[Any, ...], Structure | Rejection] = OrderedDict()
#: How many receptor files this process has parsed (the cache's misses; for tests).
RECEPTOR_PARSES = [0]


def _frame_types(lines: Lines, source: str) -> Iterator[RawRecord | Rejection]:
    """One record per pair line; a header comment names the labels."""
    names: list[str] | None = None
    record = 0
    first = True
    while line := lines.readline():
        text = line.strip()
        if first and text.startswith("#"):
            words = text[1:].split()
            if len(words) >= 3 and [w.lower() for w in words[-2:]] == ["receptor", "ligand"]:
                names = words[:-2]
        first = False
        if not text or text.startswith("#"):
            continue
        body, _, comment = text.partition("#")
        cols = body.split()
        if len(cols) < 3:
            reason = f"line {lines.lineno}: needs label(s), a receptor path and a ligand path"
            yield Rejection(source, record, "", reason, MALFORMED)
            record += 1
            continue
        try:
            labels = [float(c) for c in cols[:-2]]
        except ValueError:
            reason = f"line {lines.lineno}: labels must be numbers, got {' '.join(cols[:-2])!r}"
            yield Rejection(source, record, "", reason, MALFORMED)
            record += 1
            continue
        if names is not None and len(names) != len(labels):
            reason = f"line {lines.lineno}: {len(labels)} labels but the header names {len(names)}"
            yield Rejection(source, record, "", reason, MALFORMED)
            record += 1
            continue
        keys = names or [f"label{k}" for k in range(len(labels))]
        item = {
            "labels": dict(zip(keys, labels, strict=True)),
            "receptor": cols[-2],
            "ligand": cols[-1],
            "comment": comment.strip(),
        }
        name = os.path.basename(cols[-1])[:200]
        yield RawRecord(source, record, "types", json.dumps(item), name, lines.offset)
        record += 1


def _parse_types(raw: RawRecord, options: ReadOptions) -> Structure | Rejection:
    item = json.loads(raw.text)
    root = options.data_root or os.path.dirname(os.fsdecode(source_bytes(raw.source)))
    rec_path = os.path.join(root, item["receptor"])
    lig_path = os.path.join(root, item["ligand"])
    part_options = replace(options, receptor=None)
    ligand = next(iter(_records(lig_path, part_options)), None)
    if ligand is None:
        return reject(raw, f"ligand {lig_path}: the file holds no record", EMPTY)
    if isinstance(ligand, Rejection):
        return reject(raw, f"ligand {lig_path}: {ligand.reason}", ligand.kind)
    props: dict[str, Any] = dict(item["labels"])
    if item["comment"]:
        props["comment"] = item["comment"]
    return pair(rec_path, ligand, options, props, raw)


def _records(path: str, options: ReadOptions) -> Iterator[Structure | Rejection]:
    try:
        yield from iter_records(path, options=options)
    except ValueError as exc:  # an unknown extension
        yield Rejection(path, -1, "", str(exc), MALFORMED)


def receptor(path: str, options: ReadOptions) -> Structure | Rejection:
    """The receptor in ``path`` (its first record), parsed once per process (cached)."""
    options = replace(options, receptor=None)
    try:
        st = os.stat(path)
        key: tuple[Any, ...] = (os.path.realpath(path), st.st_size, st.st_mtime_ns, options)
    except OSError as exc:
        return Rejection(path, -1, "", f"cannot open the file: {exc.strerror}", NO_RECEPTOR)
    hit = _cache.get(key)
    if hit is not None:
        _cache.move_to_end(key)
        return hit
    RECEPTOR_PARSES[0] += 1
    found = next(iter(_records(path, options)), None)
    if found is None:
        found = Rejection(path, 0, "", "the file holds no record", EMPTY)
    _cache[key] = found
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return found


def pair(
    receptor_path: str,
    ligand: Structure,
    options: ReadOptions,
    props: dict[str, Any] | None = None,
    raw: RawRecord | None = None,
) -> Structure | Rejection:
    """The complex of the receptor in ``receptor_path`` and ``ligand`` (see the module
    docstring); ``raw`` (a list line) gives its provenance, else the ligand's."""
    rec = receptor(receptor_path, options)
    source = raw.source if raw is not None else ligand.source
    record = raw.record if raw is not None else ligand.record
    if isinstance(rec, Rejection):
        return Rejection(
            source, record, ligand.name, f"receptor {receptor_path}: {rec.reason}", NO_RECEPTOR
        )
    if rec.lattice is not None or ligand.lattice is not None:
        return Rejection(
            source, record, ligand.name, "a complex cannot hold a periodic structure", MALFORMED
        )
    n_r, n_l = len(rec.numbers), len(ligand.numbers)
    weights = None
    if rec.weights is not None or ligand.weights is not None:
        weights = np.concatenate(
            [
                np.ones(n_r) if rec.weights is None else rec.weights,
                np.ones(n_l) if ligand.weights is None else ligand.weights,
            ]
        )
    info: dict[str, object] = {}
    notes = [
        *(f"receptor: {n}" for n in rec.info.get("warnings", [])),  # type: ignore[attr-defined]
        *ligand.info.get("warnings", []),
    ]  # type: ignore[misc]
    if notes:
        info["warnings"] = notes
    per_atom = _merge_atom_properties(rec, ligand)
    per_atom["ligand"] = np.concatenate([np.zeros(n_r), np.ones(n_l)])
    kept = dict(ligand.info.get(PROPERTIES, {}))  # type: ignore[call-overload]
    kept.update(props or {})
    kept.update(receptor=receptor_path, ligand=ligand.source, ligand_record=ligand.record)
    set_properties(info, kept, per_atom)
    info[PARTS_KEY] = (rec, ligand)  # for typed channels (core/complexes.py), never stored
    return Structure(
        np.concatenate([np.asarray(rec.numbers), np.asarray(ligand.numbers)]),
        np.concatenate([rec.positions, ligand.positions]),
        weights=weights,
        name=ligand.name,
        source=source,
        record=record,
        info=info,
    )


def _merge_atom_properties(rec: Structure, lig: Structure) -> dict[str, np.ndarray]:
    """Numeric per-atom properties of both parts, NaN where a part lacks one."""
    a: dict[str, Any] = rec.info.get(ATOM_PROPERTIES, {})  # type: ignore[assignment]
    b: dict[str, Any] = lig.info.get(ATOM_PROPERTIES, {})  # type: ignore[assignment]
    out = {}
    for key in dict.fromkeys([*a, *b]):
        cols = []
        for part, s in ((a, rec), (b, lig)):
            v = part.get(key)
            v = None if v is None else np.asarray(v)
            if v is not None and v.dtype.kind not in "fiub":
                break
            cols.append(np.full(len(s.numbers), np.nan) if v is None else v.astype(np.float64))
        else:
            out[key] = np.concatenate(cols)
    return out


def with_receptor(s: Structure, options: ReadOptions) -> Structure | Rejection:
    """A ligand read while ``options.receptor`` is set, paired with that receptor."""
    assert options.receptor is not None
    return pair(options.receptor, s, options)


def _preload() -> None:
    from rdkit import Chem  # noqa: F401


register(Reader("types", (".types",), _frame_types, _parse_types, _preload))
