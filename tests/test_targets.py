"""Training targets from stored properties (pgrid_cli.torch.targets): through
ShardDataset (shards of pgrid grid) and StructureDataset (the readers' properties), the
three policies for missing values, and per-atom targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pgrid_cli import GridRecipe
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.torch import ShardDataset, StructureDataset

from .test_qm9 import METHANE, WATER

#: A third structure without a gap (nor charges): an extended-XYZ frame in another file.
NO_GAP = "3\nname=gdb_4 homo=-0.25\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"


@pytest.fixture
def qm9_dir(tmp_path: Path) -> Path:
    d = tmp_path / "qm9"
    d.mkdir()
    (d / "a.xyz").write_text(METHANE + WATER)
    (d / "b.xyz").write_text(NO_GAP)
    return d


@pytest.fixture
def shards(qm9_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    grid_files([str(qm9_dir)], out, GridOptions(grid_size=8, shard_size=2), workers=0)
    return out


def test_shard_dataset_targets_error_by_default(shards: Path) -> None:
    with pytest.raises(ValueError, match="no value for a target"):
        ShardDataset(shards, targets=["gap"])
    with pytest.raises(KeyError, match="nope"):
        ShardDataset(shards, targets=["nope"], nan_targets="mask")
    with pytest.raises(ValueError, match="not a number"):
        ShardDataset(shards, targets=["smiles_gdb"], nan_targets="mask")[0]
    with pytest.raises(ValueError, match="nan_targets"):
        ShardDataset(shards, targets=["gap"], nan_targets="drop")  # type: ignore[arg-type]


def test_shard_dataset_skip_and_loader(shards: Path) -> None:
    data = ShardDataset(shards, targets=["gap", "U0"], nan_targets="skip")
    assert len(data) == 2
    loader = DataLoader(data, batch_size=2, collate_fn=data.collate)
    batch = next(iter(loader))
    assert batch["grid"].shape[0] == 2
    assert batch["targets"].dtype == torch.float32 and batch["targets"].shape == (2, 2)
    np.testing.assert_allclose(batch["targets"][:, 0], [0.5048, 0.3615], rtol=1e-6)
    assert batch["name"] == ["gdb_1", "gdb_3"]
    assert batch["id"].tolist() == [0, 1]


def test_shard_dataset_mask_and_atom_targets(shards: Path) -> None:
    data = ShardDataset(shards, targets=["gap"], atom_targets=["charges"], nan_targets="mask")
    assert len(data) == 3
    item = data[2]  # the third record, in the second shard
    assert item["targets"].tolist() == [0.0] and item["targets_mask"].tolist() == [False]
    batch = data.collate([data[0], data[1], data[2]])
    assert batch["targets_mask"].tolist() == [[True], [True], [False]]
    assert batch["atom_targets"].shape == (11, 1)  # 5 + 3 + 3 atoms
    assert batch["offsets"].tolist() == [0, 5, 8, 11]
    np.testing.assert_allclose(batch["atom_targets"][0, 0], -0.535689, rtol=1e-6)


def test_structure_dataset_targets(qm9_dir: Path) -> None:
    recipe = GridRecipe(grid_size=8)
    with pytest.raises(ValueError, match="no value for a target"):
        StructureDataset.from_files(qm9_dir, recipe, targets=["gap"])
    with pytest.warns(UserWarning, match="1 record"):
        data = StructureDataset.from_files(qm9_dir, recipe, targets="gap,homo", nan_targets="skip")
    assert len(data) == 2 and data.rejections[0].name == "gdb_4"
    batch = data.collate([data[0], data[1]])
    assert batch["targets"].shape == (2, 2)
    np.testing.assert_allclose(batch["targets"][:, 1], [-0.3877, -0.2928], rtol=1e-6)
    masked = StructureDataset.from_files(
        qm9_dir, recipe, targets=["gap"], atom_targets=["charges"], nan_targets="mask"
    )
    assert len(masked) == 3
    item = masked[2]
    assert item["targets_mask"].tolist() == [False] and item["atom_targets"].shape == (3, 1)
    assert not item["atom_targets_mask"].any()  # no charges either
    assert masked[0]["atom_targets_mask"].all()


def test_structure_dataset_rejects_string_targets(qm9_dir: Path) -> None:
    with pytest.raises(ValueError, match="not a number"):
        StructureDataset.from_files(qm9_dir, GridRecipe(grid_size=8), targets=["smiles_gdb"])


def test_same_targets_from_both_datasets(shards: Path, qm9_dir: Path) -> None:
    a = ShardDataset(shards, targets=["gap"], nan_targets="mask")
    b = StructureDataset.from_files(
        qm9_dir, GridRecipe(grid_size=8), targets=["gap"], nan_targets="mask"
    )
    for i in range(3):
        assert a[i]["targets"].tolist() == b[i]["targets"].tolist()
        assert a[i]["targets_mask"].tolist() == b[i]["targets_mask"].tolist()
