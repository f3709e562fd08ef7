"""``pgrid grid``: molecule and crystal files → a directory of HDF5 shards.

:func:`grid_files` is what ``pgrid grid`` runs. The input records (every record of every
input file, in :func:`~pgrid_cli.readers.expand_inputs` order) form one numbered stream of
*items*; shard ``k`` holds items ``[k·S, (k+1)·S)`` for the shard size ``S`` — the
structures among them, and the rejected ones in its ``rejected`` dataset. That fixed
assignment is what makes a run deterministic, resumable and divisible:

* the main process only cuts files into records (:func:`~pgrid_cli.readers.iter_raw_records`)
  and writes shards; worker processes (``workers``) parse, grid (the recipe's one kernel
  call per task), round and compress, and their results are written in item order, so the
  shards do not depend on the number of workers or threads;
* ``resume`` keeps every complete, valid shard and redoes the rest;
* slice ``I`` of ``N`` (``shard_index``/``num_shards``, or a Slurm array task: see
  :mod:`~pgrid_cli.runs.slicing`; N is recorded by the run's first sliced process) writes
  shards ``k ≡ I (mod N)``, so N jobs share one directory; when the last slice finishes
  (or on ``pgrid index``) the manifest and ``errors.jsonl`` are written by
  :func:`~pgrid_cli.store.rundir.write_index`; ``missing`` runs, one after the other,
  the slices that are neither complete nor running (a finished run needs nothing).

The output directory's files and states are :mod:`pgrid_cli.store.rundir`'s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ParameterError
from ..core.kernel import available_cores, get_memory_limit
from ..core.recipe import GridRecipe
from ..core.structure import Structure
from ..readers import (
    RawRecord,
    ReadOptions,
    Rejection,
    conformers_of,
    detect_format,
    expand_inputs,
    iter_raw_records,
    preload_readers,
)
from ..readers.properties import LabelTable, atom_properties, properties, read_labels
from ..store.claim import SliceClaim, claim_slice
from ..store.layout import STR_DTYPE
from ..store.rundir import canonical_path, input_meta, read_slice_states, read_slicing, run_id
from ..store.shard import Shard, ShardMeta, ShardWriter, shard_name
from .elements import (
    auto_channels,
    catch_all_counts,
    element_symbol,
    scan_elements,
)
from .gridoptions import (
    _MAX_NOTES,
    _PARSE_TASK,
    _TASK_BYTES,
    CAPTURE_WARNING,
    COARSE_NOTE,
    COARSE_VOXELS,
    GridOptions,
    Settings,
    voxel_edge,
)
from .gridtask import Done, Gridded, Parsed, Task, TaskResult, parse_task, run_task
from .gridtiles import tile_attributes, tile_columns
from .slicing import SlurmArray, missing_count, resolve_slice
from .summary import Progress, RunSummary
from .workers import process_pool


def _view_attributes(recipe: GridRecipe) -> dict[str, Any]:
    """Shard attributes of a ``cube:L`` crystal view (none for the default ``cell``)."""
    if recipe.crystal_view == "cell":
        return {}
    return {"crystal_view": recipe.crystal_view, "crystal_view_centre": "cell"}


# ---------------------------------------------------------------------- the writing side
class _ShardSink:
    """Writes task results, in item order, into this slice's shards and counts them."""

    def __init__(
        self,
        out: Path,
        settings: Settings,
        run: str,
        command: str,
        summary: RunSummary,
        report: Callable[[int], None],
    ) -> None:
        self.out = out
        self.settings = settings
        self.run = run
        self.command = command
        self.summary = summary
        self.report = report
        self.kinds: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.timings = Counter({"read": 0.0, "parse": 0.0, "grid": 0.0, "encode": 0.0})
        self.timings["write"] = 0.0
        self.written_shards: list[int] = []
        self._writer: ShardWriter | None = None
        self._shard = -1
        self._items = 0  #: input records of the open shard (its ``n_items``)
        self.labels: LabelTable | None = None  #: properties joined by key (``labels``)
        self._elements: set[int] = set()  #: atomic numbers gridded in the open shard

    def _open(self, k: int) -> ShardWriter:
        s = self.settings
        extra = {"run_id": self.run, "first_item": k * s.shard_size, "disorder": s.read.disorder}
        if s.structures_only:
            if s.recipe.typer is not None:  # the memberships' typer and channels
                extra["typer"] = str(s.recipe.typer.name)
                extra["typer_channels"] = json.dumps(list(s.recipe.spec.names))
            return ShardWriter(self.out / shard_name(k), ShardMeta.structures(self.command, extra))
        meta = ShardMeta(
            sigma=s.recipe.sigma,
            channels=s.recipe.channel_names,
            grid_shape=s.recipe.shape,
            box=s.recipe.box,
            padding=s.recipe.padding,
            command=self.command,
            extra={
                "run_id": self.run,
                "first_item": k * s.shard_size,
                "disorder": s.read.disorder,
                **({"spacing": s.spacing} if s.spacing is not None else {}),
                **_view_attributes(s.recipe),
                **tile_attributes(s),
                "exclude": np.array([element_symbol(z) for z in s.exclude], dtype=STR_DTYPE),
                "channels_auto": s.auto_channels,
                **({"typer": s.recipe.typer.name} if s.recipe.typer is not None else {}),
            },
        )
        return ShardWriter(self.out / shard_name(k), meta, compression=s.codec)

    def _finish(self) -> None:
        w = self._writer
        if w is None:
            return
        attrs: dict[str, object] = {"n_items": self._items}
        if self.settings.recipe.energy is not None:  # parameters used (docs/format.md §6)
            attrs["energy"] = self.settings.recipe.energy.attribute(self._elements)
            self._elements = set()
        path = w.close(attrs)
        self._writer = None
        self.summary.shards_written += 1
        self.summary.bytes_written += path.stat().st_size

    def consume(self, res: TaskResult) -> None:
        t = time.thread_time()
        if self._writer is not None and res.shard != self._shard:
            self._finish()  # tasks arrive in order: that shard has all its items
        if self._writer is None:
            self._writer = self._open(res.shard)
            self._shard = res.shard
            self._items = 0
            self.written_shards.append(res.shard)
        writer = self._writer
        self._items += len(res.entries)  # one entry per item (tiles: many records)
        ids = [res.first + i for i, e in enumerate(res.entries) if isinstance(e, Gridded)]
        done = [e for e in res.entries if isinstance(e, Gridded)]
        parsed = [e for e in res.entries if isinstance(e, Parsed)]
        rejected = [e for e in res.entries if isinstance(e, Rejection)]
        if parsed:
            ss = [p.structure for p in parsed]
            z, xyz, names, sources, records, weights = _columns(ss)
            lattices = [s.lattice for s in ss]
            writer.append_structures(
                z,
                xyz,
                lattices,
                names,
                sources,
                records,
                weights,
                ids=[res.first + i for i, e in enumerate(res.entries) if isinstance(e, Parsed)],
                properties=[self._properties(s) for s in ss],
                atom_properties=[atom_properties(s) for s in ss],
            )
            self._count_notes([n for p in parsed for n in p.notes])
        if done and self.settings.tiles is not None:
            self._append_tiles(writer, ids, done)
        elif done:
            structures = [d.structure for d in done]
            if self.settings.recipe.energy is not None:
                gone = self.settings.exclude  # the energy sees the gridded atoms
                self._elements.update(
                    int(z) for d in done for z in np.unique(d.structure.numbers) if z not in gone
                )
            args = ([d.box for d in done], *_columns(structures))
            more = {
                "captured": [d.captured for d in done],  # of the kernel's grid, unrounded
                "ids": ids,
                "properties": [self._properties(s) for s in structures],
                "atom_properties": [atom_properties(s) for s in structures],
            }
            if self.settings.codec.encodes_chunks:
                chunks = [d.chunk for d in done]
                writer.append(chunks, *args, encoded=True, **more)  # type: ignore[arg-type]
            else:  # rounded in the worker already
                grids = np.stack([d.grid for d in done])  # type: ignore[arg-type]
                writer.append(grids, *args, rounded=True, **more)
        writer.add_rejections(rejected)
        limit = COARSE_VOXELS * self.settings.recipe.sigma
        gridded = [d.structure for d in done]
        for element, n in catch_all_counts(self.settings, gridded).items():
            self.summary.catch_all[element] = self.summary.catch_all.get(element, 0) + n
            self.notes[f"atoms of {element} in the catch-all channel *"] += n
        for d in done:
            if voxel_edge(d.box) > limit:
                self.summary.coarse_voxels += 1
                self.notes[COARSE_NOTE] += 1
            # a cube view of a crystal cuts cells by design: its captured is no warning
            cube_view = d.structure.lattice is not None and not d.box.periodic
            if d.captured < CAPTURE_WARNING and not cube_view:
                self.summary.low_capture += 1
            low = self.summary.min_captured
            self.summary.min_captured = d.captured if low is None else min(low, d.captured)
            self._count_notes(d.notes)
        self.kinds.update(r.kind for r in rejected)
        summary = self.summary
        summary.read += len(res.entries)
        summary.written += len(done) + len(parsed)
        summary.gridded += len(done) + len(parsed)  # structures runs: stored
        self.timings["parse"] += res.parse_s
        self.timings["grid"] += res.grid_s
        self.timings["encode"] += res.encode_s
        self.timings["write"] += time.thread_time() - t
        self.report(res.bytes_end)

    def _append_tiles(self, writer: ShardWriter, items: list[int], done: list[Gridded]) -> None:
        """The records of a tile run: one per tile, its parent's atoms repeated."""
        for item, d in zip(items, done, strict=True):
            tiles = d.tiles or []
            ids, tile_props = tile_columns(item, tiles)
            s = d.structure
            props, atoms = self._properties(s), atom_properties(s)
            args = ([t.box for t in tiles], *(c * len(tiles) for c in _columns([s])))
            more = {
                "captured": [d.captured] * len(tiles),
                "ids": ids,
                "properties": [{**props, **p} for p in tile_props],
                "atom_properties": [atoms] * len(tiles),
            }
            if self.settings.codec.encodes_chunks:
                writer.append([t.chunk for t in tiles], *args, encoded=True, **more)
            else:
                writer.append(np.stack([t.grid for t in tiles]), *args, rounded=True, **more)

    def _properties(self, s: Structure) -> dict[str, Any]:
        """The reader's properties of ``s``, and the labels table's (which win)."""
        props = properties(s)
        if self.labels is not None:
            found = self.labels.lookup(s)
            key = f"labels from {Path(self.labels.path).name}: " + (
                "joined" if found else f"no row for the record's {','.join(self.labels.key)}"
            )
            self.notes[key] += 1
            props = {**props, **found}
        return props

    def _count_notes(self, notes: list[str]) -> None:
        for n in notes:
            if n in self.notes or len(self.notes) < _MAX_NOTES:
                self.notes[n] += 1

    def close(self) -> None:
        self._finish()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


