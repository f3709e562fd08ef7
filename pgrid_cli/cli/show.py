"""``pgrid show``: draw one grid of a shard as a picture."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..store.shard import Shard, ShardRecord, ShardSet
from ._app import app, user_errors


def read_record(path: Path, index: int) -> tuple[ShardRecord, Shard]:
    """Structure ``index`` of a shard file or directory, and the shard that holds it."""
    shards = ShardSet(path)
    if not -len(shards) <= index < len(shards):
        raise ValueError(f"--index {index} is out of range: {path} holds {len(shards)} grids")
    shard, j = shards.locate(index)
    return shard[j], shard


@app.command("show")
def show_cli(
    path: Annotated[Path, typer.Argument(help="A shard file or an output directory.")],
    index: Annotated[
        int, typer.Option("--index", "-i", help="Structure to draw (global index in a directory).")
    ] = 0,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Picture to write (.png, .pdf, .svg).")
    ] = Path("grid.png"),
    channels: Annotated[
        str | None, typer.Option(help="Channels to draw, e.g. C,N,O (default: non-empty ones).")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="max: maximum along c, over the a–b plane, every atom projected along c. "
            "slice: the channel's densest layer k, contoured, marking only the atoms within "
            "½·(layer thickness) + 1·σ of the layer's central plane. iso: 3D isosurfaces "
            "(one colour per channel) with the atoms as balls.",
        ),
    ] = "max",
    level: Annotated[
        float | None,
        typer.Option(
            help="iso mode: the isosurface level as a fraction of the largest value of the "
            "drawn channels (default 0.1).",
        ),
    ] = None,
) -> None:
    """Draw one grid in Cartesian space: a panel per channel (max, slice) or one 3D view
    (iso). Crystals are drawn with their real cell and its periodic images."""
    from ..plot import draw_grid

    with user_errors():
        record, shard = read_record(path, index)
        names = [c.strip() for c in channels.split(",")] if channels else None
        written = draw_grid(
            record,
            shard.channels,
            out,
            channels=names,
            mode=mode,
            sigma=shard.sigma,
            level=level,
        )
    typer.echo(f"{record.name or 'structure'} (#{index}) → {written}")
