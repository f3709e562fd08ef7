"""``pgrid show``: draw one grid of a shard as a picture."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from ..store.shard import Shard, ShardRecord, ShardSet
from . import options
from ._app import app, user_errors


def read_records(path: Path, index: str | None) -> Iterator[tuple[int, ShardRecord, Shard]]:
    """(global index, record, its shard) of the structures ``index`` selects in a shard
    file or directory (default: the first)."""
    from ..invert.sources import parse_indices

    shards = ShardSet(path)
    for i in parse_indices(index or "0", len(shards)):
        shard, j = shards.locate(i)
        yield i, shard[j], shard


def numbered(path: Path, i: int, many: bool) -> Path:
    """``path`` itself, or with ``.i`` before its suffix when several structures are
    written (``g.png`` → ``g.7.png``)."""
    return path.with_name(f"{path.stem}.{i}{path.suffix}") if many else path


OUT = options.out("Picture to write (.png, .pdf, .svg); g.7.png etc. for several.", False)
INDEX = options.index("Structures to draw, global indices in a directory (default: 0)")


@app.command("show")
def show_cli(
    path: Annotated[Path, typer.Argument(help="A shard file or an output directory.")],
    index: INDEX = None,
    out: OUT = None,
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
            metavar="X",
        ),
    ] = None,
    json_out: options.JSON = False,
) -> None:
    """Draw one grid in Cartesian space: a panel per channel (max, slice) or one 3D view
    (iso). Crystals are drawn with their real cell and its periodic images."""
    from ..plot import draw_grid

    names = [c.strip() for c in channels.split(",")] if channels else None

    def draw(record: ShardRecord, shard: Shard, target: Path) -> list[Path]:
        picture = draw_grid(
            record,
            shard.channels,
            target,
            channels=names,
            mode=mode,
            sigma=shard.sigma,
            level=level,
        )
        return [Path(picture)]

    write_each(path, index, out or Path("grid.png"), draw, json_out)


def write_each(
    path: Path,
    index: str | None,
    out: Path,
    write: Callable[[ShardRecord, Shard, Path], list[Path]],
    json_out: bool,
) -> None:
    """Write each selected structure to ``out`` (numbered when several) and say what was
    written: one line per structure, or JSON with ``--json``."""
    done = []
    with user_errors():
        selected = list(read_records(path, index))
        for i, record, shard in selected:
            written = write(record, shard, numbered(out, i, len(selected) > 1))
            done.append({"index": i, "name": record.name, "files": [str(f) for f in written]})
    if json_out:
        typer.echo(json.dumps(done, indent=2))
        return
    for d in done:
        typer.echo(f"{d['name'] or 'structure'} (#{d['index']}) → {', '.join(d['files'])}")
