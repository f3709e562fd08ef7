"""Batch preprocessing: molecule and crystal files → a directory of HDF5 shards.

:func:`grid_files` is what ``pgrid grid`` runs. The input records (every record of every
input file, in :func:`~pgrid_cli.io.expand_inputs` order) form one numbered stream of
*items*; shard ``k`` holds items ``[k·S, (k+1)·S)`` for the shard size ``S`` — the
structures among them, and the rejected ones in its ``rejected`` dataset. That fixed
assignment is what makes a run deterministic, resumable and divisible:

* the main process only cuts files into records (:func:`~pgrid_cli.io.iter_raw_records`)
  and writes shards; worker processes (``workers``) parse, grid (the kernel's batch entry
  point), round and compress, and their results are written in item order, so the shards
  do not depend on the number of workers or threads;
* ``resume`` keeps every complete, valid shard and redoes the rest;
* slice ``I`` of ``N`` (``shard_index``/``num_shards``, defaulting from
  ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``) writes shards ``k ≡ I (mod N)``, so
  N jobs share one directory; when the last slice finishes (or on ``pgrid index``) the
  manifest and ``errors.jsonl`` are written by :func:`~pgrid_cli.shards.write_index`.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .box import Box, ShapeLike, normalize_shape, parse_cube_side
from .channels import ChannelSpec, UnknownElementError
from .codec import GridCodec
from .grid import Batch, render_batch
from .io import (
    OUTSIDE_BOX,
    UNKNOWN_ELEMENT,
    RawRecord,
    Rejection,
    Structure,
    check_disorder,
    detect_format,
    expand_inputs,
    iter_raw_records,
    parse_record,
)
from .shards import (
    ERRORS,
    MANIFEST,
    PARTIAL_SUFFIX,
    SLICE_FORMAT,
    SLICES_DIR,
    VDS_NAME,
    Shard,
    ShardCheck,
    ShardMeta,
    ShardWriter,
    read_slice_states,
    shard_index,
    shard_name,
    slice_state_path,
    verify_shard,
    write_index,
    write_json,
)

#: Shards aim at about this many bytes on disk when ``shard_size`` is not given.
TARGET_SHARD_BYTES = 250e6
#: Assumed compression of rounded, gzip'd grids when choosing the default shard size
#: (drug-like molecules at 32³ with element channels compress about 35×).
_ASSUMED_RATIO = {"gzip": 35.0, "lzf": 8.0, "none": 1.0}
#: Atoms farther than this many σ outside a fixed cube reject the structure.
OUTSIDE_SIGMAS = 3.0
#: Grids per worker task: about this many bytes of raw float32 (bounded to 1..64).
_TASK_BYTES = 32 << 20
_MAX_NOTES = 50


# ---------------------------------------------------------------------- options
@dataclass(frozen=True)
class GridOptions:
    """What to grid and how to store it (the parameters of a run).

    Attributes
    ----------
    grid_size : int or (nx, ny, nz) voxels
    sigma : Gaussian standard deviation, Å
    channels : ``single``, ``elements`` or a list like ``C,H,N,O,*``
    box : molecule box, ``fit``, ``tight`` or ``cube:L`` (L in Å); crystals use their cell
    padding : Å, for ``fit`` and ``tight``
    dtype : ``float32`` or ``float16`` storage
    compression : ``gzip`` (``gzip:1``…``gzip:9``), ``lzf`` or ``none``
    lossless : store the kernel's float32 values unrounded (see :mod:`pgrid_cli.codec`)
    disorder : CIF partial occupancy policy, ``error``, ``majority`` or ``weight``
    format : force an input format (``xyz``, ``sdf``, ``cif``) instead of the extension
    shard_size : input records per shard (default: see :func:`default_shard_size`)
    """

    grid_size: ShapeLike = 32
    sigma: float = 0.5
    channels: str = "elements"
    box: str = "fit"
    padding: float = 2.0
    dtype: str = "float32"
    compression: str = "gzip"
    lossless: bool = False
    disorder: str = "error"
    format: str | None = None
    shard_size: int | None = None

    def resolve(self) -> Settings:
        """Validate every option (ValueError with a specific message) → :class:`Settings`."""
        shape = normalize_shape(self.grid_size)
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a positive width in Å, got {self.sigma}")
        spec = ChannelSpec.parse(self.channels)
        box = self.box.strip().lower()
        if box.startswith("cube:"):
            box = f"cube:{parse_cube_side(box):g}"
        elif box not in ("fit", "tight"):
            raise ValueError(f"unknown box {self.box!r}: use fit, tight or cube:L (L in Å)")
        if not (math.isfinite(self.padding) and self.padding >= 0):
            raise ValueError(f"padding must be a non-negative length in Å, got {self.padding}")
        codec = GridCodec.parse(self.compression, self.dtype, self.lossless)
        check_disorder(self.disorder)
        fmt = detect_format("", self.format) if self.format is not None else None
        if self.shard_size is not None and int(self.shard_size) < 1:
            raise ValueError(f"shard size must be at least 1, got {self.shard_size}")
        size = (
            int(self.shard_size)
            if self.shard_size is not None
            else default_shard_size(shape, spec.n_channels, codec)
        )
        return Settings(
            shape=shape,
            sigma=float(self.sigma),
            channels=spec.names,
            box=box,
            padding=float(self.padding),
            codec=codec,
            disorder=self.disorder,
            format=fmt,
            shard_size=size,
        )


@dataclass(frozen=True)
class Settings:
    """Validated run parameters (from :meth:`GridOptions.resolve`); picklable."""

    shape: tuple[int, int, int]
    sigma: float
    channels: tuple[str, ...]
    box: str
    padding: float
    codec: GridCodec
    disorder: str
    format: str | None
    shard_size: int
    threads: int = 1  #: kernel threads in the process that grids

    def parameters(self) -> dict[str, Any]:
        """The parameters that determine shard contents (JSON-friendly)."""
        c = self.codec
        return {
            "grid_shape": list(self.shape),
            "sigma": self.sigma,
            "channels": list(self.channels),
            "box": self.box,
            "padding": self.padding,
            "dtype": c.dtype,
            "compression": c.compression,
            "compression_level": c.level if c.compression == "gzip" else 0,
            "rounding_step": c.step,
            "disorder": self.disorder,
            "format": self.format,
            "shard_size": self.shard_size,
        }


def default_shard_size(shape: ShapeLike, n_channels: int, codec: GridCodec) -> int:
    """Records per shard so that a shard is about :data:`TARGET_SHARD_BYTES` on disk.

    Assumes typical compression for the codec and rounds down to 1, 2 or 5 × 10ⁿ.
    """
    raw = n_channels * int(np.prod(normalize_shape(shape))) * codec.np_dtype.itemsize
    ratio = (
        _ASSUMED_RATIO[codec.compression]
        if codec.step
        else min(_ASSUMED_RATIO[codec.compression], 10.0)
    )
    n = max(1.0, TARGET_SHARD_BYTES / (raw / ratio))
    exp = 10 ** math.floor(math.log10(n))
    for m in (5, 2, 1):
        if n >= m * exp:
            return int(min(m * exp, 100_000))
    return 1


def slice_from_env(
    shard_index: int | None = None,
    num_shards: int | None = None,
    environ: dict[str, str] | None = None,
) -> tuple[int, int]:
    """(I, N): the slice of the input this process runs.

    Explicit values win; otherwise ``SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN`` and
    ``SLURM_ARRAY_TASK_COUNT`` when set (a Slurm array job), else (0, 1).
    """
    env = os.environ if environ is None else environ
    if num_shards is None and env.get("SLURM_ARRAY_TASK_COUNT"):
        num_shards = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    if shard_index is None and env.get("SLURM_ARRAY_TASK_ID") and num_shards is not None:
        shard_index = _env_int(env, "SLURM_ARRAY_TASK_ID") - _env_int(
            env, "SLURM_ARRAY_TASK_MIN", 0
        )
    n = 1 if num_shards is None else int(num_shards)
    i = 0 if shard_index is None else int(shard_index)
    if n < 1:
        raise ValueError(f"--num-shards must be at least 1, got {n}")
    if not 0 <= i < n:
        raise ValueError(f"--shard-index must be in 0..{n - 1} for --num-shards {n}, got {i}")
    return i, n


def _env_int(env: Any, key: str, default: int | None = None) -> int:
    value = env.get(key)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"{key} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key}={value!r} is not an integer") from None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------- results
@dataclass
class Progress:
    """Where a run is: reported to the ``progress`` callback of :func:`grid_files`."""

    bytes_done: int
    bytes_total: int
    items: int  #: input records of this slice handled so far
    written: int
    rejected: int
    elapsed: float  #: seconds


@dataclass
class RunSummary:
    """What a run did. Counts are for this slice (all of the input when unsliced)."""

    out_dir: Path
    slice_index: int
    num_slices: int
    read: int = 0  #: input records handled by this slice (kept shards included)
    written: int = 0  #: structures in this slice's shards
    rejected: int = 0
    rejected_by_kind: dict[str, int] = field(default_factory=dict)
    total_items: int = 0  #: input records of the whole input (every slice)
    shards_written: int = 0
    shards_kept: int = 0  #: complete shards of an earlier run, kept by ``resume``
    bytes_written: int = 0  #: size of the shards written by this run
    gridded: int = 0  #: structures gridded by this run (not counting kept shards)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    manifest: bool = False  #: True when manifest.json and errors.jsonl were written
    files: int = 0

    @property
    def structures_per_s(self) -> float:
        return self.gridded / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_per_structure(self) -> float:
        return self.bytes_written / self.gridded if self.gridded else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "slice": [self.slice_index, self.num_slices],
            "files": self.files,
            "read": self.read,
            "written": self.written,
            "rejected": self.rejected,
            "rejected_by_kind": dict(sorted(self.rejected_by_kind.items())),
            "total_items": self.total_items,
            "shards_written": self.shards_written,
            "shards_kept": self.shards_kept,
            "bytes_written": self.bytes_written,
            "bytes_per_structure": round(self.bytes_per_structure, 1),
            "gridded": self.gridded,
            "seconds": round(self.seconds, 3),
            "structures_per_s": round(self.structures_per_s, 1),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "notes": self.notes,
            "manifest": self.manifest,
        }


# ---------------------------------------------------------------------- worker side
@dataclass
class _Gridded:
    """One structure, gridded and encoded (what a worker sends back)."""

    name: str
    source: str
    record: int
    box: Box
    numbers: np.ndarray
    positions: np.ndarray
    weights: np.ndarray | None
    chunk: tuple[bytes, int] | None  # encoded chunk, or
    grid: np.ndarray | None  # the rounded grid when h5py compresses (lzf)
    notes: list[str]


@dataclass
class _Task:
    shard: int
    items: list[RawRecord | Rejection]
    bytes_end: int = 0


@dataclass
class _TaskResult:
    shard: int
    entries: list[_Gridded | Rejection]
    bytes_end: int
    parse_s: float = 0.0
    grid_s: float = 0.0
    encode_s: float = 0.0


@lru_cache(maxsize=8)
def _channel_spec(names: tuple[str, ...]) -> ChannelSpec:
    return ChannelSpec(list(names))


def prepare_structure(s: Structure, settings: Settings) -> tuple[np.ndarray, Box] | Rejection:
    """(channel of each atom, box) of a parsed structure, or why it cannot be gridded."""
    spec = _channel_spec(settings.channels)
    try:
        chans = spec.assign(s.numbers)
    except UnknownElementError as exc:
        return Rejection(s.source, s.record, s.name, str(exc), UNKNOWN_ELEMENT)
    try:
        box = s.box(settings.box, settings.shape, settings.padding)
    except ValueError as exc:
        return Rejection(s.source, s.record, s.name, f"no {settings.box} box: {exc}", OUTSIDE_BOX)
    if not s.periodic and settings.box.startswith("cube:"):
        lo = box.origin
        hi = box.origin + np.diag(box.axes)
        outside = np.maximum(lo - s.positions, s.positions - hi).max(axis=1)
        limit = OUTSIDE_SIGMAS * settings.sigma
        far = outside > limit
        if np.any(far):
            return Rejection(
                s.source,
                s.record,
                s.name,
                f"{int(far.sum())} atom(s) lie more than {OUTSIDE_SIGMAS:g}σ = {limit:.2f} Å "
                f"outside the {parse_cube_side(settings.box):g} Å cube (up to "
                f"{float(outside.max()):.2f} Å); use a larger cube or --box fit",
                OUTSIDE_BOX,
            )
    return chans, box


def run_task(task: _Task, settings: Settings) -> _TaskResult:
    """Parse, check, grid, round and encode the records of one task (in a worker)."""
    t0 = time.perf_counter()
    entries: list[_Gridded | Rejection | None] = []
    ready: list[tuple[int, Structure, np.ndarray, Box]] = []
    for item in task.items:
        s = item if isinstance(item, Rejection) else parse_record(item, disorder=settings.disorder)
        if isinstance(s, Rejection):
            entries.append(s)
            continue
        prepared = prepare_structure(s, settings)
        if isinstance(prepared, Rejection):
            entries.append(prepared)
            continue
        ready.append((len(entries), s, *prepared))
        entries.append(None)
    t1 = time.perf_counter()
    result = _TaskResult(task.shard, [], task.bytes_end, parse_s=t1 - t0)
    if ready:
        spec = _channel_spec(settings.channels)
        weighted = any(s.weights is not None for _, s, _, _ in ready)
        batch = Batch.from_structures(
            [s.positions for _, s, _, _ in ready],
            [b for *_, b in ready],
            settings.sigma,
            channels=[c for _, _, c, _ in ready],
            n_channels=spec.n_channels,
            weights=[
                s.weights if s.weights is not None else np.ones(len(s)) for _, s, _, _ in ready
            ]
            if weighted
            else None,
        )
        grids = render_batch(batch, threads=settings.threads)
        t2 = time.perf_counter()
        codec = settings.codec
        for (idx, s, _, box), g in zip(ready, grids, strict=True):
            codec.round(g)  # one structure at a time: its temporaries stay in cache
            notes = [str(n) for n in s.info.get("warnings", [])]  # type: ignore[attr-defined]
            if "disorder" in s.info:
                notes.append(f"partial occupancy handled with --disorder {settings.disorder}")
            entries[idx] = _Gridded(
                name=s.name,
                source=s.source,
                record=s.record,
                box=box,
                numbers=np.asarray(s.numbers, dtype=np.int16),
                positions=s.positions,
                weights=s.weights,
                chunk=codec.encode(g) if codec.encodes_chunks else None,
                grid=None if codec.encodes_chunks else g.astype(codec.np_dtype),
                notes=notes,
            )
        result.grid_s = t2 - t1
        result.encode_s = time.perf_counter() - t2
    result.entries = [e for e in entries if e is not None]
    return result


class _Done:
    """A finished 'future' for tasks run in the calling process."""

    def __init__(self, value: _TaskResult) -> None:
        self._value = value

    def result(self) -> _TaskResult:
        return self._value

    def done(self) -> bool:
        return True


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
        :func:`~pgrid_cli.io.expand_inputs`)
    out_dir : output directory; must be empty or absent unless ``resume`` (continue an
        interrupted run with the same inputs and options: complete shards are verified and
        kept, the rest redone) or ``overwrite`` (replace pgrid's files in it)
    options : :class:`GridOptions`
    shard_index, num_shards : run slice I of N (shards k with k mod N = I); default from
        the Slurm array variables, else the whole input
    workers : processes that parse, grid and compress (default: one per core; 0 runs
        everything in this process)
    threads : kernel threads in all (default: one per core), split between workers
    command : the command line, stored in every shard
    progress : called with a :class:`Progress` as work completes

    Returns a :class:`RunSummary`. Raises ValueError for bad options or an output
    directory that cannot be used; bad input records never raise, they are rejected.
    """
    started = time.perf_counter()
    opts = options or GridOptions()
    settings = opts.resolve()
    index, count = slice_from_env(shard_index, num_shards)
    cores = available_cores()
    n_workers = cores if workers is None else int(workers)
    if n_workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {n_workers}")
    n_threads = cores if threads is None else int(threads)
    if n_threads < 1:
        raise ValueError(f"--threads must be at least 1, got {n_threads}")
    files = expand_inputs(inputs, recursive=recursive)
    formats = [detect_format(f, settings.format) for f in files]
    inputs_meta = [_input_meta(f, fmt) for f, fmt in zip(files, formats, strict=True)]
    params = settings.parameters()
    run_id = _run_id(params, inputs_meta)

    out = Path(out_dir)
    kept = _prepare_output(
        out, run_id, params, settings.shard_size, index, count, resume, overwrite
    )
    state_path = slice_state_path(out, index, count)
    state: dict[str, Any] = {
        "format": SLICE_FORMAT,
        "run_id": run_id,
        "slice_index": index,
        "num_slices": count,
        "parameters": params,
        "inputs": inputs_meta,
        "shard_size": settings.shard_size,
        "command": command,
        "pgrid_version": __version__,
        "complete": False,
        "total_items": None,
    }
    state_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(state_path, state)

    summary = RunSummary(out, index, count, files=len(files), shards_kept=len(kept))
    kinds: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    for check in kept.values():
        summary.read += check.n_structures + check.n_rejected
        summary.written += check.n_structures
        for r in Shard(check.path).rejections():
            kinds[r.kind] += 1
    per_worker = max(1, n_threads // max(1, n_workers))
    work = Settings(**{**settings.__dict__, "threads": per_worker if n_workers else n_threads})
    raw_bytes = len(settings.channels) * int(np.prod(settings.shape)) * 4
    task_size = int(min(64, max(1, _TASK_BYTES // raw_bytes)))
    bytes_total = sum(int(m["bytes"] or 0) for m in inputs_meta)
    timings = Counter({"read": 0.0, "parse": 0.0, "grid": 0.0, "encode": 0.0, "write": 0.0})

    writer: ShardWriter | None = None
    writer_shard = -1
    mine: list[int] = []

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

    def open_writer(k: int) -> ShardWriter:
        meta = ShardMeta(
            sigma=settings.sigma,
            channels=settings.channels,
            grid_shape=settings.shape,
            box=settings.box,
            padding=settings.padding,
            command=command,
            extra={
                "run_id": run_id,
                "first_item": k * settings.shard_size,
                "disorder": settings.disorder,
            },
        )
        return ShardWriter(out / shard_name(k), meta, compression=settings.codec)

    def finish(w: ShardWriter) -> None:
        path = w.close({"n_items": len(w) + w.n_rejected})
        summary.shards_written += 1
        summary.bytes_written += path.stat().st_size

    def consume(res: _TaskResult) -> None:
        nonlocal writer, writer_shard
        t = time.perf_counter()
        if writer is not None and res.shard != writer_shard:
            finish(writer)  # tasks arrive in order: that shard has all its items
            writer = None
        if writer is None:
            writer = open_writer(res.shard)
            writer_shard = res.shard
            mine.append(res.shard)
        done = [e for e in res.entries if isinstance(e, _Gridded)]
        rejected = [e for e in res.entries if isinstance(e, Rejection)]
        if done:
            args = (
                [d.box for d in done],
                [d.numbers for d in done],
                [d.positions for d in done],
                [d.name for d in done],
                [d.source for d in done],
                [d.record for d in done],
                [d.weights for d in done],
            )
            if settings.codec.encodes_chunks:
                writer.append([d.chunk for d in done], *args, encoded=True)  # type: ignore[arg-type]
            else:
                writer.append(np.stack([d.grid for d in done]), *args)  # type: ignore[arg-type]
        writer.add_rejections(rejected)
        for d in done:
            for n in d.notes:
                if n in notes or len(notes) < _MAX_NOTES:
                    notes[n] += 1
        kinds.update(r.kind for r in rejected)
        summary.read += len(res.entries)
        summary.written += len(done)
        summary.gridded += len(done)
        timings["parse"] += res.parse_s
        timings["grid"] += res.grid_s
        timings["encode"] += res.encode_s
        timings["write"] += time.perf_counter() - t
        report(res.bytes_end)

    pool: Executor | None = None
    pending: deque[Future[_TaskResult] | _Done] = deque()
    max_pending = 2 * n_workers + 1
    total_items = 0
    try:
        if n_workers:
            pool = _start_pool(n_workers)
        task: _Task | None = None

        def submit(t: _Task) -> None:
            if pool is None:
                pending.append(_Done(run_task(t, work)))
            else:
                pending.append(pool.submit(run_task, t, work))
            while len(pending) > max_pending or (pending and pending[0].done()):
                consume(pending.popleft().result())

        items = _numbered_items(files, formats, inputs_meta)
        skipped = 0
        while True:
            t = time.perf_counter()
            nxt = next(items, None)
            timings["read"] += time.perf_counter() - t
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
                task = _Task(k, [])
            task.items.append(item)
            task.bytes_end = position
        if task is not None:
            submit(task)
        while pending:
            consume(pending.popleft().result())
        if writer is not None:
            finish(writer)
            writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
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
    summary.rejected_by_kind = dict(kinds)
    summary.notes = dict(notes)
    summary.timings = dict(timings)
    state.update(
        complete=True,
        total_items=total_items,
        shards=sorted([*mine, *kept]),
        counts={
            "read": summary.read,
            "written": summary.written,
            "rejected": summary.rejected,
            "rejected_by_kind": dict(sorted(kinds.items())),
        },
        notes=dict(notes),
    )
    write_json(state_path, state)
    states = read_slice_states(out)
    done = {
        int(s["slice_index"])
        for s in states
        if s["run_id"] == run_id and s["complete"] and int(s["num_slices"]) == count
    }
    if len(done) == count:  # the last slice to finish writes the manifest
        write_index(out)
        summary.manifest = True
    summary.seconds = time.perf_counter() - started
    return summary


def _mp_context() -> Any:
    # On Linux, fork: workers start at once and need not re-import the caller's main
    # module. The kernel starts its threads per call, so forking is safe as long as no
    # other thread runs at that moment: _start_pool() forks every worker up front, before
    # any progress display starts. Elsewhere, the platform's default (spawn).
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _start_pool(n_workers: int) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(n_workers, mp_context=_mp_context())
    pool.submit(int).result()  # with fork, this starts all the workers now
    return pool


def _numbered_items(
    files: Sequence[Path], formats: Sequence[str], meta: Sequence[dict[str, Any]]
) -> Iterator[tuple[int, RawRecord | Rejection, int]]:
    """(item number, raw record or rejection, bytes of input read) over every file."""
    number = 0
    base = 0
    for f, fmt, m in zip(files, formats, meta, strict=True):
        position = base
        for item in iter_raw_records(f, fmt):
            if isinstance(item, RawRecord):
                position = base + item.offset
            yield number, item, position
            number += 1
        base += int(m["bytes"] or 0)


def _input_meta(path: Path, fmt: str) -> dict[str, Any]:
    try:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime = None, None
    return {"path": str(path), "format": fmt, "bytes": size, "mtime_ns": mtime}


def _run_id(params: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    """Fingerprint of a run: its parameters and its inputs (absolute path, size, mtime)."""
    key = {
        "parameters": params,
        "inputs": [
            [os.path.abspath(m["path"]), m["format"], m["bytes"], m["mtime_ns"]] for m in inputs
        ],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _prepare_output(
    out: Path,
    run_id: str,
    params: dict[str, Any],
    shard_size: int,
    index: int,
    count: int,
    resume: bool,
    overwrite: bool,
) -> dict[int, ShardCheck]:
    """Make ``out`` ready for slice ``index`` of ``count``; returns the shards to keep."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite cannot be combined")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(out.iterdir())
    shards: dict[int, Path] = {}
    partials: dict[int, Path] = {}
    foreign: list[Path] = []
    for p in entries:
        k = shard_index(p)
        if k is not None:
            shards[k] = p
        elif (
            p.name.endswith(PARTIAL_SUFFIX)
            and shard_index(p.name[: -len(PARTIAL_SUFFIX)]) is not None
        ):
            partials[int(shard_index(p.name[: -len(PARTIAL_SUFFIX)]) or 0)] = p
        elif p.name not in (MANIFEST, ERRORS, SLICES_DIR, VDS_NAME) and not p.name.endswith(".tmp"):
            foreign.append(p)
    states = read_slice_states(out)
    other_states = [s for s in states if s.get("run_id") != run_id]
    # Other slices' shards left by a different run (only a sliced run can meet them).
    stale_other = {
        k: p
        for k, p in shards.items()
        if count > 1 and k % count != index and _shard_run_id(p) != run_id
    }
    mine = {k: p for k, p in shards.items() if k % count == index}
    my_partials = [p for k, p in partials.items() if k % count == index]
    state_path = slice_state_path(out, index, count)
    run_files = [out / MANIFEST, out / ERRORS, out / VDS_NAME]

    if overwrite:
        doomed = [*mine.values(), *my_partials, *run_files, state_path]
        doomed += [Path(s["_path"]) for s in other_states] + list(stale_other.values())
        if count == 1:
            doomed += [*shards.values(), *partials.values()]
            doomed += [Path(s["_path"]) for s in states]
        for p in doomed:
            p.unlink(missing_ok=True)
        return {}
    if other_states or stale_other:
        raise ValueError(_different_run(out, params, other_states))
    if resume:
        for p in my_partials:
            p.unlink(missing_ok=True)
        kept: dict[int, ShardCheck] = {}
        for k, p in sorted(mine.items()):
            check = verify_shard(p, expect={"run_id": run_id, "first_item": k * shard_size})
            if check.ok:
                kept[k] = check
            else:
                p.unlink()
        return kept
    if count == 1:
        if entries:
            raise ValueError(
                f"output directory {out} is not empty ({len(entries)} entries); use --resume "
                f"to continue the run there or --overwrite to replace it"
            )
        return {}
    if foreign:
        raise ValueError(
            f"output directory {out} holds files pgrid did not write (e.g. {foreign[0].name}); "
            f"use an empty directory"
        )
    if mine or my_partials or state_path.exists():
        raise ValueError(
            f"slice {index} of {count} has already run in {out}; use --resume to continue it "
            f"or --overwrite to redo it"
        )
    return {}


def _shard_run_id(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("run_id")
    except OSError:
        return None
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def _different_run(out: Path, params: dict[str, Any], states: list[dict[str, Any]]) -> str:
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
        f"output directory {out} holds a different run ({what}); use --overwrite to replace "
        f"it or choose another directory"
    )
