"""Properties in shards (docs/format.md §6, format version 2): columns from records.

Each structure brings a dict of properties (name → float, str or 1-D float array) and a
dict of per-atom arrays. A shard stores one column per name:

* ``properties/<name>`` (N,): float64 when every structure that has it has a number
  (NaN where a structure lacks it); UTF-8 strings as soon as one value is a string
  (numbers written as Python writes them, integers without ``.0``; ``""`` where
  missing); variable-length float64 arrays when a value is an array (a number becomes
  a one-element array, a missing value an empty one; a string turns the column into
  strings of JSON lists).
* ``atom_properties/<name>`` (M, …) aligned with ``positions``: float64 (NaN where a
  structure lacks it); when the values are not all numbers of one trailing shape, UTF-8
  strings, one per atom.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from .layout import STR_DTYPE

PROPERTIES = "properties"
ATOM_PROPERTIES = "atom_properties"
ID = "id"
VLEN_FLOAT = h5py.vlen_dtype(np.float64)


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, np.ndarray):
        return json.dumps(v.tolist())
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return str(int(v))  # 7, not 7.0: what the file most likely said
    return str(v)


def property_column(values: Sequence[Any]) -> tuple[np.ndarray, Any]:
    """(data, dtype) of one property column (the rule in the module docstring)."""
    present = [v for v in values if v is not None]
    if any(isinstance(v, str) for v in present):
        return np.array([_text(v) for v in values], dtype=object), STR_DTYPE
    if any(isinstance(v, np.ndarray) for v in present):
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            out[i] = np.zeros(0) if v is None else np.atleast_1d(np.asarray(v, dtype=np.float64))
        return out, VLEN_FLOAT
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64), None


def atom_column(
    values: Sequence[np.ndarray | None], counts: Sequence[int]
) -> tuple[np.ndarray, Any]:
    """(data, dtype) of one per-atom column: ``values[s]`` is (counts[s], …) or None."""
    present = [np.asarray(v) for v in values if v is not None]
    tails = {v.shape[1:] for v in present}
    numeric = all(v.dtype.kind in "biuf" for v in present)
    shapes_ok = all(
        v is None or np.asarray(v).shape[:1] == (n,) for v, n in zip(values, counts, strict=True)
    )
    if numeric and shapes_ok and len(tails) == 1:
        tail = tails.pop()
        parts = [
            np.full((n, *tail), np.nan) if v is None else np.asarray(v, dtype=np.float64)
            for v, n in zip(values, counts, strict=True)
        ]
        return (np.concatenate(parts) if parts else np.zeros((0, *tail))), None
    texts: list[str] = []
    for v, n in zip(values, counts, strict=True):
        if v is None or np.asarray(v).shape[:1] != (n,):
            texts.extend([""] * n)
        else:
            texts.extend(_text(x.tolist() if isinstance(x, np.ndarray) else x) for x in v)
    return np.array(texts, dtype=object), STR_DTYPE


def write_properties(
    f: h5py.File,
    props: Sequence[dict[str, Any]],
    atoms: Sequence[dict[str, Any]],
    counts: Sequence[int],
) -> list[str]:
    """Write the property columns of N structures; returns the dataset paths written."""
    written = []
    names = sorted({k for p in props for k in p})
    for name in names:
        data, dtype = property_column([p.get(name) for p in props])
        path = f"{PROPERTIES}/{name}"
        f.create_dataset(path, data=data, dtype=dtype)
        written.append(path)
    for name in sorted({k for a in atoms for k in a}):
        data, dtype = atom_column([a.get(name) for a in atoms], counts)
        path = f"{ATOM_PROPERTIES}/{name}"
        f.create_dataset(path, data=data, dtype=dtype)
        written.append(path)
    return written


def read_property(f: h5py.File, name: str, i: int | slice = slice(None)) -> Any:
    """Property ``name`` of structure(s) ``i`` (float, str or array; strings decoded)."""
    ds = f[f"{PROPERTIES}/{name}"]
    v = ds[i]
    if ds.dtype.kind == "O" and h5py.check_string_dtype(ds.dtype) is not None:
        if isinstance(v, np.ndarray):
            return np.array([x.decode() if isinstance(x, bytes) else x for x in v], dtype=object)
        return v.decode() if isinstance(v, bytes) else v
    return v


def property_names(f: h5py.File) -> list[str]:
    return sorted(f[PROPERTIES]) if PROPERTIES in f else []


def atom_property_names(f: h5py.File) -> list[str]:
    return sorted(f[ATOM_PROPERTIES]) if ATOM_PROPERTIES in f else []


def summarize(paths: Sequence[Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """What ``pgrid info`` lists of the properties of some shards: for each name of
    ``properties`` and ``atom_properties``, its ``kind`` (number, string, array,
    several), ``count`` (values present) and, for numbers, ``min`` and ``max``."""
    out: dict[str, dict[str, dict[str, Any]]] = {PROPERTIES: {}, ATOM_PROPERTIES: {}}
    for path in paths:
        try:
            f = h5py.File(path, "r")
        except OSError:
            continue  # verify_shard reports it
        with f:
            for group in (PROPERTIES, ATOM_PROPERTIES):
                if group not in f:
                    continue
                for name, ds in f[group].items():
                    _add(out[group].setdefault(name, {"kind": None, "count": 0}), ds)
    return out


def _add(entry: dict[str, Any], ds: h5py.Dataset) -> None:
    if h5py.check_string_dtype(ds.dtype) is not None:
        kind = "string"
        values = ds[()]
        entry["count"] += int(sum(1 for v in values if v not in (b"", "")))
    elif h5py.check_vlen_dtype(ds.dtype) is not None:
        kind = "array"
        entry["count"] += int(sum(1 for v in ds[()] if len(v)))
    else:
        kind = "number"
        v = np.asarray(ds[()], dtype=np.float64)
        ok = v[np.isfinite(v)]
        rows = np.isfinite(v).reshape(len(v), -1).all(axis=1) if len(v) else v
        entry["count"] += int(np.count_nonzero(rows))
        if ok.size:
            entry["min"] = min(float(ok.min()), entry.get("min", np.inf))
            entry["max"] = max(float(ok.max()), entry.get("max", -np.inf))
    entry["kind"] = kind if entry["kind"] in (None, kind) else "several"


def voxel_range(paths: Sequence[Any]) -> dict[str, float | None]:
    """The smallest and largest voxel edge (Å) of the structures of some shards, from
    their ``axes`` and ``grid_shape`` (``voxel_min``, ``voxel_max``; None when empty)."""
    lo, hi = np.inf, -np.inf
    for path in paths:
        try:
            f = h5py.File(path, "r")
        except OSError:
            continue
        with f:
            if "axes" not in f or "grid_shape" not in f.attrs or not len(f["axes"]):
                continue
            edges = np.linalg.norm(f["axes"][()], axis=2) / np.asarray(f.attrs["grid_shape"])
            lo, hi = min(lo, float(edges.min())), max(hi, float(edges.max()))
    return {
        "voxel_min": lo if np.isfinite(lo) else None,
        "voxel_max": hi if np.isfinite(hi) else None,
    }
