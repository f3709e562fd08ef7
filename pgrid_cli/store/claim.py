"""A slice of an output directory, claimed by one ``pgrid grid`` process while it runs.

:func:`claim_slice` makes the directory ready for slice I of N and returns a
:class:`SliceClaim`; the process then writes its shards and ends with
:meth:`SliceClaim.finish` (the slice is complete; the last slice writes the manifest) or
:meth:`SliceClaim.fail`. Concurrent processes are kept apart by locks
(:mod:`pgrid_cli.store.files`):

* the claim is made under the directory lock (``.pgrid-lock``), so two processes never
  decide at once what a directory holds;
* the slice lock (``slices/slice-I-of-N.lock``) is held for the whole run: a second
  process for the same slice, or for a slicing into another N (whose shards overlap), is
  refused with one line; other slices of the same N run side by side. A killed process's
  locks go with it, so ``resume`` is never blocked by a dead run;
* temporaries have names of their own (``<name>.<pid>-<random>.partial`` / ``.tmp``); a
  claim removes the stale ones of its own slice (and the run-wide ones, under the lock).

A run that fails before it wrote any shard leaves the directory as it found it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py

from ..core.errors import ParameterError
from ..core.version import __version__
from .files import FileLock, atomic_write, stale_temps
from .rundir import (
    ERRORS,
    LOCK_NAME,
    MANIFEST,
    RUN_FILES,
    SLICE_FORMAT,
    SLICES_DIR,
    SLICING,
    SLICING_FORMAT,
    VDS_NAME,
    directory_lock,
    read_slice_states,
    read_slicing,
    running_slices,
    slice_lock_path,
    slice_state_path,
    slicing_path,
    write_index_locked,
    write_json,
)
from .shard import partial_index, shard_index
from .verify import ShardCheck, verify_shard


class SliceClaim:
    """Slice ``index`` of ``count`` of ``out``, held by this process (see the module
    docstring). ``kept`` are the complete, valid shards of an earlier attempt (resume)."""

    def __init__(
        self,
        out: Path,
        index: int,
        count: int,
        state: dict[str, Any],
        lock: FileLock,
        created: list[Path],
        previous: str | None,
    ) -> None:
        self.out = out
        self.index = index
        self.count = count
        self.state = state
        self.kept: dict[int, ShardCheck] = {}
        self._lock = lock
        self._created = created  # what the claim made: removed again if the run fails
        self._previous = previous  # the slice state the claim replaced (None: there was none)

    @property
    def state_path(self) -> Path:
        return slice_state_path(self.out, self.index, self.count)

    def finish(self, **results: Any) -> bool:
        """Record the slice as complete (``results`` go into its state); the last slice
        of the run to finish writes the manifest and ``errors.jsonl``. Returns True when
        this call wrote them. Lets the slice go."""
        try:
            self.state.update(complete=True, **results)
            write_json(self.state_path, self.state)
            with directory_lock(self.out):
                done = {
                    int(s["slice_index"])
                    for s in read_slice_states(self.out)
                    if s["run_id"] == self.state["run_id"]
                    and s["complete"]
                    and int(s["num_slices"]) == self.count
                }
                if len(done) < self.count:
                    return False
                write_index_locked(self.out)
                return True
        finally:
            self.release()

    def fail(self, shards_written: int) -> None:
        """The run stopped with an error after writing ``shards_written`` shards. When it
        wrote none, the claim is undone: the slice state it replaced is put back, and
        what it created (the slice state, lock files, directories) is removed, so the
        directory is as it was (but for what ``overwrite`` had deleted)."""
        try:
            if shards_written == 0 and self.out.is_dir():
                with directory_lock(self.out) as lock:
                    if self._previous is not None:
                        atomic_write(self.state_path, self._previous)
                    for p in reversed(self._created):
                        if p.name == SLICING and read_slice_states(self.out):
                            continue  # other slices of the run go by it
                        _remove_if_empty(p, lock)
        finally:
            self.release()

    def release(self) -> None:
        """Let the slice go (without recording anything)."""
        self._lock.release()


def claim_slice(
    out: Path,
    run_id: str,
    params: dict[str, Any],
    inputs: list[dict[str, Any]],
    shard_size: int,
    index: int,
    count: int,
    resume: bool = False,
    overwrite: bool = False,
    command: str = "",
    slicing: dict[str, Any] | None = None,
    only_missing: bool = False,
) -> SliceClaim | None:
    """Make ``out`` ready for slice ``index`` of ``count`` of run ``run_id`` and hold it.

    ``resume`` keeps the valid shards of the same run (checksums included) and removes
    the rest of this slice's; ``overwrite`` removes pgrid's files of this slice (of every
    slice when ``count`` is 1). ``slicing`` is the run's slicing record to write on first
    contact (see :func:`~pgrid_cli.runs.slicing.resolve_slice`): written unless the run
    has one (replaced under ``overwrite`` when it came from another array job), refused
    when it differs from the run's. With ``only_missing``, returns None (and touches
    nothing) when the slice is complete or running. Raises ParameterError when the
    directory holds another run, foreign files, or is in use by a process writing the
    same shards.
    """
    if resume and overwrite:
        raise ParameterError("{resume} and {overwrite} cannot be combined")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    created: list[Path] = []
    lock = directory_lock(out)
    while True:  # a failing run may remove the directory between these two steps
        if not out.is_dir():
            missing = [p for p in (out, *out.parents) if not p.exists()]
            out.mkdir(parents=True, exist_ok=True)
            created += reversed(missing)  # outermost first: undone innermost first
        if not lock.path.exists():
            created.append(lock.path)
        try:
            lock.acquire()
            break
        except FileNotFoundError:
            continue
    slice_lock = FileLock(slice_lock_path(out, index, count))
    try:
        running = running_slices(out)
        if only_missing and _done_or_running(out, run_id, index, count, running):
            for p in reversed(created):
                _remove_if_empty(p, lock)
            lock.release()
            return None
        _refuse_if_in_use(out, running, index, count)
        for p in stale_temps(out, set(RUN_FILES)):  # only written under the directory lock
            p.unlink(missing_ok=True)
        mine = _prepare(out, run_id, params, index, count, resume, overwrite, running)
        slices = out / SLICES_DIR
        if not slices.is_dir():
            slices.mkdir()
            created.append(slices)
        _record_slicing(out, run_id, slicing, overwrite and count == 1, overwrite, created)
        lock_file_existed = slice_lock.path.exists()
        if not slice_lock.acquire(blocking=False):  # pragma: no cover - checked above
            raise ParameterError(f"output directory {out} is in use by another pgrid grid run")
        if not lock_file_existed:
            created.append(slice_lock.path)
        state_path = slice_state_path(out, index, count)
        for p in stale_temps(slices, {state_path.name}):
            p.unlink(missing_ok=True)
        previous = state_path.read_text() if state_path.exists() else None
        state: dict[str, Any] = {
            "format": SLICE_FORMAT,
            "run_id": run_id,
            "slice_index": index,
            "num_slices": count,
            "parameters": params,
            "inputs": inputs,
            "shard_size": shard_size,
            "command": command,
            "pgrid_version": __version__,
            "complete": False,
            "total_items": None,
        }
        write_json(state_path, state)
        if previous is None:
            created.append(state_path)
    except BaseException:
        slice_lock.release()
        for p in reversed(created):
            _remove_if_empty(p, lock)
        lock.release()
        raise
    lock.release()
    claim = SliceClaim(out, index, count, state, slice_lock, created, previous)
    try:  # this slice's shards, checked outside the directory lock (it can take a while)
        for k, p in sorted(mine.items()):
            check = verify_shard(
                p, expect={"run_id": run_id, "first_item": k * shard_size}, checksums=True
            )
            if check.ok:
                claim.kept[k] = check
            else:
                p.unlink()
    except BaseException:
        claim.release()
        raise
    return claim


def _done_or_running(
    out: Path, run_id: str, index: int, count: int, running: dict[tuple[int, int], int]
) -> bool:
    if (index, count) in running:
        return True
    path = str(slice_state_path(out, index, count))
    return any(
        s["_path"] == path and s.get("run_id") == run_id and s.get("complete")
        for s in read_slice_states(out)
    )


def _record_slicing(
    out: Path,
    run_id: str,
    slicing: dict[str, Any] | None,
    drop: bool,
    overwrite: bool,
    created: list[Path],
) -> None:
    """Write the run's slicing record (under the directory lock), see :func:`claim_slice`."""
    path = slicing_path(out)
    if slicing is None:
        if drop:
            path.unlink(missing_ok=True)
        return
    existing = read_slicing(out, run_id)
    key = ("num_slices", "task_base", "task_step")
    if existing is not None and not (
        overwrite and existing.get("array_job_id") != slicing.get("array_job_id")
    ):
        if [existing.get(k) for k in key] != [slicing.get(k) for k in key]:
            raise ParameterError(
                f"{path} divides this run into {existing['num_slices']} slices (first Slurm "
                f"array {existing.get('first_array', '?')}), this process into "
                f"{slicing['num_slices']}; use {{overwrite}} to start the run again"
            )
        return
    if not path.exists():
        created.append(path)
    write_json(path, {"format": SLICING_FORMAT, "run_id": run_id, **slicing})


