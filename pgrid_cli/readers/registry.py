"""The input formats: each reader module registers one :class:`Reader` here.

A reader is two functions: ``frame`` cuts a text stream into the raw text of its records
(never interpreting chemistry, never holding more than one record) and ``parse`` turns one
record's text into a :class:`~pgrid_cli.core.Structure` (or a rejection) with the field's
library. Adding a format is one new module that calls :func:`register`.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import ParameterError
from ..core.structure import Structure
from .records import DIRECTORY, RawRecord, ReadOptions, Rejection, UnreadableDirectory

if TYPE_CHECKING:
    from .files import Lines


@dataclass(frozen=True)
class Reader:
    """One input format.

    Attributes
    ----------
    name : the format's name (``--format``)
    extensions : file suffixes that select it (lower case, with the dot; ``.gz`` may follow)
    frame : ``frame(lines, source)`` → raw records or rejections, in file order
    parse : ``parse(raw, options)`` → a Structure or a Rejection
    preload : imports the parsing library (done once before worker processes fork)
    aliases : other names accepted for ``--format``
    names : file-name patterns that select it whatever the suffix (``fnmatch``, case
        sensitive, e.g. ``POSCAR*``)
    """

    name: str
    extensions: tuple[str, ...]
    frame: Callable[[Lines, str], Iterator[RawRecord | Rejection]]
    parse: Callable[[RawRecord, ReadOptions], Structure | Rejection]
    preload: Callable[[], None]
    aliases: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    conformers: bool = False  #: records may be read as several conformers (``conformers``)
    #: … only when its records are embedded (``ReadOptions.embed``; SDF/mol)
    conformers_need_embed: bool = False


_READERS: dict[str, Reader] = {}


def conformers_of(fmt: str, options: ReadOptions) -> int:
    """How many conformers each record of format ``fmt`` is read as, under ``options``
    (:class:`~pgrid_cli.readers.records.ReadOptions`): its ``conformers`` for a format
    that embeds them (SMILES; SDF/mol with ``embed``), else 1."""
    r = _READERS[fmt]
    if not r.conformers or (r.conformers_need_embed and not options.embed):
        return 1
    return int(options.conformers)


def register(reader: Reader) -> Reader:
    """Make ``reader`` available by name and extension."""
    _READERS[reader.name] = reader
    return reader


def formats() -> tuple[str, ...]:
    """Names of the registered formats."""
    return tuple(_READERS)


def reader(name: str) -> Reader:
    """The reader of a registered format name."""
    return _READERS[name]


def _extensions() -> dict[str, str]:
    return {ext: r.name for r in _READERS.values() for ext in r.extensions}


def format_from_name(path: str | os.PathLike[str]) -> str | None:
    """The format a file name selects: its name pattern (``POSCAR*``), else its suffix
    (``None`` when neither is known)."""
    name = Path(path).name
    for r in _READERS.values():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in r.names):
            return r.name
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return _extensions().get(suffixes[-1]) if suffixes else None


def detect_format(path: str | os.PathLike[str], override: str | None = None) -> str:
    """The format of ``path``: ``override`` if given (a name or alias), else its suffix
    (optionally followed by ``.gz``). Raises ValueError when neither tells.

    An :class:`~pgrid_cli.readers.records.UnreadableDirectory` (listed by
    :func:`~pgrid_cli.readers.expand_inputs` so that it is accounted for) has the format
    ``directory``: reading it only rejects it."""
    if override is None and isinstance(path, UnreadableDirectory):
        return DIRECTORY
    if override is not None:
        key = override.strip().lower()
        for r in _READERS.values():
            if key == r.name or key in r.aliases:
                return r.name
        raise ValueError(f"unknown format {override!r}: use one of {', '.join(formats())}")
    fmt = format_from_name(path)
    if fmt is None:
        raise ParameterError(
            f"cannot tell the format of {path} from its extension "
            f"(known: {', '.join(sorted(_extensions()))}, optionally .gz; and names "
            f"{', '.join(sorted(n for r in _READERS.values() for n in r.names))}); use {{format}}"
        )
    return fmt
