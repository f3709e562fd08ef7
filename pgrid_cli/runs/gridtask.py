"""The worker side of ``pgrid grid``: parse, check, grid, round and encode one task.

A task is a run of consecutive input records of one shard. :func:`run_task` runs in a
worker process (or in the main process with ``workers=0``) and returns what the writer
needs, in input order; nothing here touches the output directory.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ..core.box import Box
from ..core.channels import TypingError
from ..core.complexes import PARTS_KEY
from ..core.kernel import render_batch
from ..core.recipe import GridRecipe, grid_total
from ..core.structure import Structure
from ..readers import (
    CANNOT_GRID,
    CANNOT_TYPE,
    EMPTY,
    RawRecord,
    Rejection,
    parse_record,
    prepare_structure,
)
from ..readers.properties import set_properties
from ..store.layout import TYPED_MEMBERSHIPS
from .gridenergy import append_energy
from .gridtiles import TileRecord, tile_records

if TYPE_CHECKING:
    from .grid import Settings

#: The kernel names the structure of its batch in its messages; a rejection does not.
_STRUCTURE_PREFIX = re.compile(r"^structure \d+(: |, )")


@dataclass
class Gridded:
    """One structure, gridded and encoded (what a worker sends back)."""

    structure: Structure  #: its atoms and provenance
    box: Box
    chunk: tuple[bytes, int] | None  # encoded chunk, or
    grid: np.ndarray | None  # the rounded grid when h5py compresses (lzf)
    notes: list[str]
    captured: float = 1.0  #: Σ grid ÷ Σ weights, before rounding
    tiles: list[TileRecord] | None = None  #: a tile run's records of this structure


@dataclass
class Parsed:
    """One structure, parsed and checked, not gridded (``--store structures``)."""

    structure: Structure
    notes: list[str]


@dataclass
class Task:
    shard: int
    items: list[RawRecord | Rejection]
    bytes_end: int = 0
    first: int = 0  #: the item number of ``items[0]`` (ids are item numbers)


@dataclass
class TaskResult:
    shard: int
    entries: list[Gridded | Parsed | Rejection]
    bytes_end: int
    parse_s: float = 0.0
    grid_s: float = 0.0
    encode_s: float = 0.0
    first: int = 0  #: the item number of ``entries[0]`` (one entry per item)


_buffers: dict[tuple[int, ...], np.ndarray] = {}


def _buffer(shape: tuple[int, ...]) -> np.ndarray:
    """A reused float32 output array of ``shape`` (B, C, nx, ny, nz) for this process:
    allocating a fresh one per task costs a page fault per 4 KiB, more than gridding."""
    key = shape[1:]
    buf = _buffers.get(key)
    if buf is None or len(buf) < shape[0]:
        _buffers.clear()
        buf = _buffers[key] = np.empty((max(shape[0], 1), *key), dtype=np.float32)
    return buf[: shape[0]]


def run_task(task: Task, settings: Settings) -> TaskResult:
    """Parse, check, grid, round and encode the records of one task (in a worker).

    The stage timings are CPU seconds of this process (kernel threads included).
    """
    t0 = time.process_time()
    recipe = settings.recipe
    entries: list[Gridded | Rejection | None] = []
    ready: list[tuple[int, Structure, tuple[np.ndarray, Box]]] = []
    originals: dict[int, Structure] = {}  # the structures as read (excluded atoms kept)
    for item in task.items:
        s = item if isinstance(item, Rejection) else parse_record(item, settings.read)
        if isinstance(s, Rejection):
            entries.append(s)
            continue
        gridded = _without(s, settings.exclude)
        if isinstance(gridded, Rejection):
            entries.append(gridded)
            continue
        if recipe.typer is not None:  # typed with every atom, excluded ones not gridded
            gridded = s
            prepared = prepare_structure(s, recipe, settings.exclude)
        else:
            prepared = prepare_structure(gridded, recipe)
        if isinstance(prepared, Rejection):
            entries.append(prepared)
            continue
        ready.append((len(entries), gridded, prepared))
        originals[len(entries)] = s
        entries.append(None)
    t1 = time.process_time()
    result = TaskResult(task.shard, [], task.bytes_end, parse_s=t1 - t0, first=task.first)
    if ready and settings.tiles is not None:
        _tile(ready, entries, originals, settings, result)
    elif ready:
        grids, failed = _render(ready, recipe, settings.threads)
        n_density = grids.shape[1]
        if recipe.energy is not None:  # one more channel: lj:<probe> (runs/gridenergy.py)
            grids, failed = append_energy(grids, ready, recipe, settings.threads, failed)
        for idx, s, reason in failed:
            entries[idx] = Rejection(s.source, s.record, s.name, reason, CANNOT_GRID)
        t2 = time.process_time()
        codec = settings.codec
        for k, (idx, s, (_, box)) in enumerate(ready):
            if entries[idx] is not None:
                continue
            g = grids[k]
            g_sum = grid_total(g)  # before rounding: every channel (the encoder's total)
            dens_sum = g_sum if n_density == len(g) else None  # else: the density channels'
            captured = recipe.captured(g[:n_density], s, ready[k][2][0], dens_sum)
            codec.round(g)  # one structure at a time: its temporaries stay in cache
            notes = _notes(s, settings)
            entries[idx] = Gridded(
                structure=_for_writer(originals[idx]),  # the main process needs no Mol
                box=box,
                chunk=codec.encode(g, g_sum) if codec.encodes_chunks else None,
                grid=None if codec.encodes_chunks else g.astype(codec.np_dtype),
                notes=notes,
                captured=captured,
            )
        result.grid_s = t2 - t1
        result.encode_s = time.process_time() - t2
    result.entries = [e for e in entries if e is not None]
    return result


def _tile(ready, entries, originals, settings: Settings, result: TaskResult) -> None:
    """A tile run: each ready structure's tiles (runs/gridtiles.py), or its rejection."""
    t1 = time.process_time()
    for idx, s, (_, box) in ready:
        try:
            tiles, captured = tile_records(s, settings)
        except ValueError as exc:
            entries[idx] = Rejection(s.source, s.record, s.name, str(exc), CANNOT_GRID)
            continue
        entries[idx] = Gridded(
            originals[idx], box, None, None, _notes(s, settings), captured, tiles
        )
    result.grid_s = time.process_time() - t1