def _columns(structures: list[Any]) -> tuple[list[Any], ...]:
    """Numbers, positions, names, sources, records and weights of some structures."""
    ss = structures
    return (
        [s.numbers for s in ss],
        [s.positions for s in ss],
        [s.name for s in ss],
        [s.source for s in ss],
        [s.record for s in ss],
        [s.weights for s in ss],
    )


# ---------------------------------------------------------------------- the run
def grid_files(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: GridOptions | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    shard_index: int | None = None,
    num_shards: int | None = None,
    missing: bool = False,
    workers: int | None = None,
    threads: int | None = None,
    recursive: bool = True,
    command: str = "",
    progress: Callable[[Progress], None] | None = None,
) -> RunSummary:
    """Grid every record of ``inputs`` into shards in ``out_dir`` (``pgrid grid``).

    Parameters
    ----------
    inputs : files, directories (recursed) and glob patterns (see
        :func:`~pgrid_cli.readers.expand_inputs`)
    out_dir : output directory; must be empty or absent unless ``resume`` (continue an
        interrupted run with the same inputs and options: complete shards are verified and
        kept, the rest redone) or ``overwrite`` (replace pgrid's files in it)
    options : :class:`GridOptions`
    shard_index, num_shards : run slice I of N (shards k with k mod N = I); default from
        the Slurm array variables and the run's slicing record (``slices/slicing.json``,
        see :func:`~pgrid_cli.runs.slicing.resolve_slice`), else the whole input
    missing : run every slice of the run that is neither complete nor running, in turn
        (implies ``resume``; N from ``num_shards`` or the run's record). Another process
        may do the same: each slice is claimed by one of them
    workers : processes that parse, grid and compress (default: one per core; 0 runs
        everything in this process)
    threads : kernel threads in all (default: one per core), split between workers
    command : the command line, stored in every shard
    progress : called with a :class:`Progress` as work completes

    Returns a :class:`RunSummary`. Raises ValueError for bad options or an output
    directory that cannot be used; bad input records never raise, they are rejected.
    """
    started = time.perf_counter()
    settings = (options or GridOptions()).resolve()
    cores = available_cores()
    n_workers = cores if workers is None else int(workers)
    if n_workers < 0:
        raise ParameterError(f"{{workers}} must be 0 or more, got {n_workers}")
    n_threads = cores if threads is None else int(threads)
    if n_threads < 1:
        raise ParameterError(f"{{threads}} must be at least 1, got {n_threads}")
    files = [canonical_path(f) for f in expand_inputs(inputs, recursive=recursive)]
    formats = [detect_format(f, settings.format) for f in files]
    if (
        settings.read.conformers > 1
        and files
        and not any(conformers_of(f, settings.read) > 1 for f in formats)
    ):
        raise ParameterError(
            "{conformers} applies to SMILES inputs (.smi, .smiles or --format smiles) and, "
            "with {embed}, to SDF/mol inputs, "
            "and none of the inputs is one"
        )
    if settings.auto_channels:  # one channel per element present: a first pass over the inputs
        found = scan_elements(files, formats, settings.read)
        options = replace(options or GridOptions(), channels=auto_channels(found, settings))
        settings = replace(options.resolve(), auto_channels=True)
    if "types" in formats and not settings.recipe.parameters().get("complex"):
        options = replace(options or GridOptions(), center="ligand")  # .types lists: pairs
        settings = replace(options.resolve(), auto_channels=settings.auto_channels)
    inputs_meta = [input_meta(f, fmt) for f, fmt in zip(files, formats, strict=True)]
    params = settings.parameters()
    run = run_id(params, inputs_meta)

    out = Path(out_dir)
    size = settings.shard_size
    job = _Job(settings, files, formats, inputs_meta, n_workers, n_threads, command, progress)
    if missing:
        if overwrite:
            raise ParameterError("{missing} and {overwrite} cannot be combined")
        return _grid_missing(job, out, run, params, num_shards, started)
    array = SlurmArray.from_env()
    record = read_slicing(out, run) if out.is_dir() else None
    if overwrite and record is not None and record.get("array_job_id") != (array and array.job_id):
        record = None  # the run starts again: this process divides it anew
    index, count, new_record = resolve_slice(shard_index, num_shards, array, record)
    claim = claim_slice(
        out, run, params, inputs_meta, size, index, count, resume, overwrite, command, new_record
    )
    assert claim is not None
    return _run_slice(job, claim, run, started)


