"""Finding input files and streaming their records.

Reading happens in two steps, so that the second can run in worker processes:

1. :func:`iter_raw_records` streams a file and cuts it into the text of its records
   (:class:`~pgrid_cli.readers.records.RawRecord`) with its format's ``frame`` function.
   This only finds record boundaries; it never interprets chemistry, and it never holds
   more than one record.
2. :func:`parse_record` hands one record's text to its format's ``parse`` function (the
   field's library: ASE, RDKit, pymatgen) and checks the result.

:func:`iter_records` does both. Record indices count from 0 within each file. A file that
cannot be opened at all — or that is not a regular file (a FIFO, a socket, a device, a
directory that could not be listed) and so is never opened — yields a single Rejection
with ``record = -1``; a read error part way through (e.g. a corrupt gzip stream) rejects
the record where it happened and ends that file. No record, and no line, is held beyond
``max_record_bytes`` (:class:`~pgrid_cli.readers.records.ReadOptions`): a larger record is
skipped to its end and rejected.

A record's ``source`` is its file's path as one printable line (:func:`source_name`): a
byte of the name that is not UTF-8, or a control character, is written as a backslash
escape and a backslash is doubled, so the name's bytes can be recovered
(:func:`source_bytes`).
"""

from __future__ import annotations

import errno
import glob
import gzip
import io
import os
import re
import stat
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO

from ..core.structure import Structure
from .records import (
    MALFORMED,
    MAX_RECORD_BYTES,
    PARSE_ERROR,
    TOO_LARGE,
    UNREADABLE,
    RawRecord,
    ReadOptions,
    Rejection,
    UnreadableDirectory,
    check_structure,
    one_line,
    printable,
    reject,
)
from .registry import conformers_of, detect_format, format_from_name, reader
from .registry import formats as registered_formats


def expand_inputs(inputs: Sequence[str | os.PathLike[str]], recursive: bool = True) -> list[Path]:
    """The input files named by ``inputs``, in a deterministic order.

    Each input is a file (kept whatever its extension), a directory (its files with a
    known extension, sorted by their path below it; subdirectories too when
    ``recursive``; hidden files and directories skipped) or a glob pattern (its matches,
    sorted). Inputs keep the order given; a file reached twice is listed once. Nothing is
    opened here: a FIFO, socket, device or symlink loop is listed like a file (reading it
    rejects it), and a directory that cannot be listed is listed itself, as an
    :class:`~pgrid_cli.readers.records.UnreadableDirectory`. Raises ValueError for a path
    that does not exist, a pattern that matches nothing, or when no input file is found.
    """
    out: list[Path] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = os.path.realpath(p)  # unlike Path.resolve(), never raises on a symlink loop
        if key not in seen:
            seen.add(key)
            out.append(p)

    for item in inputs:
        text = os.fspath(item)
        p = Path(text)
        kind = _kind(p)
        if kind == "dir":
            for f in _walk(p, recursive):
                add(f)
        elif kind == "other":
            add(p)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise ValueError(f"no files match {text!r}")
            for m in matches:
                mp = Path(m)
                for f in _walk(mp, recursive) if _kind(mp) == "dir" else [mp]:
                    add(f)
        else:
            raise ValueError(f"{text}: no such file or directory")
    if not out:
        names = ", ".join(os.fspath(i) for i in inputs) or "(nothing)"
        raise ValueError(f"no input files with a known extension found in {names}")
    return out


def _kind(p: Path) -> str:
    """``dir``, ``missing`` (nothing there, not even a symlink) or ``other``."""
    try:
        return "dir" if stat.S_ISDIR(os.stat(p).st_mode) else "other"
    except OSError as exc:  # a dangling symlink, a loop, no permission to look: reading
        # it says so, in one rejection
        missing = exc.errno in (errno.ENOENT, errno.ENOTDIR) and not os.path.lexists(p)
        return "missing" if missing else "other"


def _walk(root: Path, recursive: bool) -> list[Path]:
    files: list[Path] = []

    def unlisted(exc: OSError) -> None:
        d = UnreadableDirectory(exc.filename if exc.filename is not None else root)
        d.reason = _os_reason(exc)
        files.append(d)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        for name in filenames:
            if not name.startswith(".") and format_from_name(name) is not None:
                files.append(Path(dirpath) / name)
    return sorted(files, key=lambda f: f.relative_to(root).parts)


