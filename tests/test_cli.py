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
