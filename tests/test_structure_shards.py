"""Structures shards (``pgrid grid --store structures``) and the dataset that grids them."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from pgrid_cli import GridRecipe
from pgrid_cli.readers import iter_records
from pgrid_cli.readers.records import Rejection
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.store.rundir import ERRORS, MANIFEST, describe, write_index
from pgrid_cli.store.shard import Shard, ShardSet
from pgrid_cli.store.verify import verify_shard

from .conftest import SAMPLE
from .test_runs_grid import CORPUS, MIXED, contents

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from pgrid_cli.torch import StructureDataset, StructureShardDataset  # noqa: E402

OPTS = GridOptions(store="structures", shard_size=20)
CRYSTALS = sorted((SAMPLE / "crystals").glob("*.cif"))
INPUTS = [str(SAMPLE / "drugs.sdf"), *map(str, CRYSTALS[:4]), str(CORPUS)]
RECIPE = GridRecipe(sigma=0.5, grid_size=12, box="fit", channels="elements")


def run(inputs, out, options=OPTS, **kw):
    kw.setdefault("workers", 0)
    return grid_files(inputs, out, options, **kw)


def source_records(inputs) -> list:
    from pgrid_cli.readers import expand_inputs

    return [r for p in expand_inputs(inputs) for r in iter_records(p)]


def test_structures_shards_hold_every_record_as_read(tmp_path):
    out = tmp_path / "o"
    s = run(INPUTS, out)
    assert s.manifest and s.gridded == s.written
    records = source_records(INPUTS)
    good = [r for r in records if not isinstance(r, Rejection)]
    assert any(r.lattice is not None for r in good)  # crystals are in it
    ss = ShardSet(out)
    assert len(ss) == len(good) == s.written
    for rec, shard_rec in zip(good, ss, strict=True):
        assert (shard_rec.name, shard_rec.record) == (rec.name, rec.record)
        assert shard_rec.source == str(rec.source)
        assert_array_equal(shard_rec.numbers, rec.numbers)
        assert_array_equal(shard_rec.positions, rec.positions)
        if rec.lattice is None:
            assert shard_rec.lattice is None
        else:
            assert_array_equal(shard_rec.lattice, rec.lattice)
        assert shard_rec.grid is None and shard_rec.box is None
    lines = (out / ERRORS).read_text().splitlines()
    assert len(lines) == len(records) - len(good) == s.rejected > 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["parameters"]["content"] == "structures"
    shard = ss.shards[0]
    assert not shard.has_grids and shard.attrs["content"] == "structures"
    for call in (lambda: shard.grid(0), lambda: shard.box(0), lambda: shard.sigma):
        with pytest.raises(ValueError, match=r"structures shard .* has no"):
            call()
    assert shard.structure(0).name == good[0].name
    d = describe(out)
    assert not d["problems"] and d["n_structures"] == len(good)


def test_structures_runs_resume_slice_and_check_like_grid_runs(tmp_path):
    whole = tmp_path / "whole"
    run(MIXED, whole)
    out = tmp_path / "o"
    for i in (2, 0, 1):
        s = run(MIXED, out, shard_index=i, num_shards=3)
    assert s.manifest
    assert contents(out) == contents(whole)
    # A damaged shard fails its checksums; resume redoes it and keeps the others.
    victim = sorted(out.glob("shard-*.h5"))[1]
    with h5py.File(victim, "r+") as f:
        f["positions"][0, 0] += 1.0
    assert "fails its checksum" in verify_shard(victim, checksums=True).problem
    s = run(MIXED, out, resume=True)
    assert s.shards_written == 1 and s.shards_kept == len(list(out.glob("shard-*.h5"))) - 1
    assert contents(out) == contents(whole)
    # The gridding options are not part of a structures run.
    s = run(MIXED, out, GridOptions(store="structures", shard_size=20, grid_size=40), resume=True)
    assert s.shards_written == 0
    # all.h5 spans the shards and reads like one.
    write_index(out, vds=True)
    view = Shard(out / "all.h5")
    assert len(view) == len(ShardSet(out)) and not view.has_grids
    assert_array_equal(view.atoms(len(view) - 1)[1], ShardSet(out)[len(view) - 1].positions)


def test_cli_store_structures(tmp_path):
    from typer.testing import CliRunner

    from pgrid_cli.cli import app

    out = tmp_path / "o"
    drugs = str(SAMPLE / "drugs.sdf")
    args = ["grid", drugs, "-o", str(out), "--store", "structures", "--json", "--workers", "0"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["written"] == 126
    r = CliRunner().invoke(app, ["info", str(out)])
    assert r.exit_code == 0 and "structures only" in r.stdout
    r = CliRunner().invoke(app, ["grid", drugs, "-o", str(tmp_path / "x"), "--store", "voxels"])
    assert r.exit_code != 0 and "grids or structures" in r.output


def test_the_dataset_grids_what_the_recipe_grids(tmp_path):
    out = tmp_path / "o"
    run(INPUTS, out)
    ds = StructureShardDataset(out, RECIPE)
    good = [r for r in source_records(INPUTS) if not isinstance(r, Rejection)]
    assert len(ds) == len(good)
    for i in range(len(good)):  # molecules and crystals
        rec = good[i]
        expected = RECIPE.grid(rec.positions, rec.numbers, lattice=rec.lattice, weights=rec.weights)
        item = ds[i]
        assert_array_equal(item["grid"].numpy(), expected)
        assert (item["name"], item["record"]) == (rec.name, rec.record)
        assert item["periodic"] == (rec.lattice is not None)
    # The same items as a StructureDataset of the same structures, also augmented.
    ref = StructureDataset.from_structures(good, RECIPE, rotate=True, translate=1.0, seed=7)
    aug = StructureShardDataset(out, RECIPE, rotate=True, translate=1.0, seed=7)
    for i in (0, 3, len(good) - 1):
        assert_array_equal(aug[i]["grid"].numpy(), ref[i]["grid"].numpy())
        assert_array_equal(aug[i]["rotation"].numpy(), ref[i]["rotation"].numpy())
    with pytest.raises(ValueError, match="holds grids: read it with"):
        StructureShardDataset(_grid_run(tmp_path), RECIPE)


def _grid_run(tmp_path):
    out = tmp_path / "grids"
    grid_files([str(SAMPLE / "drugs.sdf")], out, GridOptions(grid_size=8), workers=0)
    return out


@pytest.mark.parametrize("render", ["item", "batch"])
def test_the_dataset_is_reproducible_across_worker_counts(tmp_path, render):
    out = tmp_path / "o"
    run([str(SAMPLE / "drugs.sdf")], out)
    ds = StructureShardDataset(out, RECIPE, rotate=True, translate=2.0, seed=3, render=render)
    ds.set_epoch(1)

    def batches(workers):
        loader = DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=ds.collate)
        return [b["grid"].numpy().copy() for b in loader]

    serial, forked = batches(0), batches(2)
    assert len(serial) == len(forked) == 8
    for a, b in zip(serial, forked, strict=True):
        assert_array_equal(a, b)
    ds.set_epoch(2)
    assert not np.array_equal(batches(0)[0], serial[0])


def test_targets_read_properties(tmp_path):
    out = tmp_path / "o"
    run([str(SAMPLE / "drugs.sdf")], out)
    files = sorted(out.glob("shard-*.h5"))
    for p in files:  # what the shards of a run with properties hold: properties/<name>
        with h5py.File(p, "r+") as f:
            n = len(f["record"])
            rec = f["record"][()]
            f.create_dataset("properties/energy", data=rec * 0.5)
            f.create_dataset("properties/dipole", data=np.stack([rec, rec + 1, rec + 2], 1))
    ds = StructureShardDataset(out, RECIPE, targets=["energy"])
    assert n > 0
    item = ds[25]
    assert item["targets"].dtype == torch.float32 and tuple(item["targets"].shape) == (1,)
    assert float(item["targets"][0]) == item["record"] * 0.5
    both = StructureShardDataset(out, RECIPE, targets=["energy", "dipole"])
    r = both[30]["record"]
    assert both[30]["targets"].tolist() == [r * 0.5, r, r + 1, r + 2]
    batch = both.collate([both[0], both[1]])
    assert tuple(batch["targets"].shape) == (2, 4)
    with pytest.raises(ValueError, match=r"no properties/charge \(its properties: dipole, en"):
        StructureShardDataset(out, RECIPE, targets=["charge"])