def _remove_if_empty(p: Path, lock: FileLock) -> None:
    """Remove something a claim created: a file, or a directory when it holds nothing
    else (but the directory lock file, which goes too: a process waiting for it takes
    the lock on a new file, see :meth:`FileLock.acquire`)."""
    try:
        if not p.is_dir():
            p.unlink(missing_ok=True)
        elif not [q for q in p.iterdir() if q != lock.path]:
            lock.path.unlink(missing_ok=True)
            p.rmdir()
    except OSError:
        pass


def _refuse_if_in_use(
    out: Path, running: dict[tuple[int, int], int], index: int, count: int
) -> None:
    for (i, n), pid in sorted(running.items()):
        if (i, n) == (index, count):
            where = f", slice {i} of {n}" if n > 1 else ""
            raise ParameterError(
                f"output directory {out} is in use by another pgrid grid run (process "
                f"{pid}{where}); wait for it to finish, or stop it and continue with {{resume}}"
            )
        if n != count:
            raise ParameterError(
                f"output directory {out} is in use by a run in {n} slice(s) (slice {i}, "
                f"process {pid}), whose shards overlap this one's; wait for it to finish"
            )


def _prepare(
    out: Path,
    run_id: str,
    params: dict[str, Any],
    index: int,
    count: int,
    resume: bool,
    overwrite: bool,
    running: dict[tuple[int, int], int],
) -> dict[int, Path]:
    """Clear the way for the slice (see :func:`claim_slice`); returns this slice's
    complete shards when resuming (to be verified)."""
    entries = [p for p in sorted(out.iterdir()) if p.name != LOCK_NAME]
    shards: dict[int, Path] = {}
    partials: dict[int, list[Path]] = {}
    foreign: list[Path] = []
    for p in entries:
        k = shard_index(p)
        if k is not None:
            shards[k] = p
        elif partial_index(p) is not None:
            partials.setdefault(int(partial_index(p) or 0), []).append(p)
        elif p.name not in (MANIFEST, ERRORS, SLICES_DIR, VDS_NAME) and not p.name.endswith(".tmp"):
            foreign.append(p)
    states = []
    for st in read_slice_states(out):  # a slice that stopped before writing a shard …
        if _never_wrote(st, shards, running):
            Path(st["_path"]).unlink(missing_ok=True)  # … left nothing to keep or continue
        else:
            states.append(st)
    other_states = [s for s in states if s.get("run_id") != run_id]
    # Other slices' shards left by a different run (only a sliced run can meet them).
    stale_other = {
        k: p
        for k, p in shards.items()
        if count > 1 and k % count != index and shard_run_id(p) != run_id
    }
    mine = {k: p for k, p in shards.items() if k % count == index}
    my_partials = [p for k, ps in partials.items() if k % count == index for p in ps]
    state_path = slice_state_path(out, index, count)
    my_state = next((s for s in states if Path(s["_path"]) == state_path), None)
    run_files = [out / name for name in RUN_FILES]

    if overwrite:
        for st in other_states:
            key = (int(st["slice_index"]), int(st["num_slices"]))
            if key in running:
                raise ParameterError(
                    f"output directory {out} is in use by another run (slice {key[0]} of "
                    f"{key[1]}, process {running[key]}); wait for it or choose another directory"
                )
        doomed = [*mine.values(), *my_partials, *run_files, state_path]
        doomed += [Path(s["_path"]) for s in other_states] + list(stale_other.values())
        if count == 1:
            doomed += [*shards.values(), *(p for ps in partials.values() for p in ps)]
            doomed += [Path(s["_path"]) for s in states]
        for p in doomed:
            p.unlink(missing_ok=True)
        return {}
    if other_states or stale_other:
        raise ParameterError(different_run(out, params, other_states))
    for p in my_partials:  # stale: this process holds the slice now
        p.unlink(missing_ok=True)
    if resume:
        return mine
    if count == 1:
        left = [p for p in entries if p.exists() and not _only_locks(p)]
        if left:
            raise ParameterError(
                f"output directory {out} is not empty ({len(left)} entries); use "
                f"{{resume}} to continue the run there or {{overwrite}} to replace it"
            )
        return {}
    if foreign:
        raise ValueError(
            f"output directory {out} holds files pgrid did not write (e.g. {foreign[0].name}); "
            f"use an empty directory"
        )
    if my_state is not None and my_state.get("complete"):
        raise ParameterError(
            f"slice {index} of {count} has already run in {out} (it is complete); use "
            f"{{overwrite}} to redo it"
        )
    if mine or my_state is not None:
        raise ParameterError(
            f"slice {index} of {count} was started in {out} and stopped after writing "
            f"{len(mine)} of its shards; use {{resume}} to continue it or {{overwrite}} to "
            f"redo it"
        )
    return {}


