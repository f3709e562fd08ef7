"""Every Python example in README.md and docs/*.md runs as written.

The blocks of one file run in order in one namespace (later blocks use what earlier ones
made), in a scratch directory that holds what the docs assume a user has: ``sample_data/``,
``molecules.sdf``, and the output of ``pgrid grid`` in ``out/`` and ``out/drugs``. Names
the prose leaves to the reader (a molecule's ``positions``/``numbers``, a loss
``some_function_of``) are given here.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROOT, SAMPLE

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Modules whose docstring literal blocks are not Python (what they show instead).
NOT_PYTHON = {"pgrid_cli/invert/sources.py": "the JSON metadata file"}
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pgrid_cli.runs.grid import GridOptions, grid_files

    d = tmp_path_factory.mktemp("docs")
    (d / "sample_data").symlink_to(SAMPLE)
    shutil.copy(SAMPLE / "drugs.sdf", d / "molecules.sdf")
    options = GridOptions(grid_size=16)
    grid_files([SAMPLE / "drugs.sdf"], d / "out" / "drugs", options, workers=0)
    for f in (d / "out" / "drugs").iterdir():  # `out` itself: the same run, another name
        if f.is_file():
            shutil.copy(f, d / "out" / f.name)
    (d / "out" / "slices").mkdir()
    for f in (d / "out" / "drugs" / "slices").iterdir():
        shutil.copy(f, d / "out" / "slices" / f.name)
    return d


def test_every_doc_with_python_has_blocks_found() -> None:
    """The extraction itself works (a file named here must yield its blocks)."""
    assert len(_blocks(ROOT / "README.md")) >= 2


@pytest.mark.parametrize(
    "path", [p for p in DOCS if _blocks(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_python_examples_run(path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if "torch" in path.read_text() and "from pgrid_cli.torch" in path.read_text():
        pytest.importorskip("torch")
    from ase.build import molecule

    benzene = molecule("C6H6")
    namespace: dict[str, object] = {
        "positions": benzene.positions.copy(),
        "numbers": benzene.numbers.copy(),
        "some_function_of": lambda g: (g**2).sum(),
        "np": np,
    }
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("PGRID_DOC_TEST", "1")
    for k, code in enumerate(_blocks(path)):
        try:
            exec(compile(code, f"{path.name} block {k}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{path.name}, python block {k} fails: {exc!r}") from exc
    assert os.getcwd() == str(workdir)


def _docstring_blocks(path: Path) -> list[str]:
    """The indented literal blocks after ``::`` in a module's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    blocks = []
    for m in re.finditer(r"::\n\n((?:    .*\n|\n)+)", doc + "\n"):
        blocks.append(textwrap.dedent(m.group(1)))
    return blocks


MODULES = [
    p
    for p in sorted((ROOT / "pgrid_cli").rglob("*.py"))
    if _docstring_blocks(p) and str(p.relative_to(ROOT)) not in NOT_PYTHON
]


def test_docstring_examples_are_found() -> None:
    assert {"pgrid_cli/__init__.py", "pgrid_cli/core/recipe.py"} <= {
        str(p.relative_to(ROOT)) for p in MODULES
    }


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docstring_examples_run(path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ase.build import molecule

    from pgrid_cli import GridRecipe, Structure
    from pgrid_cli.store import ShardSet

    if "pgrid_cli.torch" in path.read_text():
        torch = pytest.importorskip("torch")
        namespace: dict[str, object] = {"DataLoader": torch.utils.data.DataLoader}
    else:
        namespace = {}
    benzene = molecule("C6H6")
    recipe = GridRecipe(grid_size=16, channels="H,C")
    shards = ShardSet(workdir / "out")
    shard, j = shards.locate(3)
    namespace.update(
        positions=benzene.positions.copy(),
        numbers=benzene.numbers.copy(),
        structures=[Structure(benzene.numbers, benzene.positions)] * 2,
        xyz=benzene.positions.copy(),
        z=benzene.numbers.copy(),
        box=recipe.box_for(benzene.positions),
        g=recipe.grid(benzene.positions, benzene.numbers),
        shard=shard,
        record=shard[j],
    )
    monkeypatch.chdir(workdir)
    for k, code in enumerate(_docstring_blocks(path)):
        try:
            exec(compile(code, f"{path.name} docstring block {k}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{path}: docstring block {k} fails: {exc!r}") from exc
