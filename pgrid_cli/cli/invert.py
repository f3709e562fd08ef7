"""``pgrid invert``: recover atoms from grids (shards or .npy) and print the recovery table."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import options
from ._app import EXIT_NOTHING, EXIT_REJECTED, app, err_console, fail, user_errors

if TYPE_CHECKING:  # the inversion (SciPy, cripser) loads only when it runs
    from ..runs.invert import StructureReport

#: Up to this many structures the table lists every one of them.
DETAIL_ROWS = 50
#: Failures listed one per line on stderr (the rest are counted).
ERROR_LINES = 20
OUTPUT_SUFFIXES = (".xyz", ".extxyz")


HELP = (
    "Recover atoms (positions, elements, cells) from density grids.\n\n"
    "Peaks by persistent homology (cripser), then L-BFGS refinement of ‖G − render(atoms)‖² "
    "with the kernel's analytic gradient, adding atoms where density is unexplained and "
    "removing those that do not pay. Writes one extended-XYZ frame per inverted structure. "
    "When the input holds the original atoms (shards do), each structure is scored: "
    "Hungarian-matched RMSD, atoms within --tolerance, exact composition."
)


OUT = options.out("Recovered atoms: multi-frame extended XYZ (Lattice= and pbc for crystals).")
INDEX = options.index("Structures to invert (default: all)")
WORKERS = options.workers("Worker processes (default: one per CPU, one per 32 structures at most).")
STRICT = options.strict(f"Exit {EXIT_REJECTED} when any structure could not be inverted.")


@app.command("invert", help=HELP)
def invert_cli(
    input: Annotated[
        Path,
        typer.Argument(
            help="A shard (.h5), an output directory of `pgrid grid`, or a .npy grid "
            "with a JSON file of box, sigma and channels.",
            show_default=False,
        ),
    ],
    output: OUT,
    index: INDEX = None,
    meta: Annotated[
        Path | None,
        typer.Option(
            help="JSON metadata of a .npy input (default: the .npy name with .json).",
        ),
    ] = None,
    element: Annotated[
        str | None,
        typer.Option(
            help="Element written for channels that name none (a single channel, or '*'). "
            "Default: X.",
        ),
    ] = None,
    workers: WORKERS = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write the per-structure results and the summary as JSON here."),
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option(
            help="An original atom counts as recovered within this distance.", metavar="Å"
        ),
    ] = 0.1,
    strict: STRICT = False,
    json_out: options.JSON = False,
    quiet: options.QUIET = False,
) -> None:
    """Parse the options, invert (:func:`pgrid_cli.recovery.invert_source`), print the
    recovery table."""
    from ..invert.sources import open_grids, parse_indices
    from ..runs.invert import default_workers, summarize
    from ..store.rundir import write_json

    with user_errors():
        if output.suffix.lower() not in OUTPUT_SUFFIXES:
            raise ValueError(f"{output}: write .xyz or .extxyz (extended XYZ, docs/format.md §7)")
        if not output.parent.is_dir():
            raise ValueError(f"{output.parent}: no such directory for the output")
        if not (tolerance > 0):
            raise ValueError(f"--tolerance must be a positive distance in Å, got {tolerance}")
        if element is not None:
            from ..core.channels import atomic_number

            atomic_number(element)
        source = open_grids(input, meta)
        indices = parse_indices(index, len(source))
    n_workers = default_workers(len(indices)) if workers is None else workers
    t0 = time.perf_counter()
    reports = _run(source, indices, output, element, n_workers, tolerance, quiet or json_out)
    seconds = time.perf_counter() - t0
    summary = summarize(reports, seconds)
    summary["workers"] = n_workers
    failed = [r for r in reports if not r.ok]
    if report is not None:
        with user_errors():
            write_json(
                report,
                {
                    "input": str(input),
                    "output": str(output),
                    "options": {"element": element, "tolerance": tolerance, "workers": n_workers},
                    "summary": summary,
                    "structures": [r.to_dict() for r in reports],
                },
            )
    if json_out:
        typer.echo(json.dumps({"output": str(output), **summary}, indent=2, default=str))
    elif not quiet:
        out = Console(highlight=False)
        if len(reports) <= DETAIL_ROWS:
            out.print(_detail_table(reports))
        out.print(_summary_table(summary, output))
    for r in [r for r in reports if r.ok and r.note][:ERROR_LINES]:
        err_console.print(f"[yellow]note:[/] {_label(r)}: {r.note}", soft_wrap=True)
    for r in failed[:ERROR_LINES]:
        err_console.print(f"[bold red]failed:[/] {_label(r)}: {r.error}", soft_wrap=True)
    if len(failed) > ERROR_LINES:
        more = len(failed) - ERROR_LINES
        hint = f" (all in {report})" if report else " (--report FILE lists them all)"
        err_console.print(f"[bold red]failed:[/] … and {more} more{hint}")
    if reports and not summary["inverted"]:
        fail("no structure could be inverted", EXIT_NOTHING)
    if failed and strict:
        raise typer.Exit(EXIT_REJECTED)


def _run(
    source: Any,
    indices: list[int],
    output: Path,
    element: str | None,
    workers: int,
    tolerance: float,
    quiet: bool,
) -> list[StructureReport]:
    from ..invert import InvertOptions
    from ..runs.invert import collect, invert_source, write_structures

    progress = Progress(
        TextColumn("inverting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8} structures/s"),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet or not err_console.is_terminal,
        transient=True,
    )
    stream = invert_source(
        source,
        indices,
        element=element,
        options=InvertOptions(),
        workers=workers,
        tolerance=tolerance,
    )
    with progress:
        task = progress.add_task("invert", total=len(indices), rate="")
        t0 = time.perf_counter()

        def tick(_: StructureReport) -> None:
            progress.advance(task)
            done = progress.tasks[0].completed
            progress.update(task, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.1f}")

        with user_errors():
            return collect(write_structures(output, stream), tick)


def _label(r: StructureReport) -> str:
    return (
        f"structure {r.index} ({r.name})"
        if r.name and r.name != f"#{r.index}"
        else (f"structure {r.index}")
    )


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None or v != v else format(v, spec)


def _detail_table(reports: list[StructureReport]) -> Table:
    t = Table(title="recovered structures", title_justify="left")
    for col, justify in [
        ("#", "right"),
        ("name", "left"),
        ("atoms found", "left"),
        ("residual", "right"),
        ("RMSD Å", "right"),
        ("within", "right"),
        ("composition", "left"),
    ]:
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in reports:
        if not r.ok:
            t.add_row(str(r.index), r.name, f"[red]failed: {r.error}[/]", "", "", "", "")
            continue
        found = " ".join(f"{k}{v}" for k, v in (r.counts or {}).items()) or "(none)"
        m = r.match
        t.add_row(
            str(r.index),
            r.name,
            found,
            f"{r.residual:.1e}",
            _fmt(m.rmsd if m else None, ".1e"),
            f"{m.within}/{m.n_reference}" if m else "–",
            ("[green]exact[/]" if m.exact_composition else "[red]differs[/]") if m else "–",
        )
    return t


def _summary_table(s: dict[str, Any], output: Path) -> Table:
    t = Table(title="recovery", title_justify="left", show_header=False)
    t.add_column("", justify="left")
    t.add_column("", justify="right")
    t.add_row("structures", str(s["structures"]))
    t.add_row("inverted", str(s["inverted"]))
    if s["failed"]:
        t.add_row("[red]failed[/]", f"[red]{s['failed']}[/]")
    t.add_row("atoms found", str(s["atoms"]))
    t.add_row("median relative residual", _fmt(s["median_residual"], ".2e"))
    if s["scored"]:
        t.add_row("exact composition", f"{100 * s['exact_composition']:.1f}%")
        t.add_row("median RMSD (Å)", _fmt(s["median_rmsd"], ".2e"))
        t.add_row(
            f"atoms within {s['tolerance']:g} Å",
            f"{100 * s['atoms_within']:.2f}%" if s["atoms_within"] is not None else "–",
        )
    plural = "s" if s["workers"] > 1 else ""
    t.add_row("time", f"{s['seconds']:.2f} s ({s['workers']} worker{plural})")
    t.add_row("structures/s", _fmt(s["structures_per_second"], ".1f"))
    t.add_row("written to", str(output))
    return t
