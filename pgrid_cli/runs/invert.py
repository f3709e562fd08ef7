"""Invert many grids, in parallel, and report how well the atoms were recovered.

:func:`invert_source` runs :func:`pgrid_cli.invert.invert_grid` over the structures of a
grid source (a shard directory or a ``.npy`` file, :mod:`pgrid_cli.grid_sources`) on
several worker processes and yields one :class:`StructureReport` per structure, in input
order. A structure that cannot be inverted (NaN values, a grid that does not match its
box, a missing σ…) gives a report with ``error`` set; the others go on.
:func:`write_structures` writes the recovered atoms (docs/format.md §7) and :func:`summarize`
condenses the reports into the recovery table.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..invert import InversionError, InversionResult, InvertOptions, Match, invert_grid, match_atoms
from ..invert.sources import GridItem
from ..readers import printable, source_name
from .workers import process_pool

__all__ = [
    "StructureReport",
    "default_workers",
    "invert_item",
    "invert_source",
    "summarize",
    "write_structures",
    "xyz_text",
]

#: Structures per task sent to a worker process (amortises the hand-over).
CHUNK = 8


@dataclass
class StructureReport:
    """How one structure was inverted.

    Attributes
    ----------
    index, name, source, record : which structure
    error : why it could not be inverted (one line), else None
    result : the recovered atoms (None on error; dropped once written, to save memory)
    counts : atoms found per channel name (channels with atoms, or expected to have some)
    expected : Σ grid per channel name (≈ atoms whose density the box holds)
    residual : ‖G − render(atoms)‖ / ‖G‖
    added, removed : atoms the model selection added (no peak showed them) and removed
    match : scores against the original atoms, when the input holds them
    note : why it was not scored although original atoms were given
    seconds : wall time of the inversion
    """

    index: int
    name: str
    source: str
    record: int
    error: str | None = None
    result: InversionResult | None = None
    counts: dict[str, int] | None = None
    expected: dict[str, float] | None = None
    residual: float = math.nan
    added: int = 0
    removed: int = 0
    match: Match | None = None
    note: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def n_atoms(self) -> int:
        return sum(self.counts.values()) if self.counts else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the atoms themselves)."""
        d: dict[str, Any] = {
            "index": self.index,
            "name": self.name,
            "source": self.source,
            "record": self.record,
            "ok": self.ok,
        }
        if self.error is not None:
            d["error"] = self.error
            return d
        d.update(
            atoms=self.n_atoms,
            counts=self.counts,
            expected=self.expected,
            residual=self.residual,
            added=self.added,
            removed=self.removed,
            seconds=round(self.seconds, 6),
        )
        if self.match is not None:
            d["match"] = self.match.to_dict()
        if self.note is not None:
            d["note"] = self.note
        return d


def invert_item(
    item: GridItem,
    *,
    element: str | None = None,
    options: InvertOptions | None = None,
    tolerance: float = 0.1,
) -> StructureReport:
    """Invert one :class:`GridItem` and score it against its original atoms (if known)."""
    rep = StructureReport(item.index, item.name, item.source, item.record)
    if item.error is not None:
        rep.error = item.error
        return rep
    t0 = time.perf_counter()
    try:
        if item.grid is None or item.box is None:
            raise InversionError("no grid or box")
        res = invert_grid(
            item.grid, item.box, item.sigma, item.channels, element=element, options=options
        )
    except (InversionError, ValueError) as exc:
        rep.error = str(exc)
        return rep
    rep.seconds = time.perf_counter() - t0
    names = item.channels.names  # type: ignore[union-attr]
    used = [c for c in range(len(names)) if res.counts[c] or round(res.expected[c])]
    rep.counts = {names[c]: int(res.counts[c]) for c in used}
    rep.expected = {names[c]: round(float(res.expected[c]), 4) for c in used}
    rep.residual = float(res.residual)
    rep.added, rep.removed = res.added, res.removed
    res.info.update(name=item.name, index=item.index, source=item.source, record=item.record)
    res.info["residual"] = round(rep.residual, 8)
    rep.result = res
    if item.ref_weights is not None and not np.allclose(item.ref_weights, 1.0):
        # Partial occupancies: the grid holds fractions of atoms, the inversion finds
        # whole ones (docs/format.md §1 weights default to 1; invert assumes it).
        rep.note = "atoms with weights ≠ 1 (site occupancies): inversion assumes unit weights"
    if item.ref_numbers is not None and item.ref_positions is not None:
        try:
            ref_channels = item.channels.assign(item.ref_numbers)  # type: ignore[union-attr]
        except ValueError as exc:
            rep.note = f"not scored: the original atoms do not fit the channels ({exc})"
            return rep
        rep.match = match_atoms(
            res.positions,
            res.channels,
            item.ref_positions,
            ref_channels,
            lattice=res.lattice,
            tolerance=tolerance,
        )
    return rep


def _run_chunk(
    source: Any,
    indices: Sequence[int],
    element: str | None,
    options: InvertOptions | None,
    tolerance: float,
) -> list[StructureReport]:
    out = []
    for i in indices:
        try:
            item = source.item(i)
        except (OSError, ValueError, KeyError) as exc:
            item = GridItem(i, f"#{i}", source_name(source.path), i, error=f"cannot read: {exc}")
        out.append(invert_item(item, element=element, options=options, tolerance=tolerance))
    return out