def iter_records(
    path: str | os.PathLike[str],
    format: str | None = None,
    options: ReadOptions | None = None,
) -> Iterator[Structure | Rejection]:
    """Stream the records of one file: one Structure or Rejection each.

    ``format`` overrides the extension (see :func:`~pgrid_cli.readers.detect_format`);
    ``options`` say how records are read and interpreted (:class:`ReadOptions`). A file
    that cannot be opened yields one Rejection with ``record = -1``.
    """
    fmt = detect_format(path, format)
    opts = options or ReadOptions()
    raws = iter_raw_records(
        path, fmt, max_record_bytes=opts.max_record_bytes, conformers=conformers_of(fmt, opts)
    )
    for raw in raws:
        yield raw if isinstance(raw, Rejection) else parse_record(raw, opts)


def iter_raw_records(
    path: str | os.PathLike[str],
    format: str,
    *,
    max_record_bytes: int = MAX_RECORD_BYTES,
    conformers: int = 1,
) -> Iterator[RawRecord | Rejection]:
    """Stream the text of each record of one file (see the module docstring). With
    ``conformers`` K > 1, a record of a format that embeds conformers (SMILES, and SDF/mol
    read with ``embed``: :func:`~pgrid_cli.readers.registry.conformers_of`) comes K times,
    as conformer 0 … K-1 (``RawRecord.conformer``), each parsed on its own."""
    if conformers > 1 and reader(detect_format(path, format)).conformers:
        for item in iter_raw_records(path, format, max_record_bytes=max_record_bytes):
            if isinstance(item, RawRecord):
                for k in range(conformers):
                    yield replace(item, conformer=k)
            else:
                yield item
        return
    source = source_name(path)
    problem = _not_a_file(path)
    if problem is not None:
        yield Rejection(source, -1, "", problem, UNREADABLE)
        return
    framer = reader(detect_format(path, format)).frame
    try:
        # O_NONBLOCK: should the path have become a FIFO since it was looked at, opening
        # it must not wait for a writer (the check below rejects it).
        raw = open(path, "rb", opener=_open_nonblocking)
    except OSError as exc:
        yield Rejection(source, -1, "", f"cannot open the file: {_os_reason(exc)}", UNREADABLE)
        return
    with raw:
        problem = _special(os.fstat(raw.fileno()).st_mode)
        if problem is not None:
            yield Rejection(source, -1, "", problem, UNREADABLE)
            return
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if _is_gzip(path) else raw
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
        lines = Lines(text, raw, max_record_bytes)
        records = framer(lines, source)
        count = 0
        while True:
            try:
                item = next(records)
            except StopIteration:
                break
            except (OSError, EOFError, zlib.error) as exc:
                # The stream itself broke (corrupt or truncated gzip, I/O error): the
                # record being read is lost and nothing after it can be found.
                if count == 0 and lines.lineno == 0:
                    reason = f"cannot read the file: {_os_reason(exc)}"
                    record = -1
                else:
                    reason = (
                        f"read error at line {lines.lineno + 1}, the rest of the file is "
                        f"unreadable: {_os_reason(exc)}"
                    )
                    record = count
                yield Rejection(source, record, "", reason, UNREADABLE)
                return
            count += 1
            yield item


def source_name(path: str | os.PathLike[str]) -> str:
    """The ``source`` stored for a file: its path as one printable line, reversibly
    (:func:`~pgrid_cli.readers.records.printable` of ``os.fsdecode(path)``; ordinary
    paths are unchanged)."""
    return printable(os.fsdecode(path))


_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.DOTALL)
_SHORT = {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\"}


def source_bytes(source: str) -> bytes:
    """The file name (bytes, as ``os.fsencode`` gives them) that :func:`source_name`
    turned into ``source``."""
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(source):
        out += source[pos : m.start()].encode("utf-8", "surrogateescape")
        esc = m.group(1)
        if esc[0] == "x" and len(esc) == 3:
            out.append(int(esc[1:], 16))
        elif esc[0] in "uU" and len(esc) > 1:
            out += chr(int(esc[1:], 16)).encode("utf-8", "surrogatepass")
        else:
            out += _SHORT.get(esc, ("\\" + esc).encode("utf-8", "surrogateescape"))
        pos = m.end()
    out += source[pos:].encode("utf-8", "surrogateescape")
    return bytes(out)


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)


