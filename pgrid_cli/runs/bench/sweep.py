"""Benchmark: how fast pgrid grids on this machine, and whether the fast paths are right.

:func:`run_sweep` (what ``pgrid bench`` runs) grids real structures for every combination
of grid size × σ × channel set × thread count, with every implementation side by side:
the native kernel on each instruction-set path the CPU has (``avx512``, ``avx2``,
``scalar``, forced through :func:`~pgrid_cli.render_batch`'s ``isa``) and the float64
NumPy reference (:func:`~pgrid_cli.reference.reference_grid`).

What one *cell* (implementation, threads, grid size n, σ, channels) measures
---------------------------------------------------------------------------
* The structures are gridded in batches into one preallocated (B, C, n, n, n) float32
  buffer of at most ``batch_mb`` MiB (as a data loader or ``pgrid grid`` would do); one
  *run* grids every structure once. After one warm-up run, ``repeat`` runs are timed
  in-process with :func:`time.perf_counter`: the cell reports the median and the min–max.
* ``structures_per_s`` (molecules/s), ``ns_per_voxel`` = run time / (structures · C · n³).
* ``nonzero_fraction``: the fraction of output voxels that are not exactly 0 (counted
  on the warm-up run).
* ``floor_ratio``: run time / the time to zero the very same buffers with the kernel's
  threaded memset (:func:`memory_floor`, same thread count): the memory-bound floor, 1.0
  being as fast as writing the output can be.
* ``speedup_vs_scalar`` (same threads), ``speedup_vs_numpy`` and ``speedup_vs_1_thread``
  (same implementation): ratios of median times per structure measured in the same run.

The NumPy reference is timed on a subset of the structures spread evenly over the input:
a first pass grids them one by one, in :func:`spread_order`, until it has spent one run's
share of ``numpy_budget`` (budget / repeat); then that subset gets a warm-up run and
``repeat`` timed runs, so the timed runs take about ``numpy_budget`` seconds. Where one
structure alone would exceed that share, or the time scaled from the largest grid measured
so far would, the cell is skipped and :attr:`BenchResult.skipped` says why. The whole sweep
holds NumPy's BLAS to one thread (threadpoolctl): OpenBLAS threads otherwise keep spinning
on the cores after each call and halve the kernel's two-thread rates measured after them.
NumPy cells are therefore single-threaded (``threads = 1``).

Verification before timing
--------------------------
For every grid size × σ × channels, a few structures (``verify``, evenly spread) are
gridded by every native implementation at every thread count and compared with the
float64 reference: docs/format.md allows 1e-6 absolute for orthogonal boxes and 1e-4 · max for
triclinic cells. Any larger error raises :class:`VerificationError` before anything is
timed: a fast wrong answer is not a result. The NumPy implementation *is* the reference.

``end_to_end`` also times ``pgrid grid``'s whole pipeline (:func:`run_end_to_end`):
file → shards, with its CPU time split into parse / grid / compress / write.

Results are a :class:`BenchResult` (JSON: :meth:`BenchResult.to_json`, schema
``pgrid-bench`` version 1; CSV: :meth:`BenchResult.write_csv`; figure: :func:`plot_result`).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ...core.kernel import Batch, render_batch
from ...core.recipe import GridRecipe
from ...core.reference import reference_structure
from ...core.structure import Structure
from ...readers import Rejection, expand_inputs, iter_records, prepare_structure
from .config import (
    END_TO_END_SIGMA,
    NUMPY,
    ORTHOGONAL_TOLERANCE,
    TRICLINIC_TOLERANCE,
    BenchConfig,
    ProgressFn,
    Render,
    VerificationError,
)
from .endtoend import end_to_end_runs
from .machine import machine_header, memory_floor, time_runs
from .results import BenchResult, Cell, Check, PerCall, Skip


# ---------------------------------------------------------------------- input
def load_structures(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    channels: Sequence[str] = ("single",),
    box: str = "fit",
    padding: float = 2.0,
    format: str | None = None,
    limit: int | None = None,
) -> tuple[list[Structure], list[Rejection]]:
    """Read structures as ``pgrid grid`` does; those it cannot bench are rejections.

    A record is rejected when the reader rejects it, when one of ``channels`` has no
    channel for one of its elements, or when no ``box`` can be built around it. Reading
    stops after ``limit`` structures.
    """
    recipes = [GridRecipe(2, 1.0, c, box, padding) for c in channels]
    kept: list[Structure] = []
    rejected: list[Rejection] = []
    for path in expand_inputs(inputs):
        for item in iter_records(path, format):
            why = item if isinstance(item, Rejection) else _unbenchable(item, recipes)
            if why is not None:
                rejected.append(why)
                continue
            kept.append(item)  # type: ignore[arg-type]
            if limit is not None and len(kept) >= limit:
                return kept, rejected
    return kept, rejected


def _unbenchable(s: Structure, recipes: Sequence[GridRecipe]) -> Rejection | None:
    for recipe in recipes:
        prepared = prepare_structure(s, recipe)
        if isinstance(prepared, Rejection):
            return prepared
    return None


class Prepared:
    """Structures ready to grid with one recipe (its grid size and channels): their boxes
    (built once, Å) and per-atom channels; :meth:`batch` makes kernel batches at any σ."""

    def __init__(self, structures: Sequence[Structure], recipe: GridRecipe) -> None:
        self.structures = structures
        self.recipe = recipe
        self.prepared = [recipe.prepare(s) for s in structures]

    def batch(self, index: Sequence[int] | slice, sigma: float) -> Batch:
        """The structures ``index`` (indices or a slice) at width ``sigma`` (Å)."""
        idx = range(len(self.structures))[index] if isinstance(index, slice) else index
        recipe = replace(self.recipe, sigma=sigma)
        return recipe.batch([self.structures[i] for i in idx], [self.prepared[i] for i in idx])


def spread_order(n: int) -> Iterator[int]:
    """Every index of ``range(n)`` once, in an order whose every prefix is spread evenly
    over the range (the van der Corput sequence): a sample that can stop at any point."""
    seen: set[int] = set()
    i = 0
    while len(seen) < n:
        x, f, k = 0.0, 0.5, i
        while k:
            x += f * (k & 1)
            k >>= 1
            f /= 2
        j = int(x * n)
        if j not in seen:
            seen.add(j)
            yield j
        i += 1


def spread(n: int, k: int) -> list[int]:
    """``k`` indices evenly spread over ``range(n)`` (all of them when k ≥ n)."""
    if k >= n:
        return list(range(n))
    return sorted({round(x) for x in np.linspace(0, n - 1, k)})


# ---------------------------------------------------------------------- implementations
def native(isa: str) -> Render:
    """The kernel forced onto one instruction-set path."""

    def run(batch: Batch, out: np.ndarray, threads: int | None) -> None:
        render_batch(batch, out, threads=threads, isa=isa)  # looked up at call time

    return run


def numpy_render(batch: Batch, out: np.ndarray, _threads: int | None = None) -> None:
    """The NumPy implementation: the float64 reference, stored as float32 (one thread:
    the ``Render`` signature's thread count does not apply)."""
    for s in range(batch.n_structures):
        out[s] = reference_structure(batch, s)


def implementation(name: str) -> Render:
    return numpy_render if name == NUMPY else native(name)


def verify(
    name: str,
    render: Render,
    batch: Batch,
    references: Sequence[np.ndarray],
    threads: int,
    labels: Sequence[str],
    windows: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
) -> tuple[float, float]:
    """Grid ``batch`` with ``render`` and compare with ``references`` (docs/format.md §3),
    each the whole grid or the window (start, size) given for it.

    Returns (max absolute error, worst error / tolerance); raises
    :class:`VerificationError` when any structure is off by more than its tolerance.
    """
    out = np.empty(batch.grid_shape, dtype=np.float32)
    render(batch, out, threads)
    worst_err, worst_ratio = 0.0, 0.0
    for s, ref in enumerate(references):
        got = out[s]
        if windows is not None and windows[s] is not None:
            lo, size = windows[s]
            got = got[(slice(None), *(slice(a, a + b) for a, b in zip(lo, size, strict=True)))]
        err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
        if batch.box(s).is_orthogonal:
            tol, what = ORTHOGONAL_TOLERANCE, f"{ORTHOGONAL_TOLERANCE:g} absolute"
        else:
            peak = float(np.max(ref)) if ref.size else 0.0
            tol = TRICLINIC_TOLERANCE * peak
            what = f"{TRICLINIC_TOLERANCE:g} × max = {tol:.2g}"
        ratio = err / tol if tol > 0 else (0.0 if err == 0 else math.inf)
        if not ratio <= 1.0:  # also catches NaN
            raise VerificationError(
                f"{name} ({threads} thread{'s' if threads != 1 else ''}) disagrees with the "
                f"float64 reference for {labels[s]} at {batch.shape[0]}³, σ = "
                f"{float(batch.sigmas[0]):g} Å, {batch.n_channels} channel(s): max |error| "
                f"{err:.3g} > tolerance {what} (docs/format.md §3); a fast wrong answer is not a "
                f"result, so nothing was timed"
            )
        worst_err, worst_ratio = max(worst_err, err), max(worst_ratio, ratio)
    return worst_err, worst_ratio


#: Calls timed for the fixed cost of one call (an 8³ grid of the smallest structure).
FIXED_COST_CALLS = 200


def per_call_runs(
    cfg: BenchConfig, structures: Sequence[Structure], result: BenchResult
) -> list[PerCall]:
    """One call per structure (:meth:`GridRecipe.grid`, a fresh array, default threads)
    for every grid size and channel set at the σ closest to ``pgrid grid``'s default,
    beside the best native batch cell at the most threads, and the fixed cost of a call."""
    natives = [n for n in cfg.implementations if n != NUMPY]
    if not natives:
        return []
    sigma = min(cfg.sigmas, key=lambda s: (abs(s - END_TO_END_SIGMA), s))
    small = min(structures, key=len)
    rows = []
    for ch in cfg.channels:
        tiny = GridRecipe(8, sigma, ch, cfg.box, cfg.padding)

        def fixed_calls(r: GridRecipe = tiny) -> None:
            for _ in range(FIXED_COST_CALLS):
                r.grid(small.positions, small.numbers, lattice=small.lattice, weights=small.weights)

        fixed = time_runs(fixed_calls, repeat=cfg.repeat)
        for n in cfg.grid_sizes:
            recipe = GridRecipe(n, sigma, ch, cfg.box, cfg.padding)

            def calls(r: GridRecipe = recipe) -> None:
                for st in structures:
                    r.grid(st.positions, st.numbers, lattice=st.lattice, weights=st.weights)

            batch = [
                c.seconds_per_structure
                for c in result.cells
                if c.implementation in natives
                and (c.grid_size, c.sigma, c.channels) == (n, sigma, ch)
                and c.threads == max(cfg.threads)
            ]
            rows.append(
                PerCall(
                    grid_size=n,
                    sigma=sigma,
                    channels=ch,
                    structures=len(structures),
                    times=time_runs(calls, cfg.repeat),
                    fixed_cost_us=statistics.median(fixed) / FIXED_COST_CALLS * 1e6,
                    batch_s_per_structure=min(batch) if batch else None,
                )
            )
    return rows


def _window(batch: Batch, s: int, size: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """A window of at most ``size`` voxels per axis around structure ``s``'s first atom
    (None: the whole grid)."""
    if size is None:
        return None
    box = batch.box(s)
    shape = np.asarray(box.shape)
    n = np.minimum(shape, size)
    a = int(batch.offsets[s])
    frac = box.fractional(batch.positions[a : a + 1])[0] if batch.offsets[s + 1] > a else 0.5
    frac = frac % 1.0 if box.periodic else np.clip(frac, 0.0, 1.0)
    centre = np.floor(np.asarray(frac) * shape).astype(np.int64)
    lo = np.clip(centre - n // 2, 0, shape - n)
    return lo, n


def _label(s: Structure) -> str:
    name = f"{s.name!r} " if s.name else ""
    return f"{name}({Path(s.source).name} record {s.record})"


# ---------------------------------------------------------------------- the sweep
def run_sweep(
    config: BenchConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    command: str = "",
) -> BenchResult:
    """Measure every cell of ``config`` (see the module docstring); returns the results.

    Raises ValueError for bad options or when no input structure can be benchmarked, and
    :class:`VerificationError` when an implementation is wrong.
    """
    started = time.perf_counter()
    cfg = (config or BenchConfig()).resolved()
    structures, rejected = load_structures(
        cfg.inputs,
        channels=cfg.channels,
        box=cfg.box,
        padding=cfg.padding,
        format=cfg.format,
        limit=cfg.limit,
    )
    if not structures:
        first = f" (first: {rejected[0].reason})" if rejected else ""
        raise ValueError(
            f"no structure to benchmark in {', '.join(cfg.inputs)}: "
            f"{len(rejected)} record(s) rejected{first}"
        )
    result = BenchResult(
        header=machine_header(cfg.implementations),
        config=cfg.to_json(),
        input={
            "files": [str(p) for p in expand_inputs(cfg.inputs)],
            "structures": len(structures),
            "atoms": int(sum(len(s) for s in structures)),
            "periodic": int(sum(s.periodic for s in structures)),
            "rejected": [r.to_json() for r in rejected],
        },
        command=command,
    )
    with threadpool_limits(limits=1, user_api="blas"):
        _Sweep(cfg, structures, result, progress).run()
    _speedups(result.cells)
    result.per_call = per_call_runs(cfg, structures, result)
    if cfg.end_to_end:
        result.end_to_end = end_to_end_runs(cfg)
    result.seconds = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        result.header["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


class _Sweep:
    """The loops of :func:`run_sweep`: grid size → channels → σ → implementation → threads."""

    def __init__(
        self,
        cfg: BenchConfig,
        structures: list[Structure],
        result: BenchResult,
        progress: ProgressFn | None,
    ) -> None:
        self.cfg = cfg
        self.structures = structures
        self.result = result
        self.progress = progress
        self.natives = [i for i in cfg.implementations if i != NUMPY]
        self.with_numpy = NUMPY in cfg.implementations
        per_setting = 1 + len(self.natives) * len(cfg.threads) + int(self.with_numpy)
        self.total = len(cfg.grid_sizes) * len(cfg.channels) * len(cfg.sigmas) * per_setting
        self.done = 0
        #: seconds per structure of the NumPy cells measured so far, per channel set
        self.numpy_seen: dict[str, list[tuple[int, float]]] = {}

    def step(self, what: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, what)

    def prepared(self) -> Iterator[tuple[int, str, Prepared]]:
        for n in self.cfg.grid_sizes:
            for ch in self.cfg.channels:
                recipe = GridRecipe(n, 1.0, ch, self.cfg.box, self.cfg.padding)
                yield n, ch, Prepared(self.structures, recipe)

    def run(self) -> None:
        # Every setting is verified before anything is timed, so a wrong implementation
        # stops the bench within seconds rather than after minutes of timing.
        for n, ch, prep in self.prepared():
            for sigma in self.cfg.sigmas:
                self.verify_all(prep, n, ch, sigma)
        for n, ch, prep in self.prepared():
            per_structure = prep.recipe.n_channels * n**3 * 4
            total = len(self.structures)
            size = int(min(total, max(1, self.cfg.batch_mb * 2**20 // per_structure)))
            buffer = np.empty((size, prep.recipe.n_channels, n, n, n), dtype=np.float32)
            ranges = [slice(a, min(a + size, total)) for a in range(0, total, size)]
            views = [buffer[: r.stop - r.start] for r in ranges]
            floors = {t: memory_floor(views, t, self.cfg.repeat) for t in self.cfg.threads}
            for sigma in self.cfg.sigmas:
                chunks = [(prep.batch(r, sigma), v) for r, v in zip(ranges, views, strict=True)]
                for name in self.natives:
                    for t in self.cfg.threads:
                        self.time_native(name, t, n, ch, sigma, chunks, floors[t])
                if self.with_numpy:
                    self.time_numpy(prep, n, ch, sigma, per_structure, floors)
            del buffer, views

    def verify_all(self, prep: Prepared, n: int, ch: str, sigma: float) -> None:
        if not self.natives:  # NumPy alone: it is the reference
            self.step(f"nothing to verify at {n}³ σ={sigma:g} {ch}")
            return
        idx = spread(len(self.structures), self.cfg.verify)
        batch = prep.batch(idx, sigma)
        windows = [_window(batch, s, self.cfg.verify_window) for s in range(len(idx))]
        refs = [reference_structure(batch, s, w) for s, w in enumerate(windows)]
        labels = [_label(self.structures[i]) for i in idx]
        for name in self.natives:
            for t in self.cfg.threads:
                err, ratio = verify(name, implementation(name), batch, refs, t, labels, windows)
                self.result.checks.append(Check(name, t, n, sigma, ch, labels, err, ratio))
        self.step(f"verified {n}³ σ={sigma:g} {ch}")

    def time_native(
        self,
        name: str,
        threads: int,
        n: int,
        ch: str,
        sigma: float,
        chunks: list[tuple[Batch, np.ndarray]],
        floor: list[float],
    ) -> None:
        render = implementation(name)
        nonzero = 0
        for batch, view in chunks:  # the warm-up run, which also counts non-zero voxels
            render(batch, view, threads)
            nonzero += int(np.count_nonzero(view))

        def run() -> None:
            for batch, view in chunks:
                render(batch, view, threads)

        times = time_runs(run, self.cfg.repeat, warmup=0)
        n_struct = len(self.structures)
        spec_c = chunks[0][0].n_channels
        self.result.cells.append(
            Cell(
                implementation=name,
                threads=threads,
                grid_size=n,
                sigma=sigma,
                channels=ch,
                n_channels=spec_c,
                structures=n_struct,
                atoms=int(sum(b.n_atoms for b, _ in chunks)),
                times=times,
                floor_times=floor,
                floor_structures=n_struct,
                nonzero_fraction=nonzero / (n_struct * spec_c * n**3),
            )
        )
        self.step(f"{name} ×{threads} {n}³ σ={sigma:g} {ch}")

    def time_numpy(
        self,
        prep: Prepared,
        n: int,
        ch: str,
        sigma: float,
        per_structure: int,
        floors: dict[int, list[float]],
    ) -> None:
        cfg = self.cfg
        total = len(self.structures)
        where = f"{n}³, σ = {sigma:g} Å, {ch}"
        budget = cfg.numpy_budget
        reason = None
        if budget <= 0:
            reason = "the NumPy reference is off (numpy budget 0 s)"
        else:
            # Scale from the largest grid measured so far: on small grids the reference's
            # per-atom overhead dominates, so n³ scaling from those overestimates.
            # (Channel sets differ little in the reference's cost: any of them will do.)
            seen = [m for measured in self.numpy_seen.values() for m in measured]
            largest = max((m for m, _ in seen), default=0)
            estimate = max((t * (n / m) ** 3 for m, t in seen if m == largest), default=0.0)
            if estimate * cfg.repeat > budget:
                reason = (
                    f"NumPy skipped at {where}: about {estimate:.2g} s per structure "
                    f"(scaled from {largest}³), so {cfg.repeat} runs would exceed the "
                    f"{budget:g} s budget"
                )
        idx: list[int] = []
        if reason is None:
            # The warm-up run picks the subset: structures in an evenly spreading order
            # until one run's worth of the budget is spent (or the buffer is full).
            per_run = budget / cfg.repeat
            room = max(1, int(cfg.batch_mb * 2**20 // per_structure))
            spent = 0.0
            for i in spread_order(total):
                one = prep.batch([i], sigma)
                t0 = time.perf_counter()
                reference_structure(one, 0)
                took = time.perf_counter() - t0
                if not idx and took > per_run:
                    # Remembered, so that larger grids are skipped from the estimate
                    # instead of spending minutes on one more structure each.
                    self.numpy_seen.setdefault(ch, []).append((n, took))
                    reason = (
                        f"NumPy skipped at {where}: one structure took {took:.2g} s, so "
                        f"{cfg.repeat} runs would exceed the {budget:g} s budget"
                    )
                    break
                idx.append(i)
                spent += took
                if spent >= per_run or len(idx) >= room:
                    break
        if reason is not None:
            self.result.skipped.append(Skip(NUMPY, 1, n, sigma, ch, reason))
            self.step(f"numpy {n}³ σ={sigma:g} {ch} (skipped)")
            return
        idx.sort()
        batch = prep.batch(idx, sigma)
        out = np.empty(batch.grid_shape, dtype=np.float32)
        times = time_runs(lambda: numpy_render(batch, out), cfg.repeat, warmup=1)
        floor_threads = 1 if 1 in floors else min(floors)
        cell = Cell(
            implementation=NUMPY,
            threads=1,
            grid_size=n,
            sigma=sigma,
            channels=ch,
            n_channels=batch.n_channels,
            structures=len(idx),
            atoms=batch.n_atoms,
            times=times,
            floor_times=floors[floor_threads],
            floor_structures=total,
            nonzero_fraction=float(np.count_nonzero(out)) / out.size,
        )
        self.result.cells.append(cell)
        self.numpy_seen.setdefault(ch, []).append((n, cell.seconds_per_structure))
        self.step(f"numpy {n}³ σ={sigma:g} {ch}")


def _speedups(cells: list[Cell]) -> None:
    """Fill the speedup fields from the median time per structure of matching cells."""
    by_key = {c.key: c for c in cells}
    for c in cells:
        _, threads, n, sigma, ch = c.key
        scalar = by_key.get(("scalar", threads, n, sigma, ch))
        ref = by_key.get((NUMPY, 1, n, sigma, ch))
        one = by_key.get((c.implementation, 1, n, sigma, ch))
        t = c.seconds_per_structure
        c.speedup_vs_scalar = scalar.seconds_per_structure / t if scalar else None
        c.speedup_vs_numpy = ref.seconds_per_structure / t if ref else None
        c.speedup_vs_1_thread = (
            one.seconds_per_structure / t if one and c.threads is not None else None
        )
