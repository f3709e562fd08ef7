"""``pgrid bench --plot``: the figure of a :class:`~pgrid_cli.runs.bench.results.BenchResult`."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import NUMPY
from .results import BenchResult


# ---------------------------------------------------------------------- the figure
def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if matplotlib can write its format (from the suffix), else ValueError."""
    from matplotlib.backend_bases import FigureCanvasBase

    out = Path(path)
    kinds = FigureCanvasBase.get_supported_filetypes()
    if out.suffix.lstrip(".").lower() not in kinds:
        raise ValueError(
            f"cannot draw {out}: the file name must end in an image format matplotlib "
            f"writes, such as .png, .svg or .pdf"
        )
    return out


def plot_result(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    """Draw the sweep as a PNG (or any format matplotlib infers from the suffix).

    One column per channel set; rows: throughput against grid size (log scale, one line
    per σ and implementation, as the ParticleGrid paper's Fig. 5); speedup over scalar
    per grid size (each native path and thread count, geometric mean over σ, its
    Fig. 3); speedup over NumPy per grid size and σ (the best path, 1 thread, its Fig. 4).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    out = check_plot_path(path)
    cells = result.cells
    channels = list(dict.fromkeys(c.channels for c in cells))
    if not channels:
        raise ValueError("nothing to plot: the result has no measured cell")
    sigmas = sorted({c.sigma for c in cells})
    sizes = sorted({c.grid_size for c in cells})
    impls = list(dict.fromkeys(c.implementation for c in cells))
    threads = sorted({c.threads for c in cells if c.threads is not None})
    natives = [i for i in impls if i != NUMPY]
    colours = _colours(len(sigmas))
    styles = dict(zip(impls, ["-", "--", "-.", ":", (0, (1, 4))], strict=False))
    markers = dict(zip([*threads, None], ["o", "s", "^", "D", "v", "P", "x"], strict=False))

    best = natives[0] if natives else None
    one = 1 if 1 in threads else (threads[0] if threads else None)
    first, most = (threads[0], threads[-1]) if threads else (None, None)
    fig = Figure(figsize=(6.2 * len(channels), 13.5), layout="constrained")
    axes = fig.subplots(3, len(channels), squeeze=False)
    for col, ch in enumerate(channels):
        mine = [c for c in cells if c.channels == ch]
        ax = axes[0][col]
        for impl in impls:
            # Every path at 1 thread (NumPy at its own), the best one at the most threads.
            shown = [None] if impl == NUMPY else [first]
            if impl == best and len(threads) > 1:
                shown.append(most)
            for t in shown:
                for si, s in enumerate(sigmas):
                    pts = sorted(
                        (c.grid_size, c.structures_per_s)
                        for c in mine
                        if c.implementation == impl and c.threads == t and c.sigma == s
                    )
                    if pts:
                        x, y = zip(*pts, strict=True)
                        ax.plot(
                            x,
                            y,
                            linestyle=styles[impl],
                            marker=markers[t],
                            color=colours[si],
                            markersize=4,
                            linewidth=1.2,
                        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [f"{n}³" for n in sizes])
        ax.set_xlabel("grid size")
        ax.set_ylabel("structures / s")
        more = f"; {best} also ×{most}" if best and len(threads) > 1 else ""
        ax.set_title(f"throughput, channels: {ch} (threads ×{first}{more})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        handles = [
            Line2D([], [], color=colours[i], label=f"σ = {s:g} Å") for i, s in enumerate(sigmas)
        ]
        handles += [Line2D([], [], color="k", linestyle=styles[i], label=i) for i in impls]
        handles += [
            Line2D([], [], color="k", marker=markers[t], linestyle="", label=f"{t} thread(s)")
            for t in dict.fromkeys([first, most])
            if t is not None
        ]
        ax.legend(handles=handles, fontsize=7, ncol=2)

        bars = [(i, t) for i in natives if i != "scalar" for t in threads]
        _grouped_bars(
            axes[1][col],
            sizes,
            [f"{i} ×{t}" for i, t in bars],
            [
                [
                    _geomean(
                        c.speedup_vs_scalar
                        for c in mine
                        if c.implementation == i and c.threads == t and c.grid_size == n
                    )
                    for n in sizes
                ]
                for i, t in bars
            ],
            title=f"speedup over scalar (same threads; geometric mean over σ), {ch}",
        )
        _grouped_bars(
            axes[2][col],
            sizes,
            [f"σ = {s:g} Å" for s in sigmas],
            [
                [
                    _geomean(
                        c.speedup_vs_numpy
                        for c in mine
                        if c.implementation == best
                        and c.threads == one
                        and c.grid_size == n
                        and c.sigma == s
                    )
                    for n in sizes
                ]
                for s in sigmas
            ],
            title=f"speedup of {best} ×{one} over NumPy, {ch}",
            colours=colours,
        )
    h = result.header
    fig.suptitle(
        f"pgrid bench — {h.get('cpu', '?')}, {h.get('cores_available', '?')} cores, "
        f"{result.input.get('structures', '?')} structures, {h.get('date', '')}",
        fontsize=10,
    )
    fig.savefig(out, dpi=110)
    return out


def _geomean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in vs) / len(vs)) if vs else None


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.85, max(n, 1))]


def _grouped_bars(
    ax: Any,
    sizes: Sequence[int],
    labels: Sequence[str],
    values: Sequence[Sequence[float | None]],
    *,
    title: str,
    colours: Sequence[Any] | None = None,
) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("grid size")
    ax.set_xticks(range(len(sizes)), [f"{n}³" for n in sizes])
    drawn = False
    width = 0.8 / max(len(labels), 1)
    for k, (label, row) in enumerate(zip(labels, values, strict=True)):
        xs = [i + (k - (len(labels) - 1) / 2) * width for i, v in enumerate(row) if v]
        ys = [v for v in row if v]
        if ys:
            drawn = True
            kw = {"color": colours[k]} if colours is not None else {}
            ax.bar(xs, ys, width=width, label=label, **kw)
    if drawn:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