def _special(mode: int) -> str | None:
    """Why a file of this mode is not read (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _SPECIAL if test(mode)), "not a file")
    return f"not a regular file ({kind}): not opened, pgrid reads regular files only"


def _not_a_file(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not read (it is never opened), or None: it may be a file."""
    if isinstance(path, UnreadableDirectory):
        return f"cannot list the directory: {path.reason or 'unknown error'}"
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:  # a symlink loop, a dangling symlink, no permission
        return f"cannot open the file: {_os_reason(exc)}"
    if stat.S_ISDIR(mode):
        try:
            os.listdir(path)
        except OSError as exc:
            return f"cannot list the directory: {_os_reason(exc)}"
        return "cannot open the file: it is a directory"
    return _special(mode)


def _is_gzip(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith(".gz")


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class Lines:
    """Line reader with one line of push-back and a running line number.

    ``limit`` is the record size limit (characters): a framer rejects a record whose
    lines add up to more (:meth:`too_large`). A line longer than that is cut after
    ``limit + 1`` characters and the rest of it skipped unread, so no line is ever held
    whole beyond the limit (and the record holding it is too large).
    """

    __slots__ = ("_cut", "_pushed", "_raw", "_text", "limit", "lineno")

    def __init__(self, text: IO[str], raw: IO[bytes], limit: int = MAX_RECORD_BYTES) -> None:
        self._text = text
        self._raw = raw
        self._pushed: str | None = None
        self.lineno = 0
        self.limit = limit
        self._cut = limit + 1

    def readline(self) -> str:
        if self._pushed is not None:
            line, self._pushed = self._pushed, None
        else:
            line = self._text.readline(self._cut)
            if len(line) == self._cut and line[-1] != "\n":
                self._skip_rest_of_line()
        if line:
            self.lineno += 1
        return line

    def _skip_rest_of_line(self) -> None:
        step = min(self._cut, 1 << 20)
        while True:
            chunk = self._text.readline(step)
            if not chunk or chunk[-1] == "\n":
                return

    def unread(self, line: str) -> None:
        self._pushed = line
        self.lineno -= 1

    @property
    def offset(self) -> int:
        """Bytes of the file read so far (approximate: the reader buffers ahead)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def too_large(self, source: str, record: int, name: str, start: int) -> Rejection:
        """The rejection of a record larger than :attr:`limit` (starting at line
        ``start``), which the framer read to its end without keeping it."""
        return Rejection(
            source,
            record,
            name,
            f"line {start}: the record is larger than {_size(self.limit)} of text (the "
            f"max_record_bytes limit); it was read to its end without being kept",
            TOO_LARGE,
        )


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def parse_record(raw: RawRecord, options: ReadOptions | None = None) -> Structure | Rejection:
    """Parse one record's text with its format's library and check the result."""
    if "\x00" in raw.text:
        return reject(raw, "the record holds binary data (NUL bytes), not text", MALFORMED)
    try:
        opts = options or ReadOptions()
        item = reader(raw.format).parse(raw, opts)
    except Exception as exc:  # a library failing on odd input must not stop the run
        return reject(raw, f"{type(exc).__name__}: {one_line(str(exc))}", PARSE_ERROR)
    if isinstance(item, Rejection):
        return item
    if opts.receptor is not None and raw.format != "types":  # a ligand: pair it
        from .complexes import with_receptor

        item = with_receptor(item, opts)
        if isinstance(item, Rejection):
            return item
    return check_structure(item)


def preload_readers(formats: Sequence[str]) -> None:
    """Import the libraries that read ``formats`` now (they take about a second to import;
    worker processes forked afterwards then share them instead of importing each)."""
    for fmt in set(formats):
        if fmt in registered_formats():  # not, e.g., an unreadable directory's
            reader(fmt).preload()