def _for_writer(s: Structure) -> Structure:
    """``s`` as the main process writes it: no RDKit Mol, no complex parts (their
    molecules are for typing in this worker; pickling them back would cost more)."""
    info = s.info
    if PARTS_KEY in info:
        info = {k: v for k, v in info.items() if k != PARTS_KEY}
    return replace(s, mol=None, info=info)


def _without(s: Structure, exclude: tuple[int, ...]) -> Structure | Rejection:
    """``s`` without the atoms of the ``exclude`` elements (what is gridded)."""
    if not exclude:
        return s
    keep = ~np.isin(np.asarray(s.numbers), exclude)
    if keep.all():
        return s
    if not keep.any():
        return Rejection(s.source, s.record, s.name, "every atom is of an excluded element", EMPTY)
    per_atom = s.info.get("atom_properties")
    info = s.info
    if isinstance(per_atom, dict):  # kept aligned with the atoms (complexes read them)
        info = {**s.info, "atom_properties": {k: np.asarray(v)[keep] for k, v in per_atom.items()}}
    return replace(
        s,
        numbers=np.asarray(s.numbers)[keep],
        positions=np.asarray(s.positions)[keep],
        weights=None if s.weights is None else np.asarray(s.weights)[keep],
        info=info,
        mol=None,  # its atoms are no longer the structure's
    )


def parse_task(task: Task, settings: Settings) -> TaskResult:
    """Parse and check the records of one task, no gridding (``--store structures``)."""
    t0 = time.process_time()
    entries: list[Gridded | Parsed | Rejection] = []
    typer = settings.recipe.typer
    for item in task.items:
        s = item if isinstance(item, Rejection) else parse_record(item, settings.read)
        if not isinstance(s, Rejection) and typer is not None:
            s = _typed(s, settings.recipe)
        if isinstance(s, Rejection):
            entries.append(s)
        else:
            entries.append(Parsed(_for_writer(s), _notes(s, settings)))
    parse_s = time.process_time() - t0
    return TaskResult(task.shard, entries, task.bytes_end, parse_s=parse_s, first=task.first)


def _typed(s: Structure, recipe: GridRecipe) -> Structure | Rejection:
    """``s`` with its atoms' channel memberships (M, C) as the atom property
    ``typed_memberships`` (docs/format.md, structures shards), or why it cannot be typed."""
    try:
        m = recipe.memberships(s)
    except TypingError as exc:
        return Rejection(s.source, s.record, s.name, f"cannot type: {exc}", CANNOT_TYPE)
    info = dict(s.info)
    info["atom_properties"] = dict(info.get("atom_properties") or {})  # not the reader's
    set_properties(info, atoms={TYPED_MEMBERSHIPS: m})
    return replace(s, info=info)


def _notes(s: Structure, settings: Settings) -> list[str]:
    notes = [str(n) for n in s.info.get("warnings", [])]  # type: ignore[attr-defined]
    if "disorder" in s.info:
        notes.append(f"partial occupancy handled with disorder={settings.read.disorder}")
    return notes


def _render(
    ready: list[tuple[int, Structure, tuple[np.ndarray, Box]]], recipe: GridRecipe, threads: int
) -> tuple[np.ndarray, list[tuple[int, Structure, str]]]:
    """Grids of the ready structures in one kernel call; when the kernel refuses one of
    them (a cell too small for σ, voxels too coarse, coordinates it cannot represent), each
    is gridded alone so that only the ones it refuses are lost: (grids, [(entry, structure,
    reason)])."""
    structures = [s for _, s, _ in ready]
    prepared = [p for *_, p in ready]
    batch = recipe.batch(structures, prepared)
    out = _buffer(batch.grid_shape)
    try:
        render_batch(batch, out, threads=threads)
        return out, []
    except ValueError:
        pass
    failed = []
    for k, (idx, s, p) in enumerate(ready):
        try:
            render_batch(recipe.batch([s], [p]), out[k : k + 1], threads=threads)
        except ValueError as exc:
            failed.append((idx, s, _STRUCTURE_PREFIX.sub("", str(exc))))
    return out, failed


class Done:
    """A finished 'future' for tasks run in the calling process."""

    def __init__(self, value: TaskResult) -> None:
        self._value = value

    def result(self) -> TaskResult:
        return self._value

    def done(self) -> bool:
        return True
