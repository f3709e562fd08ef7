"""``pgrid export``: write one grid of a shard in a format that viewers read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..store.shard import Shard, ShardRecord
from . import options
from ._app import app
from .show import write_each

OUT = options.out(
    "File to write; its suffix picks the format (.cube, .dx, .mrc/.map, .chgcar or a file "
    "named CHGCAR) unless --format is given; g.7.cube etc. for several structures."
)
INDEX = options.index("Structures to export, global indices in a directory (default: 0)")


@app.command("export")
def export_cli(
    path: Annotated[Path, typer.Argument(help="A shard file or an output directory.")],
    out: OUT,
    index: INDEX = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="cube (Bohr, atoms/Bohr³, with atoms), dx (Å, atoms/Å³), chgcar (ρ·V, "
            "crystals only, with atoms) or mrc (Å, atoms/Å³, axis-aligned boxes only).",
        ),
    ] = None,
    channel: Annotated[
        str,
        typer.Option(
            "--channel",
            "-c",
            help="all: one file per non-empty density channel (OUT with the channel name "
            "inserted before the suffix: g.C.cube; '*' is written 'other'); sum: the "
            "channels summed into OUT; a name (C) into OUT; a list (C,N,O); or energy: "
            "the energy channel (lj:…, values in K as stored) into OUT.",
        ),
    ] = "all",
    quantity: Annotated[
        str,
        typer.Option(
            help="density: amount / voxel volume (per Bohr³ in cube files, per Å³ "
            "otherwise); amount: pgrid's values (atoms per voxel). CHGCAR always stores "
            "ρ·V_cell; the energy channel is always written as stored (K).",
        ),
    ] = "density",
    json_out: options.JSON = False,
) -> None:
    """Export one grid to cube, DX, CHGCAR or MRC for VMD, PyMOL, VESTA, ChimeraX ….

    Grid points are written at the voxel centres (pgrid's corner origin + ½ voxel).
    Conventions of every format: docs/export.md.
    """
    from ..export import export_record

    def export(record: ShardRecord, shard: Shard, target: Path) -> list[Path]:
        return export_record(
            record,
            target,
            shard.channels,  # the density channels; an energy one follows them
            fmt=fmt,
            channel=channel,
            quantity=quantity,
            energy=shard.energy_channel,
        )

    write_each(path, index, out, export, json_out)
