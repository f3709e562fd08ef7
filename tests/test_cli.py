"""What every ``pgrid`` command shares: a light start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("scipy", "pgrid_cli.runs.bench", "pgrid_cli.invert", "matplotlib", "torch", "rdkit")

PROBE = """
import sys
from typer.testing import CliRunner
from pgrid_cli.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
assert result.exit_code == 0, result.output
print(" ".join(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


@pytest.mark.parametrize("args", [["--help"], ["grid", "--help"], ["info", "--help"]])
def test_help_imports_nothing_heavy(args):
    """Issue 11, item 6: ``pgrid --help`` and ``pgrid grid --help`` load no SciPy, no bench,
    no inversion, no plotting and no torch (they cost seconds of start-up)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------------- conventions
def _commands():
    from typer.main import get_command

    from pgrid_cli.cli import app

    group = get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}


COMMANDS = sorted(_commands())


@pytest.mark.parametrize("name", ["", *COMMANDS])
def test_help_is_plain(name):
    """Issue 15: help texts show plain metavars (N, X, Å, PATH, SELECTION, INPUTS…), never
    Typer's internal types (<bool>, <list[str]>) or its {argument} notation."""
    from typer.testing import CliRunner

    from pgrid_cli.cli import app

    r = CliRunner().invoke(app, [*([name] if name else []), "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    for bad in ("<bool>", "<str>", "<int>", "<float>", "<path>", "<list[", "{", "}"):
        assert bad not in r.output, f"pgrid {name} --help shows {bad!r}"


@pytest.mark.parametrize("name", COMMANDS)
def test_options_mean_the_same_everywhere(name):
    """-o is --out; --json is a flag; --strict has --no-strict; --workers takes 0 (this
    process); --index takes a selection string; -q is --quiet."""
    cmd = _commands()[name]
    params = {opt: p for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    if "-o" in params:
        assert "--out" in params["-o"].opts
    if "--json" in params:
        assert params["--json"].is_flag
    if "--strict" in params:
        assert "--no-strict" in params["--strict"].secondary_opts
    if "--workers" in params:
        assert params["--workers"].min == 0
    if "--index" in params:
        assert params["--index"].type_descriptor.annotation in (str, "str | None") or (
            "-i" in params["--index"].opts
        )
        assert "SELECTION" == params["--index"].metavar
    if "-q" in params:
        assert "--quiet" in params["-q"].opts
    assert "--output" not in params  # one spelling of the main output: -o/--out


@pytest.mark.parametrize(
    "args",
    [["grid", "--nope"], ["grid"], ["show", "x.h5", "--level"], ["nope"]],
)
def test_usage_errors_are_one_line(args, tmp_path):
    """Issue 15: the command line's own usage errors come in pgrid's style too: one line
    starting 'error:', exit 2, no box and no traceback."""
    out = subprocess.run(
        [sys.executable, "-c", "from pgrid_cli.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert "╭" not in out.stderr and "Traceback" not in out.stderr
