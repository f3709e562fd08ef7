"""``pgrid bench``: sweep grid sizes × σ, compare implementations, report like a paper's figure."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import options
from ._app import app, err_console, fail, user_errors

if TYPE_CHECKING:  # the bench (and SciPy behind its reference) loads only when it runs
    from ..runs.bench import BenchResult, Cell

#: Exit status when an implementation disagrees with the reference.
EXIT_WRONG = 1

EPILOG = (
    "Exit status: 0 on success; 1 when an implementation disagrees with the float64 "
    "reference (nothing is timed then); 2 for bad options or unusable input."
)

_SWEEP_KEYWORDS = ("single", "elements")


def parse_list(text: str, convert: Callable[[str], Any], what: str) -> tuple[Any, ...]:
    """``"16,32,64"`` → ``(16, 32, 64)``; ValueError naming the option otherwise."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{what} needs at least one value, got {text!r}")
    try:
        return tuple(convert(p) for p in parts)
    except ValueError:
        kind = "whole numbers" if convert is int else "numbers"
        raise ValueError(f"{what} must be a comma-separated list of {kind}, got {text!r}") from None


def parse_channel_sets(values: list[str]) -> tuple[str, ...]:
    """``single,elements`` is two channel sets; ``C,H,N,O,*`` is one (repeat the option
    for more)."""
    out: list[str] = []
    for v in values:
        parts = [p.strip() for p in v.split(",") if p.strip()]
        if parts and all(p.lower() in _SWEEP_KEYWORDS for p in parts):
            out.extend(p.lower() for p in parts)
        else:
            out.append(v.strip())
    return tuple(out)


