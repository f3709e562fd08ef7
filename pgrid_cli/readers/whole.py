"""Formats whose file is one document: the whole text, within the record size limit."""

from __future__ import annotations

from .files import Lines


def read_whole(lines: Lines) -> str | None:
    """The rest of the file's text, or None when it is larger than ``lines.limit`` (it is
    then read to its end without being kept)."""
    parts: list[str] = []
    size = 0
    while line := lines.readline():
        size += len(line)
        if size <= lines.limit:
            parts.append(line)
    return "".join(parts) if size <= lines.limit else None
