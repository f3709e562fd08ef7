"""The package's layers (docs/architecture.md): imports run one way.

core ← readers, store ← invert, runs ← torch, cli. Each layer may import only the
layers below it; the checks read every module's import statements (``ast``), so a new
import that crosses a boundary fails here with the file and the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

PACKAGE = ROOT / "pgrid_cli"

#: What each part of the package may import from the rest of it (besides itself and the
#: native ``_core``). ``plot`` and ``export`` are output formats over core and store.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "readers": {"core"},
    "store": {"core", "readers"},
    "invert": {"core", "readers", "store"},
    "typers": {"core", "readers"},
    "runs": {"core", "readers", "store", "invert", "typers"},
    "plot": {"core", "readers", "store"},
    "export": {"core", "readers", "store"},
    "torch": {"core", "readers", "store", "typers"},
    "cli": {"core", "readers", "store", "invert", "runs", "plot", "export", "typers"},
}


def _part(module: str) -> str | None:
    """The top-level part of ``pgrid_cli.<part>...`` (None for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pgrid_cli" else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every pgrid_cli import in ``path``."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1])  # the package the module is in (for __init__: itself)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            if node.module:
                names = [".".join([*base, node.module])]
            else:  # "from .. import x": x is a module of that package (or a name in it)
                names = [".".join([*base, a.name]) for a in node.names]
            out += [(node.lineno, n) for n in names if n.startswith("pgrid_cli")]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("pgrid_cli")]
    return out


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    here = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem
    if here not in ALLOWED:  # the package root re-exports the public API
        return
    bad = []
    for line, module in _imports(path):
        target = _part(module)
        if target in (None, here, "_core"):
            continue
        if target not in ALLOWED[here]:
            bad.append(f"{rel}:{line} imports {module} ({here} may import {sorted(ALLOWED[here])})")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_crossing(tmp_path: Path) -> None:
    """The check itself can fail: a torch module importing the run orchestrators."""
    fake = PACKAGE / "torch" / "_probe_for_test.py"
    fake.write_text("from ..runs.grid import grid_files\n")
    try:
        found = [m for _, m in _imports(fake)]
    finally:
        fake.unlink()
    assert found == ["pgrid_cli.runs.grid"]
    assert "runs" not in ALLOWED["torch"]


def test_no_module_is_a_hidden_hub() -> None:
    """No module over 600 lines (docs/architecture.md says why a module would be)."""
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, long