@dataclass
class _Job:
    """What every slice of one ``grid_files`` call shares."""

    settings: Settings
    files: list[Path]
    formats: list[str]
    inputs_meta: list[dict[str, Any]]
    n_workers: int
    n_threads: int
    command: str
    progress: Callable[[Progress], None] | None


def _grid_missing(
    job: _Job,
    out: Path,
    run: str,
    params: dict[str, Any],
    num_shards: int | None,
    started: float,
) -> RunSummary:
    """Run the slices of the run in ``out`` that are neither complete nor running."""
    record = read_slicing(out, run) if out.is_dir() else None
    states = [s for s in read_slice_states(out) if s.get("run_id") == run] if out.is_dir() else []
    count, new_record = missing_count(record, [int(s["num_slices"]) for s in states], num_shards)
    total = RunSummary(out, 0, count, files=len(job.files), slices_run=[])
    for i in range(count):
        claim = claim_slice(
            out, run, params, job.inputs_meta, job.settings.shard_size, i, count,
            resume=True, command=job.command, slicing=new_record, only_missing=True,
        )  # fmt: skip
        if claim is None:
            continue
        one = _run_slice(job, claim, run, time.perf_counter())
        total.add(one)
    if total.slices_run:
        total.slice_index = total.slices_run[0]
    else:  # nothing was missing: say what the run holds
        done = [s for s in read_slice_states(out) if s.get("run_id") == run and s.get("complete")]
        total.total_items = max((int(s.get("total_items") or 0) for s in done), default=0)
        total.manifest = False
    total.seconds = time.perf_counter() - started
    return total


