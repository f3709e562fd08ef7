"""Batched fetching (pgrid_cli.torch.batching): a DataLoader batch of StructureDataset /
StructureShardDataset fetched with ``__getitems__`` and gridded in one kernel call is bit
for bit the collated per-item path (``collate([ds[i] for i in batch])``, the independent
truth here: one ``grid`` call and one ``Box`` per item), with and without augmentation,
in the main process and in workers; and reused output buffers keep their contract."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from pgrid_cli import GridRecipe
from pgrid_cli.readers import Rejection, iter_records
from pgrid_cli.runs.grid import GridOptions, grid_files

from .conftest import SAMPLE
from .test_qm9 import METHANE, WATER

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from pgrid_cli.torch import (  # noqa: E402
    Augmentation,
    StructureDataset,
    StructureShardDataset,
    batching,
    collate,
)
from pgrid_cli.torch.batching import BatchBuffers, ItemBatch  # noqa: E402

RECIPE = GridRecipe(sigma=0.5, grid_size=12, box="fit", channels="elements")
CRYSTALS = sorted((SAMPLE / "crystals").glob("*.cif"))[:3]
NO_GAP = "3\nname=gdb_4 homo=-0.25\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"


@pytest.fixture(scope="module")
def mixed() -> list:
    """40 drug molecules and three crystals (periodic boxes, never rotated), interleaved."""
    drugs = [r for r in iter_records(SAMPLE / "drugs.sdf") if not isinstance(r, Rejection)]
    crystals = [r for p in CRYSTALS for r in iter_records(p) if not isinstance(r, Rejection)]
    assert crystals
    items = drugs[:40]
    for k, c in enumerate(crystals):
        items.insert(7 + 11 * k, c)
    return items


def assert_same_batch(got: dict, want: dict) -> None:
    """Same keys in the same order, tensors of the same dtype and shape, equal bit for bit."""
    assert list(got) == list(want)
    for key, w in want.items():
        g = got[key]
        if isinstance(w, torch.Tensor):
            assert g.dtype == w.dtype and g.shape == w.shape, key
            assert g.numpy().tobytes() == w.numpy().tobytes(), key
        else:
            assert g == w, key


def per_item(ds: StructureDataset, indices) -> dict:
    """The truth: every item gridded on its own (``__getitem__``), then collated."""
    return ds.collate([ds[int(i)] for i in indices])


def order(n: int, batch: int) -> list[list[int]]:
    return [list(b) for b in np.array_split(np.random.default_rng(1).permutation(n), n // batch)]


# ------------------------------------------------------------------------ augmentation
def test_batched_draws_are_the_per_item_transforms():
    for rotate, translate in ((True, 1.5), (True, 0.0), (False, 2.0), (False, 0.0)):
        aug = Augmentation(rotate, translate, seed=9)
        idx = [0, 5, 5, 17, 1000]
        periodic = [False, True, False, False, True]
        rot, trans = aug.draws(idx, 3, periodic)
        for k, i in enumerate(idx):
            xf = aug.transform(i, 3, None, periodic[k])
            assert rot[k].tobytes() == xf.rotation.tobytes()
            assert trans[k].tobytes() == xf.translation.tobytes()
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3))  # proper rotations


# ------------------------------------------------------------------------ StructureDataset
@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("render", ["item", "batch"])
def test_batches_equal_the_per_item_path_bitwise(mixed, rotate, render):
    ds = StructureDataset.from_structures(
        mixed, RECIPE, rotate=rotate, translate=1.0 if rotate else 0.0, seed=4, render=render
    )
    ds.set_epoch(3)
    batches = order(len(ds), 8)
    for indices in batches:
        assert_same_batch(ds.collate(ds.__getitems__(indices)), per_item(ds, indices))
    # Duplicates and negative indices, as a sampler may give them.
    dup = [3, -1, 3, 0]
    assert_same_batch(collate(ds.__getitems__(dup)), per_item(ds, [3, len(ds) - 1, 3, 0]))


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_batches_are_per_item_batches_with_workers(mixed, workers):
    ds = StructureDataset.from_structures(mixed, RECIPE, rotate=True, translate=1.0, seed=8)
    ds.set_epoch(1)
    batches = order(len(ds), 6)
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=ds.collate, num_workers=workers)
    got = list(loader)
    assert len(got) == len(batches)
    for b, indices in zip(got, batches, strict=True):
        assert_same_batch(b, per_item(ds, indices))


def test_targets_and_masks_are_batched_like_items(tmp_path: Path):
    qm9 = tmp_path / "qm9"
    qm9.mkdir()
    (qm9 / "a.xyz").write_text(METHANE + WATER)
    (qm9 / "b.xyz").write_text(NO_GAP)
    ds = StructureDataset.from_files(
        qm9,
        GridRecipe(grid_size=8),
        targets=["gap", "homo"],
        atom_targets=["charges"],
        nan_targets="mask",
        target=lambda s: [len(s), 2.0 * len(s)],
        rotate=True,
        seed=2,
    )
    assert len(ds) == 3
    want = per_item(ds, [2, 0, 1])
    assert {"target", "targets", "targets_mask", "atom_targets", "atom_targets_mask"} <= set(want)
    for workers in (0, 2):
        loader = DataLoader(
            ds, batch_sampler=[[2, 0, 1]], collate_fn=ds.collate, num_workers=workers
        )
        assert_same_batch(next(iter(loader)), want)


def test_a_pickled_dataset_batches_the_same(mixed):
    """What a ``spawn`` worker gets: the dataset pickled (its arrays then carry NumPy
    dtype instances of their own, which the native call must still take)."""
    ds = StructureDataset.from_structures(mixed, RECIPE, rotate=True, seed=3, buffers=2)
    clone = pickle.loads(pickle.dumps(ds))
    indices = [9, 2, 30, 7]
    assert_same_batch(clone.collate(clone.__getitems__(indices)), per_item(ds, indices))


def test_dataloader_calls_getitems_not_getitem(mixed, monkeypatch):
    calls = {"items": 0, "batches": 0}
    per_item_path = StructureDataset.__getitem__

    def counted(self, index):
        calls["items"] += 1
        return per_item_path(self, index)

    monkeypatch.setattr(StructureDataset, "__getitem__", counted)

    class Counting(StructureDataset):
        def __getitems__(self, indices):
            calls["batches"] += 1
            return super().__getitems__(indices)

    ds = Counting.from_structures(mixed[:20], RECIPE)
    batches = list(DataLoader(ds, batch_size=8, collate_fn=ds.collate))
    assert calls == {"items": 0, "batches": 3}
    assert [len(b["grid"]) for b in batches] == [8, 8, 4]
    # Any other collate function gets the items one by one, as before.
    got = DataLoader(ds, batch_size=8, collate_fn=list)
    first = next(iter(got))
    assert isinstance(first, list) and len(first) == 8 and calls["items"] == 8
    assert isinstance(ds.__getitems__([0, 1]), ItemBatch)


def test_a_subclass_that_makes_its_own_items_keeps_them(mixed):
    class Tagged(StructureDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            item["tag"] = 2 * item["index"]
            return item

    ds = Tagged.from_structures(mixed[:12], RECIPE, rotate=True, seed=5)
    batch = next(iter(DataLoader(ds, batch_size=6, collate_fn=ds.collate)))
    assert batch["tag"].tolist() == [2 * i for i in range(6)]
    plain = StructureDataset(ds.table, RECIPE, rotate=True, seed=5)
    want = per_item(plain, range(6))
    assert batch["grid"].numpy().tobytes() == want["grid"].numpy().tobytes()


def test_unknown_element_raises_the_per_item_error(mixed):
    ds = StructureDataset.from_structures(mixed[:10], RECIPE)
    narrow = StructureDataset(ds.table, GridRecipe(grid_size=8, channels="C,N,O,H"))
    with pytest.raises(ValueError) as per_item_error:
        for i in range(10):
            narrow[i]
    with pytest.raises(type(per_item_error.value), match="no channel"):
        narrow.collate(narrow.__getitems__(list(range(10))))


# ------------------------------------------------------------------------ buffers
def test_reused_buffers_keep_a_batch_until_the_kth_next_one(mixed):
    k = 2
    ds = StructureDataset.from_structures(mixed[:32], RECIPE, rotate=True, seed=1, buffers=k)
    fresh = StructureDataset.from_structures(mixed[:32], RECIPE, rotate=True, seed=1)
    batches = [list(range(s, s + 8)) for s in range(0, 32, 8)]
    held = []
    for n, b in enumerate(DataLoader(ds, batch_sampler=batches, collate_fn=ds.collate)):
        held.append(b)
        truth = per_item(fresh, batches[n])
        assert_same_batch(b, truth)
        if n >= 1:  # the previous batch is intact while the next one is used
            assert_same_batch(held[n - 1], per_item(fresh, batches[n - 1]))
        if n >= k:  # ... and overwritten by the k-th next one (the documented horizon)
            assert held[n - k]["grid"].data_ptr() == b["grid"].data_ptr()
            assert torch.equal(held[n - k]["grid"], b["grid"])
    ptrs = {b["grid"].data_ptr() for b in held}
    assert len(ptrs) == k
    # buffers=0: a new tensor per batch, every held batch stays as it was made.
    kept = list(DataLoader(fresh, batch_sampler=batches, collate_fn=fresh.collate))
    assert len({b["grid"].data_ptr() for b in kept}) == len(batches)
    for b, indices in zip(kept, batches, strict=True):
        assert_same_batch(b, per_item(fresh, indices))


def test_default_buffers_reuse_only_memory_nothing_holds(mixed):
    ds = StructureDataset.from_structures(mixed[:24], RECIPE, rotate=True, seed=2)
    batches = [list(range(s, s + 8)) for s in range(0, 24, 8)]
    first = ds.collate(ds.__getitems__(batches[0]))
    second = ds.collate(ds.__getitems__(batches[1]))
    kept = first["grid"].numpy()  # a NumPy view holds the memory too
    ptr = first["grid"].data_ptr()
    del first
    third = ds.collate(ds.__getitems__(batches[2]))
    assert third["grid"].data_ptr() not in (ptr, second["grid"].data_ptr())
    assert_same_batch(second, per_item(ds, batches[1]))
    assert kept.tobytes() == per_item(ds, batches[0])["grid"].numpy().tobytes()
    del kept, third  # nothing holds the first batch's memory now: it is reused
    fourth = ds.collate(ds.__getitems__(batches[0]))
    assert fourth["grid"].data_ptr() == ptr
    assert_same_batch(fourth, per_item(ds, batches[0]))


def test_worker_rings_are_shared_and_valid_until_the_next_batch(mixed):
    prefetch = 2
    ds = StructureDataset.from_structures(
        mixed[:40], RECIPE, rotate=True, seed=6, buffers=prefetch + 2
    )
    batches = [list(range(s, s + 4)) for s in range(0, 40, 4)]
    loader = DataLoader(
        ds,
        batch_sampler=batches,
        collate_fn=ds.collate,
        num_workers=2,
        prefetch_factor=prefetch,
        persistent_workers=True,
    )
    for _epoch in range(2):  # the second epoch reuses the rings of the first
        previous = None
        for n, b in enumerate(loader):
            assert b["grid"].is_shared() and type(b) is dict
            assert_same_batch(b, per_item(ds, batches[n]))
            if previous is not None:
                assert_same_batch(previous, per_item(ds, batches[n - 1]))
            previous = b
    # Each slot of each worker's ring reached this process once (then named, not sent).
    pids = {w.pid for w in loader._iterator._workers}
    slots = [k for k in batching._RECEIVED if k[0] in pids]
    assert len(slots) == 2 * (prefetch + 2)


def test_buffers_option_is_checked_and_not_pickled(mixed):
    with pytest.raises(ValueError, match="buffers"):
        StructureDataset.from_structures(mixed[:2], RECIPE, buffers=-1)
    ring = BatchBuffers(2)
    a, _, _ = ring.take((2, 1, 4, 4, 4), 16)
    b, _, _ = ring.take((2, 1, 4, 4, 4), 16)
    c, _, _ = ring.take((1, 1, 4, 4, 4), 16)
    assert a.data_ptr() == c.data_ptr() != b.data_ptr() and c.shape == (1, 1, 4, 4, 4)
    assert BatchBuffers(2).__getstate__()["_ring"] == []


# ------------------------------------------------------------------------ structures shards
@pytest.mark.parametrize(("workers", "mapped"), [(0, True), (2, True), (0, False)])
def test_structure_shard_batches_equal_the_per_item_path(tmp_path, workers, mapped, monkeypatch):
    if not mapped:  # HDF5 reads (a union of hyperslabs), as for chunked or filtered data
        from pgrid_cli.torch import structure_shards

        monkeypatch.setattr(structure_shards._OpenShard, "mapped", lambda self, name: None)
    out = tmp_path / "s"
    inputs = [str(SAMPLE / "drugs.sdf"), *map(str, CRYSTALS)]
    grid_files(inputs, out, GridOptions(store="structures", shard_size=20), workers=0)
    for p in sorted(out.glob("shard-*.h5")):  # per-record properties, as a run stores them
        with h5py.File(p, "r+") as f:
            rec = f["record"][()]
            f.create_dataset("properties/energy", data=rec * 0.5)
            f.create_dataset("properties/dipole", data=np.stack([rec, rec + 1, rec + 2], 1))
    kw = dict(targets=["energy", "dipole"], rotate=True, translate=0.5, seed=3)
    ds = StructureShardDataset(out, RECIPE, buffers=3, **kw)
    ds.set_epoch(2)
    assert len(ds) > 60 and len(ds.table.shards) > 3
    # Batches across shards, in random order, with a duplicate.
    batches = order(len(ds), 16)
    batches[0] = [*batches[0], batches[0][0]]
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=ds.collate, num_workers=workers)
    truth = StructureShardDataset(out, RECIPE, **kw)
    truth.set_epoch(2)
    for b, indices in zip(loader, batches, strict=True):
        want = per_item(truth, indices)
        assert want["targets"].shape == (len(indices), 4)
        assert_same_batch(b, want)
    assert (ds.table.opened(0).mapped("positions") is not None) == mapped


def test_items_the_batched_path_does_not_build_are_collated_item_by_item(tmp_path):
    """Lattice shifts and cube:L crystal views take the per-item path through a real
    DataLoader: the batch equals the collated items bit for bit."""
    from ase.build import bulk

    from pgrid_cli.readers import Structure

    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    structures = [
        Structure(a.numbers, a.positions, np.asarray(a.cell[:]), name=str(k))
        for k, a in enumerate([cu, nacl, cu, nacl])
    ]
    for recipe, kw in (
        (GridRecipe(16, 0.5, "elements"), {"shift_lattice": True, "render": "batch"}),
        (GridRecipe(16, 0.5, "elements", crystal_view="cube:8"), {"rotate": True}),
    ):
        ds = StructureDataset.from_structures(structures, recipe, seed=3, **kw)
        loader = DataLoader(ds, batch_size=4, collate_fn=ds.collate)
        got = next(iter(loader))
        want = ds.collate([ds[i] for i in range(4)])
        assert set(got) == set(want)
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(got[key], value, rtol=0, atol=0)