def default_workers(n_structures: int) -> int:
    """Processes to use: the CPUs this process may run on, but no more than one per
    ``4·CHUNK`` structures (starting a process costs about a second)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, n_structures // (4 * CHUNK)))


def invert_source(
    source: Any,
    indices: Iterable[int],
    *,
    element: str | None = None,
    options: InvertOptions | None = None,
    workers: int = 1,
    tolerance: float = 0.1,
) -> Iterator[StructureReport]:
    """Invert the structures ``indices`` of ``source``; yields reports in that order.

    ``workers`` > 1 runs chunks of structures in that many processes (each with one
    native thread); at most a few chunks per worker are in flight, so memory stays flat
    however many structures there are.
    """
    idx = list(indices)
    opts = options or InvertOptions()
    if workers <= 1 or len(idx) <= CHUNK:
        for start in range(0, len(idx), CHUNK):
            yield from _run_chunk(source, idx[start : start + CHUNK], element, opts, tolerance)
        return
    chunks = [idx[s : s + CHUNK] for s in range(0, len(idx), CHUNK)]
    # spawn: a clean interpreter per worker (no inherited threads or open HDF5 handles).
    with process_pool(workers, "spawn") as pool:
        pending: list[Future[list[StructureReport]]] = []
        it = iter(chunks)
        try:
            for chunk in it:
                pending.append(pool.submit(_run_chunk, source, chunk, element, opts, tolerance))
                if len(pending) >= 3 * workers:
                    break
            while pending:
                done = pending.pop(0)
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(_run_chunk, source, nxt, element, opts, tolerance))
                yield from done.result()
        finally:  # stopped early (Ctrl-C, the consumer gave up): drop queued chunks
            for f in pending:
                f.cancel()


def write_structures(
    path: str | os.PathLike[str], reports: Iterable[StructureReport]
) -> Iterator[StructureReport]:
    """Write the atoms of each successful report to ``path`` as extended XYZ (docs/format.md §7),
    one frame per structure in order, and pass every report on (its ``result`` dropped).

    Crystals get ``Lattice=`` and ``pbc="T T T"``; every frame's comment carries the
    structure's ``name``, ``index``, ``source``, ``record`` and ``residual``. Text values
    follow the extended-XYZ quoting rules (:func:`xyz_text`): ASE reads back quotes and
    backslashes as they were, and a character that would break the line (a newline) as
    a backslash escape. The file appears under its name only when complete (written to a
    temporary name first).
    """
    from ase.io import write

    final = Path(path)
    tmp = final.with_name(final.name + ".partial")
    ok = False
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for rep in reports:
                if rep.result is not None:
                    atoms = rep.result.to_atoms()
                    for key, value in atoms.info.items():
                        if isinstance(value, str):
                            atoms.info[key] = xyz_text(value)
                    write(fh, atoms, format="extxyz")
                    rep.result = None
                yield rep
        ok = True
    finally:
        if ok:
            os.replace(tmp, final)
        else:
            tmp.unlink(missing_ok=True)


def xyz_text(value: str) -> str:
    """``value`` prepared for ASE's extended-XYZ writer, which quotes a value holding a
    space or a quote (escaping the quote) but writes backslashes and newlines as they
    are — while its reader takes a backslash as escaping the next character, and a
    newline ends the comment line.

    So: every character that is not printable becomes a backslash escape (a newline
    ``\\n``, a byte of a file name that is not UTF-8 ``\\xff``:
    :func:`~pgrid_cli.readers.printable`, which leaves pgrid's already escaped sources as
    they are) and every backslash is doubled, for the reader to undo.
    """
    return printable(value, backslashes=False).replace("\\", "\\\\")


def summarize(reports: Sequence[StructureReport], seconds: float | None = None) -> dict[str, Any]:
    """The recovery table: counts, exact composition, median RMSD, atoms within tolerance,
    residuals and speed, over ``reports``."""
    ok = [r for r in reports if r.ok]
    scored = [r for r in ok if r.match is not None]
    rmsds = [r.match.rmsd for r in scored if r.match and math.isfinite(r.match.rmsd)]
    n_ref = sum(r.match.n_reference for r in scored if r.match)
    within = sum(r.match.within for r in scored if r.match)
    out: dict[str, Any] = {
        "structures": len(reports),
        "inverted": len(ok),
        "failed": len(reports) - len(ok),
        "atoms": sum(r.n_atoms for r in ok),
        "median_residual": _median([r.residual for r in ok]),
        "max_residual": max((r.residual for r in ok), default=None),
        "scored": len(scored),
    }
    if scored:
        out.update(
            exact_composition=sum(r.match.exact_composition for r in scored if r.match)
            / len(scored),
            median_rmsd=_median(rmsds),
            reference_atoms=n_ref,
            atoms_within=within / n_ref if n_ref else None,
            tolerance=scored[0].match.tolerance if scored[0].match else None,
        )
    if seconds is not None:
        out["seconds"] = round(seconds, 3)
        out["structures_per_second"] = round(len(reports) / seconds, 2) if seconds > 0 else None
    return out


def _median(values: Sequence[float]) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.median(v)) if v else None


def collect(
    reports: Iterable[StructureReport], on_report: Callable[[StructureReport], None] | None = None
) -> list[StructureReport]:
    """Consume reports into a list, calling ``on_report`` for each (progress bars)."""
    out = []
    for rep in reports:
        out.append(rep)
        if on_report is not None:
            on_report(rep)
    return out