def _only_locks(p: Path) -> bool:
    """A ``slices`` directory holding nothing but lock files."""
    return p.name == SLICES_DIR and p.is_dir() and all(q.suffix == ".lock" for q in p.iterdir())


def _never_wrote(
    st: dict[str, Any], shards: dict[int, Path], running: dict[tuple[int, int], int]
) -> bool:
    """Whether a slice state is of a slice that is not running, is not complete and has
    no complete shard: it stopped before writing anything."""
    i, n = int(st["slice_index"]), int(st["num_slices"])
    if st.get("complete") or (i, n) in running:
        return False
    return not any(k % n == i and shard_run_id(p) == st.get("run_id") for k, p in shards.items())


def shard_run_id(path: Path) -> str | None:
    """The ``run_id`` attribute of a shard file (None if unreadable or absent)."""
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("run_id")
    except OSError:
        return None
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def different_run(out: Path, params: dict[str, Any], states: list[dict[str, Any]]) -> str:
    what = "the input files differ (paths, sizes or modification times)"
    if states:
        old = states[0].get("parameters", {})
        diffs = [
            f"{k} {old.get(k)!r} → {params.get(k)!r}"
            for k in sorted(set(old) | set(params))
            if old.get(k) != params.get(k)
        ]
        if diffs:
            what = "parameters differ: " + ", ".join(diffs[:4])
    return (
        f"output directory {out} holds a different run ({what}); use {{overwrite}} to "
        f"replace it or choose another directory"
    )
