"""--spacing (a fixed cube of grid_size × spacing Å) and the warning for voxels wider
than 2σ: summary, manifest, per-structure count, pgrid info."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pgrid_cli.cli import app
from pgrid_cli.runs.grid import COARSE_NOTE, GridOptions, grid_files
from pgrid_cli.store.rundir import describe
from pgrid_cli.store.shard import Shard

from .test_qm9 import METHANE, WATER


@pytest.fixture
def qm9(tmp_path: Path) -> Path:
    p = tmp_path / "m.xyz"
    p.write_text(METHANE + WATER)
    return p


def test_spacing_makes_a_fixed_cube(qm9: Path, tmp_path: Path) -> None:
    opts = GridOptions(grid_size=20, spacing=0.4, sigma=0.5)
    assert opts.resolve().recipe.box == "cube:8"
    summary = grid_files([str(qm9)], tmp_path / "out", opts, workers=0)
    assert summary.coarse_voxels == 0
    shard = Shard(tmp_path / "out" / "shard-00000.h5")
    for i in range(2):
        np.testing.assert_allclose(shard.voxel_size(i), [0.4, 0.4, 0.4])
        box = shard.box(i)
        atoms = shard.atoms(i)[1]
        centre = (atoms.min(0) + atoms.max(0)) / 2  # the cube is centred on the molecule
        np.testing.assert_allclose(box.origin + np.diag(box.axes) / 2, centre, atol=1e-9)
    assert shard.attrs["spacing"] == 0.4 and shard.attrs["box"] == "cube:8"
    d = describe(tmp_path / "out")
    assert d["voxel_min"] == pytest.approx(0.4) and d["voxel_max"] == pytest.approx(0.4)


def test_spacing_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="spacing must be a positive"):
        GridOptions(spacing=0.0).resolve()
    with pytest.raises(ValueError, match="one grid_size"):
        GridOptions(grid_size=(8, 8, 16), spacing=0.5).resolve()
    with pytest.raises(ValueError, match="do not give box"):
        GridOptions(spacing=0.5, box="tight").resolve()


def test_coarse_voxels_are_counted_and_warned(qm9: Path, tmp_path: Path) -> None:
    # 1.2 Å voxels for σ = 0.5 Å: wider than 2σ
    opts = GridOptions(grid_size=8, spacing=1.2, sigma=0.5)
    summary = grid_files([str(qm9)], tmp_path / "out", opts, workers=0)
    assert summary.coarse_voxels == 2 and summary.notes[COARSE_NOTE] == 2
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["notes"][COARSE_NOTE] == 2
    res = CliRunner().invoke(app, ["info", str(tmp_path / "out")])
    assert "voxel edge" in res.output and "undersampled" in res.output
    res = CliRunner().invoke(
        app,
        ["grid", str(qm9), "-o", str(tmp_path / "cli"), "--grid-size", "8", "--spacing", "1.2",
         "--workers", "0"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "wider than 2σ" in res.output
    # a fine grid: no warning; the fit box's voxel size varies per molecule
    summary = grid_files([str(qm9)], tmp_path / "fit", GridOptions(grid_size=24), workers=0)
    assert summary.coarse_voxels == 0
    d = describe(tmp_path / "fit")
    assert d["voxel_min"] < d["voxel_max"]
