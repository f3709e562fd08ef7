"""Channels that fit the chemistry: channels="auto", exclude, and the count of atoms
that went to the catch-all channel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pgrid_cli.cli import app
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.store.shard import Shard, ShardSet

from .test_properties import sdf_record
from .test_qm9 import METHANE

SILANE = "5\nname=silane\nSi 0 0 0\nH 0.85 0.85 0.85\nH -0.85 -0.85 0.85\nH -0.85 0.85 -0.85\nH 0.85 -0.85 -0.85\n"  # noqa: E501


@pytest.fixture
def inputs(tmp_path: Path) -> list[str]:
    (tmp_path / "a.xyz").write_text(METHANE + SILANE)
    (tmp_path / "b.sdf").write_text(sdf_record("w", {}))
    return [str(tmp_path / "a.xyz"), str(tmp_path / "b.sdf")]


def test_auto_channels_are_the_elements_present(inputs: list[str], tmp_path: Path) -> None:
    s = grid_files(inputs, tmp_path / "out", GridOptions(grid_size=8, channels="auto"), workers=0)
    assert s.written == 3 and s.rejected == 0
    shard = Shard(tmp_path / "out" / "shard-00000.h5")
    assert shard.attrs["channels"] == ["H", "C", "O", "Si"]  # by atomic number
    assert shard.attrs["channels_auto"]
    grid = shard.grid(1)  # silane: Si and H only
    assert grid[1].sum() == 0 and grid[3].sum() > 0.9
    # same inputs, same channels, same run: resume keeps everything
    again = grid_files(
        inputs, tmp_path / "out", GridOptions(grid_size=8, channels="auto"), workers=0, resume=True
    )
    assert again.shards_kept == 1


def test_exclude_hydrogen(inputs: list[str], tmp_path: Path) -> None:
    opts = GridOptions(grid_size=8, channels="C,O,Si", exclude="H")  # H: no channel, no rejection
    s = grid_files(inputs, tmp_path / "out", opts, workers=0)
    assert s.written == 3 and s.rejected == 0
    shard = Shard(tmp_path / "out" / "shard-00000.h5")
    assert shard.attrs["exclude"] == ["H"]
    assert len(shard.atoms(0)[0]) == 5  # the atoms are all kept …
    assert shard.grid(0).sum() == pytest.approx(1.0, abs=1e-3)  # … only C is gridded
    assert shard.captured(0) == pytest.approx(1.0, abs=1e-3)
    # the preset "elements" simply loses H; an explicit list naming H is an error
    e = GridOptions(grid_size=8, exclude="H").resolve()
    assert "H" not in e.recipe.spec.names and "C" in e.recipe.spec.names
    with pytest.raises(ValueError, match="also has a channel"):
        GridOptions(channels="C,H", exclude="H").resolve()
    with pytest.raises(ValueError, match="not a chemical element"):
        GridOptions(exclude="Hx").resolve()
    # without exclude, an element with no channel is still a rejection
    r = grid_files(inputs, tmp_path / "rej", GridOptions(grid_size=8, channels="C,O,Si"), workers=0)
    assert r.rejected == 3 and r.rejected_by_kind == {"unknown element": 3}


def test_all_atoms_excluded_is_a_rejection(tmp_path: Path) -> None:
    (tmp_path / "h2.xyz").write_text("2\nname=h2\nH 0 0 0\nH 0.74 0 0\n")
    s = grid_files(
        [str(tmp_path / "h2.xyz")], tmp_path / "o", GridOptions(grid_size=8, exclude="H"), workers=0
    )
    assert s.rejected_by_kind == {"empty structure": 1}


def test_catch_all_counted_by_element(inputs: list[str], tmp_path: Path) -> None:
    opts = GridOptions(grid_size=8, channels="H,C,O,*")
    s = grid_files(inputs, tmp_path / "out", opts, workers=0)
    assert s.catch_all == {"Si": 1}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["notes"]["atoms of Si in the catch-all channel *"] == 1
    res = CliRunner().invoke(
        app, ["grid", *inputs, "-o", str(tmp_path / "cli"), "--grid-size", "8", "--workers", "0",
              "--channels", "auto", "--exclude", "H", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["catch_all"] == {}
    assert ShardSet(tmp_path / "cli").shards[0].attrs["channels"] == ["C", "O", "Si"]
    np.testing.assert_array_equal(
        Shard(tmp_path / "cli" / "shard-00000.h5").attrs["exclude"], ["H"]
    )


def test_invert_scores_only_the_gridded_atoms(tmp_path: Path) -> None:
    (tmp_path / "m.xyz").write_text(METHANE)
    opts = GridOptions(grid_size=24, channels="C", exclude="H", sigma=0.4)
    grid_files([str(tmp_path / "m.xyz")], tmp_path / "o", opts, workers=0)
    from pgrid_cli.invert.sources import open_grids

    item = open_grids(tmp_path / "o").item(0)
    assert list(item.ref_numbers) == [6] and item.ref_positions.shape == (1, 3)
