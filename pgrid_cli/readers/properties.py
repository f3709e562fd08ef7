"""Per-record properties (docs/format.md §8): what readers keep besides the atoms.

A reader puts a record's properties in ``Structure.info["properties"]`` (name → a
number, a string, a boolean, or a 1-D array of numbers) and its per-atom arrays in
``Structure.info["atom_properties"]`` (name → an array whose first axis is the atoms).
:func:`text_value` turns a text field (SDF tag, CIF item, table cell) into a number when
it reads as one. :class:`LabelTable` is a table of properties joined to records by key
(``--labels``).
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ParameterError
from ..core.structure import Structure

PROPERTIES = "properties"
ATOM_PROPERTIES = "atom_properties"

_UNCERTAINTY = re.compile(r"^([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\(\d+\)$")  # 1.234(5)


def text_value(text: str, uncertainty: bool = False) -> float | str | None:
    """A text field as a number when it reads as one (``int``/``float`` syntax; with
    ``uncertainty``, CIF's ``1.234(5)``), else the stripped text; None when empty."""
    s = text.strip()
    if not s:
        return None
    try:
        return float(s)
    except ValueError:
        pass
    if uncertainty:
        m = _UNCERTAINTY.match(s)
        if m:
            return float(m.group(1))
    return s


def scalar(value: Any) -> float | str | np.ndarray | None:
    """A property value as stored: a float (numbers and booleans), a str, a 1-D float64
    array (sequences of numbers), or None when it cannot be stored."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, (str, np.str_)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    arr = np.asarray(value)
    if arr.dtype.kind in "biuf" and arr.ndim >= 1:
        return arr.astype(np.float64).reshape(-1)
    return None


def properties(s: Structure) -> dict[str, Any]:
    """The properties of a structure (its ``info["properties"]``, possibly empty)."""
    p = s.info.get(PROPERTIES)
    return p if isinstance(p, dict) else {}


def atom_properties(s: Structure) -> dict[str, np.ndarray]:
    """The per-atom properties of a structure (``info["atom_properties"]``)."""
    p = s.info.get(ATOM_PROPERTIES)
    return p if isinstance(p, dict) else {}


def set_properties(
    info: dict[str, object],
    props: dict[str, Any] | None = None,
    atoms: dict[str, Any] | None = None,
) -> dict[str, object]:
    """Add ``props`` (kept where :func:`scalar` can store them) and ``atoms`` to ``info``."""
    if props:
        kept = {str(k): v for k, v in ((k, scalar(v)) for k, v in props.items()) if v is not None}
        if kept:
            info.setdefault(PROPERTIES, {}).update(kept)  # type: ignore[union-attr]
    if atoms:
        info.setdefault(ATOM_PROPERTIES, {}).update(  # type: ignore[union-attr]
            {str(k): np.asarray(v) for k, v in atoms.items()}
        )
    return info


# ---------------------------------------------------------------------- labels table
@dataclass
class LabelTable:
    """Properties joined to records by key (``--labels table.csv --labels-key name``).

    ``key`` is ``("name",)`` (the record's name) or ``("source", "record")`` (its input
    file, matched by full path or by file name, and its index in the file). Every other
    column is a property: a cell that reads as a number is a number, an empty cell is
    missing, anything else is a string.
    """

    path: str
    key: tuple[str, ...]
    columns: list[str]
    rows: dict[tuple[str, ...], dict[str, float | str]] = field(default_factory=dict)

    def lookup(self, s: Structure) -> dict[str, float | str]:
        """The table's properties of ``s`` (empty when no row matches)."""
        if self.key == ("name",):
            return self.rows.get((s.name,), {})
        rec = str(s.record)
        return self.rows.get((s.source, rec)) or self.rows.get((Path(s.source).name, rec), {})


def read_labels(path: str | os.PathLike[str], key: str = "name") -> LabelTable:
    """Read a labels table (``.csv``, or ``.parquet`` with pyarrow or pandas installed)."""
    keys = tuple(k.strip() for k in key.split(",") if k.strip())
    if keys not in (("name",), ("source", "record")):
        raise ParameterError(f"{{labels_key}} must be name or source,record, got {key!r}")
    p = Path(path)
    header, rows = _read_table(p)
    missing = [k for k in keys if k not in header]
    if missing:
        raise ParameterError(
            f"{{labels}} {p} has no column {', '.join(missing)} (columns: {', '.join(header)})"
        )
    columns = [c for c in header if c not in keys]
    table = LabelTable(str(p), keys, columns)
    for row in rows:
        k = tuple(_key_text(row.get(c)) for c in keys)
        values = {}
        for c in columns:
            v = row.get(c)
            v = text_value(v) if isinstance(v, str) else v
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                values[c] = v
        table.rows[k] = values
    return table


def _key_text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "" if v is None else str(v).strip()


def _read_table(p: Path) -> tuple[list[str], list[dict[str, Any]]]:
    if not p.is_file():
        raise ParameterError(f"{{labels}} {p}: no such file")
    if p.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq

            t = pq.read_table(p)
            return list(t.column_names), t.to_pylist()
        except ImportError:
            pass
        try:
            import pandas as pd
        except ImportError:
            raise ParameterError(
                "{labels}: reading .parquet needs pyarrow or pandas (pip install pyarrow)"
            ) from None
        df = pd.read_parquet(p)
        return [str(c) for c in df.columns], df.to_dict("records")
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)
