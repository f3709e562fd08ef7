"""The options every command spells the same way.

``-o/--out`` is a command's main output; ``--json`` prints a machine-readable summary on
stdout (files are written only by named options such as ``--report`` or ``--csv``);
``--strict/--no-strict`` decides whether rejected items fail the run; ``--workers N``
counts processes, 0 meaning "in this process"; ``--index`` takes the same selection syntax
everywhere (``3``, ``0:10``, ``5,7,-1``, ``::2``); ``-q/--quiet`` silences progress and
tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..readers.registry import formats

#: The selection syntax of ``--index``, shown in every command's help.
INDEX_SYNTAX = "3, 0:10, 5,7,-1 or ::2 (Python slices, comma-separated; negative from the end)"


def out(help: str, required: bool = True) -> Any:
    """``-o/--out PATH``: the command's main output."""
    return Annotated[
        Path if required else Path | None,
        typer.Option("--out", "-o", help=help, show_default=False, metavar="PATH"),
    ]


def index(what: str) -> Any:
    """``-i/--index SELECTION``."""
    return Annotated[
        str | None,
        typer.Option("--index", "-i", help=f"{what}: {INDEX_SYNTAX}.", metavar="SELECTION"),
    ]


JSON = Annotated[
    bool,
    typer.Option("--json", help="Print a machine-readable summary as JSON on stdout."),
]
FORMAT = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="Read every input as this format (default: from its name): "
        + ", ".join(formats())
        + ".",
        metavar="FORMAT",
    ),
]
QUIET = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no tables.")]


def strict(help: str) -> Any:
    """``--strict/--no-strict``."""
    return Annotated[bool, typer.Option("--strict/--no-strict", help=help)]


def workers(help: str) -> Any:
    """``--workers N``: processes; 0 runs the work in this process."""
    return Annotated[
        int | None,
        typer.Option(help=f"{help} 0 runs everything in this process.", min=0, metavar="N"),
    ]
