"""Channels that fit the chemistry: ``channels="auto"`` (a first pass over the inputs
finds the elements present), ``exclude`` (elements not gridded) and the count of atoms
that went to the catch-all channel ``*``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.channels import ChannelSpec, atomic_number, element_symbol
from ..core.errors import ParameterError
from ..core.structure import Structure
from ..readers import RawRecord, ReadOptions, iter_raw_records, parse_record

if TYPE_CHECKING:
    from .grid import Settings

__all__ = [
    "AUTO",
    "auto_channels",
    "catch_all_counts",
    "channels_without",
    "element_symbol",
    "excluded_numbers",
    "scan_elements",
]

AUTO = "auto"


def excluded_numbers(exclude: str | Sequence[str]) -> tuple[int, ...]:
    """Atomic numbers of ``exclude`` (symbols, or one comma-separated string), sorted."""
    items = exclude.split(",") if isinstance(exclude, str) else list(exclude)
    out = set()
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        try:
            out.add(atomic_number(item))
        except ValueError:
            raise ParameterError(f"{{exclude}}: {item!r} is not a chemical element") from None
    return tuple(sorted(out))


def channels_without(channels: str, exclude: tuple[int, ...]) -> str:
    """The channel text to build the recipe from: ``auto`` stands in as ``single`` until
    the inputs are known; the preset ``elements`` loses the excluded elements; an
    explicit list that names an excluded element is an error."""
    key = channels.strip().lower()
    if key == AUTO:
        return "single"
    if not exclude or key == "single":
        return channels
    spec = ChannelSpec.parse(channels)
    gone = {element_symbol(z) for z in exclude}
    if key == "elements":
        return ",".join(n for n in spec.names if n not in gone)
    both = [n for n in spec.names if n in gone]
    if both:
        raise ParameterError(
            f"{{exclude}} {','.join(both)} also has a channel in {{channels}} {channels}: "
            f"an excluded element is not gridded, so it needs no channel"
        )
    return channels


def auto_channels(elements: Iterable[int], settings: Settings) -> str:
    """One channel per element found (by atomic number), excluded ones left out."""
    keep = sorted(set(elements) - set(settings.exclude))
    if not keep:
        return "single"  # nothing to grid: every record will be rejected anyway
    return ",".join(element_symbol(z) for z in keep)


def scan_elements(files: Sequence[Path], formats: Sequence[str], read: ReadOptions) -> set[int]:
    """The atomic numbers present in the inputs: a first pass over every record.

    XYZ and QM9 frames are read from their text (the first word of each atom line); other
    formats are parsed by their reader (what ``pgrid grid`` does anyway, without the
    gridding). Records that cannot be read add nothing (the run rejects them later).
    """
    found: set[int] = set()
    for path, fmt in zip(files, formats, strict=True):
        for item in iter_raw_records(path, fmt, max_record_bytes=read.max_record_bytes):
            if not isinstance(item, RawRecord):
                continue
            if item.format in ("xyz", "qm9"):
                found.update(_xyz_elements(item.text))
            else:
                s = parse_record(item, read)
                if isinstance(s, Structure):
                    found.update(int(z) for z in np.unique(s.numbers))
    return {z for z in found if 0 < z < 119}


def _xyz_elements(text: str) -> set[int]:
    lines = text.split("\n")
    try:
        n = int(lines[0].strip())
    except ValueError:
        return set()
    out = set()
    for line in lines[2 : 2 + n]:
        word = line.split(maxsplit=1)[0] if line.strip() else ""
        try:
            out.add(int(word) if word.isdigit() else atomic_number(word))
        except ValueError:
            continue
    return out


def catch_all_counts(settings: Settings, structures: Sequence[Structure]) -> Counter[str]:
    """Atoms of ``structures`` that go to the catch-all channel ``*``, by element."""
    spec = settings.recipe.spec
    if "*" not in spec.names or spec.typed:
        return Counter()
    named = {atomic_number(n) for n in spec.names if n != "*"}
    named.update(settings.exclude)
    counts: Counter[str] = Counter()
    if not structures:
        return counts
    z = np.concatenate([np.asarray(s.numbers) for s in structures])  # one pass per task
    rest = z[~np.isin(z, list(named))]
    if rest.size:
        values, n = np.unique(rest, return_counts=True)
        counts.update({element_symbol(int(v)): int(k) for v, k in zip(values, n, strict=True)})
    return counts
