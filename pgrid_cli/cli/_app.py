"""The Typer application and what every command shares: error reporting and exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from ..core.errors import ParameterError

#: Exit codes (documented in the README).
EXIT_OK = 0
EXIT_REJECTED = 1  # some records were rejected and --strict was given
EXIT_USAGE = 2  # bad options or unusable input (as for Typer's own usage errors)
EXIT_NOTHING = 3  # no record could be processed at all

app = typer.Typer(
    name="pgrid",
    help="Exact, fast 3D Gaussian density grids of molecules and crystals for deep learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

err_console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one clear line to stderr and exit non-zero (no traceback)."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def flag(parameter: str) -> str:
    """The command-line spelling of a library parameter: ``shard_index`` → ``--shard-index``."""
    return "--" + parameter.replace("_", "-")


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's ValueError / OSError into one line and exit code 2; parameters
    named in a :class:`~pgrid_cli.core.errors.ParameterError` are spelled as flags."""
    try:
        yield
    except ParameterError as exc:
        fail(exc.render(flag))
    except (ValueError, OSError, KeyError) as exc:
        msg = str(exc) if not isinstance(exc, KeyError) else f"missing {exc}"
        fail(msg or type(exc).__name__)


def _version_callback(value: bool) -> None:
    if value:
        from ..core import kernel_info
        from ..core.version import __version__

        try:
            info = kernel_info()
            isa = f"{info['isa']} (available: {', '.join(info['available_isas'])})"
        except ValueError as exc:  # e.g. a bad PGRID_ISA
            isa = f"unusable: {exc}"
        typer.echo(f"pgrid {__version__}, kernel ISA {isa}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and the kernel's instruction set, then exit.",
        ),
    ] = False,
) -> None:
    """Exact, fast 3D Gaussian density grids of molecules and crystals for deep learning."""

