"""The Typer application and what every command shares: error reporting and exit codes."""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # Typer ≥ 0.22 carries its own copy of click
    from typer import _click as click
except ImportError:  # pragma: no cover - older Typer on the real click
    import click  # type: ignore[no-redef]

from ..core.errors import ParameterError

#: Exit codes (documented in the README).
EXIT_OK = 0
EXIT_REJECTED = 1  # some records were rejected and --strict was given
EXIT_USAGE = 2  # bad options or unusable input (as for Typer's own usage errors)
EXIT_NOTHING = 3  # no record could be processed at all

#: Metavars by value type, for options that do not name their own (an option with a unit
#: names it, e.g. ``Å``).
_METAVARS: dict[Any, str] = {bool: "", int: "N", float: "X", str: "TEXT", Path: "PATH"}

err_console = Console(stderr=True, highlight=False)


def _value_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (list, tuple) and args:
        return _value_type(args[0])
    return _value_type(args[0]) if len(args) == 1 else annotation


def _no_type(ctx: Any = None) -> None:  # noqa: ARG001 (Typer passes the context)
    return None


def _tidy(command: Any) -> Any:
    """Plain metavars in help: none for flags, ``N``/``X``/``TEXT``/``PATH`` for values
    (an option's own metavar, such as ``Å``, wins), ``NAME…`` for repeated arguments."""
    for param in command.get_params(click.Context(command)):
        descriptor = getattr(param, "type_descriptor", None)
        if param.metavar is not None or descriptor is None:
            continue
        if descriptor.parameter_info.__class__.__name__ == "ArgumentInfo":
            # Plain "PATH" / "INPUT…" instead of Typer's "{path}" and a type column.
            label = (param.metavar or param.name.upper()) + ("…" if param.nargs != 1 else "")
            param._usage_display_name = lambda label=label: label
            param.display_type_rich = _no_type
            continue
        base = _METAVARS.get(_value_type(descriptor.annotation))
        if base is not None:
            param.metavar = base
    if command.help:  # docstrings wrap at 92 columns; the terminal wraps its own way
        command.help = "\n\n".join(" ".join(p.split()) for p in command.help.split("\n\n"))
    return command


class PgridGroup(TyperGroup):
    """The ``pgrid`` command group: one error style (pgrid's one line, exit 2) for the
    command line's own usage errors too, and plain metavars in every help text."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        return None if cmd is None else _tidy(cmd)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        _tidy(self)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            if not standalone_mode:
                raise
            typer.echo(exc.format_message())
            sys.exit(0)
        except click.ClickException as exc:
            if not standalone_mode:
                raise
            err_console.print(f"[bold red]error:[/] {exc.format_message()}", soft_wrap=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            err_console.print("[bold red]error:[/] aborted")
            sys.exit(1)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(
    cls=PgridGroup,
    name="pgrid",
    help="Exact, fast 3D Gaussian density grids of molecules and crystals for deep learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


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
