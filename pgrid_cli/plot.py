"""Pictures of grids: per-channel projections with the atoms overlaid (matplotlib)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .core.channels import CATCH_ALL, SINGLE, ChannelSpec, element_symbol
from .store.shard import ShardRecord

MODES = ("max", "slice")


def channel_atoms(spec: ChannelSpec, numbers: np.ndarray) -> np.ndarray:
    """(C, M) bool: which atoms each channel holds."""
    out = np.zeros((spec.n_channels, len(numbers)), dtype=bool)
    try:
        chans = spec.assign(numbers)
    except ValueError:  # an atom without a channel: show it in none
        chans = np.array([_safe_channel(spec, int(z)) for z in numbers], dtype=np.int64)
    for a, c in enumerate(chans):
        if c >= 0:
            out[c, a] = True
    return out


def _safe_channel(spec: ChannelSpec, z: int) -> int:
    try:
        return int(spec.assign([z])[0])
    except ValueError:
        return -1


def draw_grid(
    record: ShardRecord,
    spec: ChannelSpec,
    path: str | os.PathLike[str],
    *,
    channels: Sequence[str] | None = None,
    mode: str = "max",
    dpi: int = 110,
) -> Path:
    """Save a picture of one grid: a panel per channel, atoms overlaid.

    ``mode`` ``max`` shows the maximum along the box's third axis (c); ``slice`` shows the
    layer k through the channel's densest voxel, with contour lines. Panels use voxel
    coordinates along a and b; atoms are drawn at their (wrapped, for crystals) fractional
    positions. ``channels`` picks channels by name (default: every non-empty one).
    """
    from matplotlib.figure import Figure

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use {' or '.join(MODES)}")
    grid = np.asarray(record.grid, dtype=np.float32)
    names = list(spec.names)
    if channels:
        missing = [c for c in channels if c not in names]
        if missing:
            raise ValueError(f"no channel {', '.join(missing)} (channels: {', '.join(names)})")
        show = [names.index(c) for c in channels]
    else:
        show = [c for c in range(len(names)) if grid[c].max() > 0] or [0]
    frac = record.box.fractional(record.positions)
    if record.box.periodic:
        frac = frac % 1.0
    ij = frac[:, :2] * np.asarray(record.box.shape[:2], dtype=np.float64)
    held = channel_atoms(spec, np.asarray(record.numbers))

    ncols = min(4, len(show))
    nrows = -(-len(show) // ncols)
    fig = Figure(figsize=(3.4 * ncols, 3.2 * nrows + 0.4), dpi=dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    nx, ny, _ = record.box.shape
    for ax, c in zip(axes, show, strict=False):
        g = grid[c]
        if mode == "max":
            image = g.max(axis=2)
            label = "max over c"
        else:
            k = int(np.unravel_index(int(np.argmax(g)), g.shape)[2])
            image = g[:, :, k]
            label = f"layer k = {k}"
        im = ax.imshow(
            image.T,
            origin="lower",
            extent=(0, nx, 0, ny),
            cmap="magma",
            interpolation="nearest",
        )
        if mode == "slice" and image.max() > 0:
            ax.contour(
                np.arange(nx) + 0.5,
                np.arange(ny) + 0.5,
                image.T,
                levels=np.linspace(0, image.max(), 6)[1:-1],
                colors="white",
                linewidths=0.5,
            )
        others = ~held[c]
        ax.scatter(ij[others, 0], ij[others, 1], s=6, c="0.6", linewidths=0)
        ax.scatter(
            ij[held[c], 0],
            ij[held[c], 1],
            s=18,
            facecolors="none",
            edgecolors="cyan",
            linewidths=0.8,
        )
        ax.set_xlim(0, nx)
        ax.set_ylim(0, ny)
        ax.set_title(f"{_channel_title(names[c])}: {label}", fontsize=9)
        ax.set_xlabel("a (voxels)", fontsize=8)
        ax.set_ylabel("b (voxels)", fontsize=8)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in axes[len(show) :]:
        ax.set_axis_off()
    kind = "crystal" if record.box.periodic else "molecule"
    fig.suptitle(
        f"{record.name or '(no name)'} — {kind}, {len(record.numbers)} atoms, "
        f"{record.source}#{record.record}",
        fontsize=10,
    )
    out = Path(path)
    fig.savefig(out)
    return out


def _channel_title(name: str) -> str:
    if name == SINGLE:
        return "all atoms"
    if name == CATCH_ALL:
        return "other elements (*)"
    return name


__all__ = ["MODES", "channel_atoms", "draw_grid", "element_symbol"]