@app.command("bench", epilog=EPILOG)
def bench_cli(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Structure files, directories or globs, anything pgrid grid reads "
            "(default: sample_data/drugs.sdf, 126 drug-like molecules with H).",
            show_default=False,
        ),
    ] = None,
    grid_sizes: Annotated[
        str | None,
        typer.Option(
            "--grid-sizes",
            help="Voxels per axis, e.g. 16,32,64,128 (the default; --quick: 16,32,64).",
        ),
    ] = None,
    sigmas: Annotated[
        str | None,
        typer.Option(
            "--sigmas",
            help="Gaussian standard deviations in Å (default 0.1,0.25,0.5,1.0; --quick: 0.5).",
        ),
    ] = None,
    channels: Annotated[
        list[str] | None,
        typer.Option(
            "--channels",
            help="Channel sets: single,elements (the default), or a list such as "
            "C,H,N,O,* (repeat the option for several lists).",
        ),
    ] = None,
    threads: Annotated[
        str | None,
        typer.Option("--threads", help="Kernel thread counts (default: 1,<all cores>)."),
    ] = None,
    box: Annotated[
        str | None,
        typer.Option(help="Molecule box: fit (default), tight or cube:L (L in Å)."),
    ] = None,
    padding: Annotated[
        float | None, typer.Option(help="Padding around molecules (fit, tight), Å (default 2).")
    ] = None,
    implementations: Annotated[
        str | None,
        typer.Option(
            "--implementations",
            "--impl",
            help="Any of avx512,avx2,scalar,numpy (default: every path this CPU runs, and numpy).",
        ),
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option(help="Timed runs per cell after one warm-up (default 5; --quick: 3)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(help="Use only the first N structures (default: all; --quick: 32)."),
    ] = None,
    verify: Annotated[
        int | None,
        typer.Option(
            help="Structures per setting checked against the float64 reference before "
            "timing (default 3)."
        ),
    ] = None,
    numpy_budget: Annotated[
        float | None,
        typer.Option(
            "--numpy-budget",
            help="Seconds NumPy may take per cell; it is skipped, and said so, where one "
            "structure would not fit (default 3; --quick: 1; 0 turns NumPy off).",
        ),
    ] = None,
    batch_mb: Annotated[
        float | None,
        typer.Option("--batch-mb", help="Largest output buffer, MiB (default 256)."),
    ] = None,
    format: options.FORMAT = None,
    end_to_end: Annotated[
        bool,
        typer.Option(
            "--end-to-end",
            help="Also time pgrid grid file → shards on the whole input, for each grid size "
            "and channel set (σ closest to 0.5 Å), split into parse / grid / compress / write.",
        ),
    ] = False,
    scratch: Annotated[
        Path | None,
        typer.Option(help="Directory for the --end-to-end shards (default: system temp dir)."),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A small sweep for a first look (under 30 s)."),
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the results as JSON.", metavar="FILE")
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write one CSV row per cell.", metavar="FILE")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Draw throughput against grid size and the speedup bars (PNG).",
            metavar="FILE",
        ),
    ] = None,
    json_out: options.JSON = False,
    quiet: options.QUIET = False,
) -> None:
    """Measure gridding speed on this machine: grid sizes × σ × channels × threads, every
    instruction-set path and NumPy side by side, each checked against the float64
    reference before it is timed."""
    from ..runs.bench import (
        BenchConfig,
        VerificationError,
        check_plot_path,
        plot_result,
        run_sweep,
    )

    with user_errors():
        changes: dict[str, Any] = {}
        if inputs:
            changes["inputs"] = tuple(inputs)
        if grid_sizes is not None:
            changes["grid_sizes"] = parse_list(grid_sizes, int, "--grid-sizes")
        if sigmas is not None:
            changes["sigmas"] = parse_list(sigmas, float, "--sigmas")
        if channels:
            changes["channels"] = parse_channel_sets(channels)
        if threads is not None:
            changes["threads"] = parse_list(threads, int, "--threads")
        if implementations is not None:
            changes["implementations"] = parse_list(implementations, str, "--implementations")
        for name, value in (
            ("box", box),
            ("padding", padding),
            ("repeat", repeat),
            ("limit", limit),
            ("verify", verify),
            ("numpy_budget", numpy_budget),
            ("batch_mb", batch_mb),
            ("format", format),
        ):
            if value is not None:
                changes[name] = value
        if scratch is not None:
            changes["scratch"] = str(scratch)
        changes["end_to_end"] = end_to_end
        config = BenchConfig.quick(**changes) if quick else replace(BenchConfig(), **changes)
        config = config.resolved()  # bad options fail before anything runs
        for out in (report, csv_out, plot):
            if out is not None and not out.parent.is_dir():
                raise ValueError(f"cannot write {out}: {out.parent} is not a directory")
        if plot is not None:
            check_plot_path(plot)
        command = shlex.join(["pgrid", *sys.argv[1:]])
        try:
            with _progress(enabled=not (quiet or json_out) and err_console.is_terminal) as update:
                result = run_sweep(config, progress=update, command=command)
        except VerificationError as exc:
            fail(str(exc), EXIT_WRONG)
        console = Console()
        if not console.is_terminal:  # a file or a pipe: room for every column
            console = Console(width=max(console.width, 140))
        if json_out:
            typer.echo(json.dumps(result.to_json(), indent=2))
        elif not quiet:
            print_result(result, console)
        if report is not None:
            result.write_json(report)
        if csv_out is not None:
            result.write_csv(csv_out)
        if plot is not None:
            plot_result(result, plot)
        if not (quiet or json_out):
            for label, path in (("JSON", report), ("CSV", csv_out), ("plot", plot)):
                if path is not None:
                    console.print(f"{label} written to {path}")


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int, str], None] | None]:
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("[bold]bench"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    task = bar.add_task("", total=None)

    def update(done: int, total: int, what: str) -> None:
        bar.update(task, completed=done, total=total, description=what)

    with bar:
        yield update


# ---------------------------------------------------------------------- printing
def print_result(result: BenchResult, console: Console) -> None:
    """Header, one row per cell, skipped cells, verification, end-to-end runs."""
    console.print(header_table(result))
    console.print(cells_table(result))
    for s in result.skipped:
        console.print(f"[yellow]skipped:[/] {s.reason}", soft_wrap=True)
    if result.checks:
        worst = max(result.checks, key=lambda c: c.worst_ratio)
        n_struct = len(result.checks[0].structures)
        console.print(
            f"verified: every native path at every thread count matches the float64 "
            f"reference on {n_struct} structure(s) per setting (worst error "
            f"{worst.max_abs_error:.2g}, {worst.worst_ratio:.2g} of the tolerance",
            soft_wrap=True,
        )
    if result.per_call:
        console.print(per_call_table(result))
    if result.end_to_end:
        console.print(end_to_end_table(result))
    rejected = result.input.get("rejected", [])
    if rejected:
        console.print(
            f"[yellow]{len(rejected)} input record(s) not benchmarked[/] (first: "
            f"{rejected[0]['source']} record {rejected[0]['record']}: {rejected[0]['reason']})",
            soft_wrap=True,
        )
    console.print(f"[dim]{result.seconds:.1f} s in all[/]")


def header_table(result: BenchResult) -> Table:
    h = result.header
    t = Table(title="pgrid bench", show_header=False, title_justify="left", box=None)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("CPU", f"{h['cpu']} ({h['cores_available']} of {h['cores']} cores available)")
    t.add_row(
        "ISA",
        f"detected {h['isa_detected']} (available: {', '.join(h['isa_available'])}; "
        f"default path {h['isa_default']}); benchmarked: {', '.join(h['implementations'])}",
    )
    t.add_row("compiler", f"{h['compiler']}; {h['flags']}")
    t.add_row(
        "versions",
        f"pgrid {h['pgrid_version']}, numpy {h['numpy_version']} ({h['blas']}), "
        f"Python {h['python']}",
    )
    load = h.get("load_average")
    t.add_row("date", h["date"] + (f"   load average {load[0]:.2f}" if load else ""))
    inp = result.input
    cfg = result.config
    t.add_row(
        "input",
        f"{inp['structures']} structures ({inp['atoms']} atoms) from "
        f"{', '.join(Path(f).name for f in inp['files'])}; box {cfg['box']}, "
        f"{cfg['repeat']} timed runs per cell after a warm-up",
    )
    return t


def _fmt(x: float | None, spec: str = ".1f", suffix: str = "×") -> str:
    return "—" if x is None else f"{x:{spec}}{suffix}"


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def cells_table(result: BenchResult) -> Table:
    t = Table(title="throughput (median of the timed runs)", title_justify="left")
    for name, justify in (
        ("setting", "left"),
        ("impl", "left"),
        ("threads", "right"),
        ("structures/s", "right"),
        ("min–max", "right"),
        ("ns/voxel", "right"),
        ("non-zero", "right"),
        ("× floor", "right"),
        ("vs scalar", "right"),
        ("vs NumPy", "right"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    impl_order = {name: k for k, name in enumerate(result.header.get("implementations", []))}
    ch_order = {name: k for k, name in enumerate(result.config.get("channels", []))}

    def key(c: Cell) -> tuple[Any, ...]:
        return (
            c.grid_size,
            ch_order.get(c.channels, 99),
            c.sigma,
            impl_order.get(c.implementation, 99),
            c.threads or 0,
        )

    cells = sorted(result.cells, key=key)
    for k, c in enumerate(cells):
        lo, hi = c.structures_per_s_range
        first = k == 0 or key(cells[k - 1])[:3] != key(c)[:3]
        last = k + 1 == len(cells) or key(cells[k + 1])[:3] != key(c)[:3]
        t.add_row(
            f"{c.grid_size}³ σ={c.sigma:g} {c.channels}" if first else "",
            c.implementation,
            str(c.threads),
            _rate(c.structures_per_s),
            f"{_rate(lo)}–{_rate(hi)}",
            f"{c.ns_per_voxel:.3g}",
            f"{100 * c.nonzero_fraction:.1f}%",
            _fmt(c.floor_ratio, ".2f"),
            _fmt(c.speedup_vs_scalar),
            _fmt(c.speedup_vs_numpy),
            end_section=last,
        )
    return t


def per_call_table(result: BenchResult) -> Table:
    t = Table(
        title="one call per structure, what users pay (GridRecipe.grid, a fresh array, "
        "default threads) against the best batch path",
        title_justify="left",
    )
    for name in ("grid", "σ Å", "channels", "structures/s", "÷ batch", "fixed cost µs"):
        t.add_column(name, justify="left" if name == "channels" else "right")
    for p in result.per_call:
        ratio = p.ratio_to_batch
        t.add_row(
            f"{p.grid_size}³",
            f"{p.sigma:g}",
            p.channels,
            _rate(p.structures_per_s),
            "—" if ratio is None else f"{ratio:.2f}",
            f"{p.fixed_cost_us:.1f}",
        )
    return t


def end_to_end_table(result: BenchResult) -> Table:
    t = Table(
        title="pgrid grid end to end (file → shards; stages in CPU seconds over all workers)",
        title_justify="left",
    )
    for name in (
        "grid",
        "σ Å",
        "channels",
        "structures",
        "structures/s",
        "parse",
        "grid s",
        "compress",
        "write",
        "kB/structure",
    ):
        t.add_column(name, justify="left" if name == "channels" else "right")
    for e in result.end_to_end:
        total = sum(e.stages.values()) or 1.0
        t.add_row(
            f"{e.grid_size}³",
            f"{e.sigma:g}",
            e.channels,
            f"{e.structures:,}",
            _rate(e.structures_per_s),
            *(
                f"{e.stages[s]:.2f} ({100 * e.stages[s] / total:.0f}%)"
                for s in ("parse", "grid", "compress", "write")
            ),
            f"{e.bytes_per_structure / 1e3:,.1f}",
        )
    return t
