"""Files of an output directory that several processes share: locks and temporaries.

* :class:`FileLock` is an ``fcntl.flock`` lock on a file. The kernel releases it when
  its holder exits, however it exits (``kill -9`` included), so a dead run never blocks
  the next one. Forked children (worker processes) close their copy of the descriptor,
  so a lock is never kept alive by a worker that outlives its parent.
* :func:`create_temp` makes a temporary file under a name no other process uses
  (``<name>.<pid>-<random><suffix>``, created with ``O_EXCL``); :func:`atomic_file` and
  :func:`atomic_write` write a file through one and rename it into place, removing it on
  failure.
* :func:`stale_temps` finds the temporaries a killed process left behind.
* :func:`storage_error` turns an ``OSError`` (HDF5's messages span lines) into one line.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Temporary names: ``<final name>.<pid>-<random hex><suffix>`` (and the older
#: ``<final name>.<pid><suffix>`` and ``<final name><suffix>``).
_TEMP_RE = re.compile(
    r"^(?P<final>.+?)(?:\.(?P<pid>\d+)(?:-[0-9a-f]+)?)?(?P<suffix>\.tmp|\.partial)$"
)

_held: weakref.WeakSet[FileLock] = weakref.WeakSet()


def _forget_in_child() -> None:
    # A forked child shares its parent's open file descriptions: closing its copies keeps
    # the parent's locks (flock locks belong to the description, which the parent keeps)
    # and lets them go when the parent dies, whatever the child does.
    for lock in list(_held):
        if lock._fd >= 0:
            try:
                os.close(lock._fd)
            except OSError:
                pass
            lock._fd = -1


os.register_at_fork(after_in_child=_forget_in_child)


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing; the file is never needed
    again and may be deleted by the holder, see :meth:`acquire`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; False when ``blocking`` is off and another process holds it.

        The file's identity is checked after locking: if its holder deleted it meanwhile,
        the lock is on a dead file and is taken again on the new one.
        """
        if self._fd >= 0:
            return True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        _held.add(self)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return True

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            _held.discard(self)
            os.close(fd)  # closing the last descriptor releases the lock

    def __del__(self) -> None:  # a lock whose holder is gone lets go
        self.release()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(path: str | os.PathLike[str]) -> int | None:
    """The pid of the process holding the lock on ``path`` (None when nobody does).

    Only looks: a missing lock file is not created.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- temporaries
def temp_name(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh temporary name next to ``path``: ``<name>.<pid>-<random><suffix>``."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def create_temp(path: Path, suffix: str = ".tmp") -> tuple[Path, int]:
    """(name, open descriptor) of a new temporary file for ``path``, created exclusively."""
    while True:
        tmp = temp_name(path, suffix)
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path`` through (an exclusive temporary, e.g. for h5py):
    renamed into place when the block ends; on any failure it is removed and an OSError
    is one line (:func:`storage_error`)."""
    tmp, fd = create_temp(path)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise storage_error(exc, path) from None
        raise


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def temp_target(name: str) -> tuple[str, int | None] | None:
    """(final name, pid or None) of a temporary's file name, or None for another name."""
    m = _TEMP_RE.match(name)
    if m is None:
        return None
    pid = m.group("pid")
    return m.group("final"), int(pid) if pid else None


def stale_temps(directory: Path, finals: set[str]) -> list[Path]:
    """The temporaries in ``directory`` of the files named ``finals`` (every one: call
    this only while holding the lock that every writer of those files holds)."""
    out = []
    for p in sorted(directory.glob("*")):
        t = temp_target(p.name)
        if t is not None and t[0] in finals:
            out.append(p)
    return out


def storage_error(
    exc: OSError, path: str | os.PathLike[str], what: str = "cannot write"
) -> OSError:
    """``exc`` as a one-line OSError naming ``path`` (HDF5's messages span several lines
    and repeat the file name, the time and buffer addresses)."""
    code = exc.errno
    if code is None:
        m = re.search(r"errno = (\d+)", str(exc))
        code = int(m.group(1)) if m else None
    if code:
        reason = os.strerror(code)
    else:
        reason = " ".join(str(exc).split()) or type(exc).__name__
    out = OSError(f"{path}: {what}: {reason}")
    out.errno = code
    return out
