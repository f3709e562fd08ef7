"""Tile runs of ``pgrid grid`` (runs/gridtiles.py): one record per tile with its parent,
place and focus; the stored focus parts rebuild each parent grid; resumable, verified."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from pgrid_cli import GridRecipe, Structure
from pgrid_cli.cli import app
from pgrid_cli.core.errors import ParameterError
from pgrid_cli.core.kernel import grid
from pgrid_cli.core.tiles import plan_tiles
from pgrid_cli.readers import iter_records
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.runs.gridtiles import TILE_ID_STRIDE
from pgrid_cli.store.shard import Shard
from pgrid_cli.store.verify import verify_shard

from .conftest import SAMPLE

INPUTS = [SAMPLE / "crystals" / "TiO2_rutile.cif", SAMPLE / "small_molecules.xyz"]


def _parents() -> list[Structure]:
    return [s for p in INPUTS for s in iter_records(p) if isinstance(s, Structure)][:3]


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tiles") / "out"
    opts = GridOptions(
        spacing=0.45, tiles=6, context=3, sigma=0.5, channels="single", lossless=True
    )
    summary = grid_files([str(p) for p in INPUTS], out, opts, workers=0)
    return out, opts, summary


def test_each_tile_is_a_record_and_the_focus_parts_rebuild_the_parent(tiled):
    out, _opts, summary = tiled
    recipe = GridRecipe(12, 0.5, "single")
    shard = Shard(out / "shard-00000.h5")
    assert shard.attrs["tile"] == 6 and shard.attrs["tile_context"] == 3
    assert shard.grid_shape == (12, 12, 12)
    ids = shard.file["id"][:]
    assert len(np.unique(ids)) == len(shard)
    parent_ids = np.array([shard.properties(i)["parent_id"] for i in range(len(shard))])
    assert_allclose(ids // TILE_ID_STRIDE, parent_ids)
    assert int(shard.attrs["n_items"]) == summary.read == len(np.unique(parent_ids))
    for item, s in enumerate(_parents()):
        plan = plan_tiles(s, 0.45, 6, 3, crystal_view="cell")
        mine = np.flatnonzero(parent_ids == item)
        assert len(mine) == plan.n_tiles
        truth = grid(s.positions, plan.parent, 0.5, channels=recipe.spec.assign(s.numbers))
        rebuilt = np.full_like(truth, np.nan)
        for i in mine:
            p = shard.properties(i)
            x0, x1, y0, y1, z0, z1 = p["focus"].astype(int)
            assert tuple(p["parent_shape"].astype(int)) == plan.parent.shape
            assert tuple(p["focus"].astype(int)) == sum(
                plan.focus(tuple(p["tile_index"].astype(int))), ()
            )
            rebuilt[:, x0:x1, y0:y1, z0:z1] = shard.grid(i)[:, 3:9, 3:9, 3:9]
            assert_allclose(
                shard.box(i).axes, plan.tile_box(tuple(p["tile_index"].astype(int))).axes
            )
        assert not np.isnan(rebuilt).any()  # the focus regions cover the parent grid
        assert_allclose(rebuilt, truth, atol=1e-6, rtol=0)
        if s.lattice is not None:
            assert plan.parent.periodic
            assert rebuilt.sum() == pytest.approx(len(s), rel=1e-5)


def test_tile_shards_verify_and_resume(tiled):
    out, opts, summary = tiled
    check = verify_shard(out / "shard-00000.h5", deep=True)
    assert not check.problem, check.problem
    again = grid_files([str(p) for p in INPUTS], out, opts, workers=0, resume=True)
    assert again.shards_kept == 1 and again.read == summary.read == again.written


def test_tile_options():
    with pytest.raises(ParameterError, match="tiles needs spacing"):
        GridOptions(tiles=8).resolve()
    with pytest.raises(ParameterError, match="context"):
        GridOptions(tiles=8, context=-1, spacing=0.5).resolve()
    with pytest.raises(ParameterError, match="crystal_view cube:L"):
        GridOptions(tiles=8, spacing=0.5, crystal_view="cube").resolve()
    settings = GridOptions(tiles=8, context=2, spacing=0.5, crystal_view="cube:20").resolve()
    assert settings.recipe.shape == (12, 12, 12) and settings.tiles == (8, 2)
    assert settings.parameters()["tiles"] == [8, 2]


def test_command_line(tmp_path):
    out = tmp_path / "o"
    args = ["grid", str(SAMPLE / "crystals" / "Si.cif"), "-o", str(out), "--tiles", "4"]
    res = CliRunner().invoke(app, [*args, "--workers", "0"])
    assert res.exit_code == 2 and "--tiles needs --spacing" in res.output
    res = CliRunner().invoke(
        app, [*args, "--context", "1", "--spacing", "0.6", "--crystal-view", "cube:8", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    shard = Shard(out / "shard-00000.h5")
    # cube:8 at 0.6 Å: 14 voxels, rounded up to 16 (4 × 4 tiles per axis): 64 records.
    assert len(shard) == 64 and shard.attrs["crystal_view"] == "cube:8"
    assert_allclose(shard.voxel_size(0), [0.6, 0.6, 0.6])