def _run_slice(job: _Job, claim: SliceClaim, run: str, started: float) -> RunSummary:
    """Write the shards of the claimed slice; finish the claim (or fail it)."""
    settings, files, formats, inputs_meta = job.settings, job.files, job.formats, job.inputs_meta
    n_workers, n_threads, command, progress = (
        job.n_workers, job.n_threads, job.command, job.progress
    )  # fmt: skip
    out, index, count = claim.out, claim.index, claim.count
    kept = claim.kept

    summary = RunSummary(out, index, count, files=len(files), shards_kept=len(kept))
    bytes_total = sum(int(m["bytes"] or 0) for m in inputs_meta)

    def report(bytes_done: int) -> None:
        if progress is not None:
            progress(
                Progress(
                    bytes_done,
                    bytes_total,
                    summary.read,
                    summary.written,
                    summary.read - summary.written,
                    time.perf_counter() - started,
                )
            )

    sink = _ShardSink(out, settings, run, command, summary, report)
    if settings.labels is not None:
        sink.labels = read_labels(*settings.labels)
    for check in kept.values():
        # n_items: the input records (a tile run stores several records per item)
        items = int(check.attrs.get("n_items", check.n_structures + check.n_rejected))
        summary.read += items
        summary.written += items - check.n_rejected
        shard = Shard(check.path)
        sink.kinds.update(r.kind for r in shard.rejections())
        shard.close()
    per_worker = max(1, n_threads // max(1, n_workers))
    work = replace(settings, threads=per_worker if n_workers else n_threads)
    raw_bytes = settings.recipe.n_channels * int(np.prod(settings.recipe.shape)) * 4
    budget = min(_TASK_BYTES, get_memory_limit())
    task_size = int(min(64, max(1, budget // raw_bytes)))
    task_fn = run_task
    if settings.structures_only:
        task_size, task_fn = _PARSE_TASK, parse_task

    pool: Executor | None = None
    pending: deque[Future[TaskResult] | Done] = deque()
    max_pending = 2 * n_workers + 1
    total_items = 0
    try:
        preload_readers(formats)
        if n_workers:
            pool = _start_pool(n_workers)
        task: Task | None = None

        def submit(t: Task) -> None:
            if pool is None:
                pending.append(Done(task_fn(t, work)))
            else:
                pending.append(pool.submit(task_fn, t, work))
            while len(pending) > max_pending or (pending and pending[0].done()):
                sink.consume(pending.popleft().result())

        items = _numbered_items(files, formats, inputs_meta, settings.read)
        skipped = 0
        while True:
            t = time.thread_time()
            nxt = next(items, None)
            sink.timings["read"] += time.thread_time() - t
            if nxt is None:
                break
            number, item, position = nxt
            total_items = number + 1
            k = number // settings.shard_size
            if k % count != index or k in kept:
                if task is not None:
                    submit(task)
                    task = None
                skipped += 1
                if not pending and skipped % 4096 == 0:
                    report(position)
                continue
            if task is not None and (task.shard != k or len(task.items) >= task_size):
                submit(task)
                task = None
            if task is None:
                task = Task(k, [], first=number)
            task.items.append(item)
            task.bytes_end = position
        if task is not None:
            submit(task)
        while pending:
            sink.consume(pending.popleft().result())
        sink.close()
    except BaseException:
        sink.abort()
        claim.fail(summary.shards_written)  # nothing written: the directory is as it was
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown()
    report(bytes_total)

    summary.total_items = total_items
    summary.rejected = summary.read - summary.written
    summary.rejected_by_kind = dict(sink.kinds)
    summary.notes = dict(sink.notes)
    summary.timings = dict(sink.timings)
    summary.manifest = claim.finish(  # the last slice to finish writes the manifest
        total_items=total_items,
        shards=sorted([*sink.written_shards, *kept]),
        counts={
            "read": summary.read,
            "written": summary.written,
            "rejected": summary.rejected,
            "rejected_by_kind": dict(sorted(sink.kinds.items())),
            "low_capture": summary.low_capture,
            "coarse_voxels": summary.coarse_voxels,
        },
        notes=dict(sink.notes),
    )
    summary.seconds = time.perf_counter() - started
    return summary


def _start_pool(n_workers: int) -> ProcessPoolExecutor:
    # On Linux, fork: workers start at once and need not re-import the caller's main
    # module. Forking is safe as long as no other thread runs at that moment: every
    # worker is forked up front, before any progress display starts. Elsewhere, the
    # platform's default (spawn).
    context = "fork" if sys.platform.startswith("linux") else None
    pool = process_pool(n_workers, context)
    pool.submit(int).result()  # with fork, this starts all the workers now
    return pool


def _numbered_items(
    files: Sequence[Path],
    formats: Sequence[str],
    meta: Sequence[dict[str, Any]],
    read: ReadOptions,
) -> Iterator[tuple[int, RawRecord | Rejection, int]]:
    """(item number, raw record or rejection, bytes of input read) over every file; a
    record read as K conformers (``read.conformers``) is K items."""
    number = 0
    base = 0
    for f, fmt, m in zip(files, formats, meta, strict=True):
        position = base
        for item in iter_raw_records(f, fmt, conformers=conformers_of(fmt, read)):
            if isinstance(item, RawRecord):
                position = base + item.offset
            yield number, item, position
            number += 1
        base += int(m["bytes"] or 0)
