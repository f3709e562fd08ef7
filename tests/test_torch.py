"""PyTorch integration (pgrid_cli.torch): datasets, augmentation, collate, the grid layer.

Independent truths used here: the float64 NumPy reference (pgrid_cli.core.reference) for grids
and gradients, finite differences, analytic moments of Gaussians (a grid's centroid is
the atoms' centroid; its second moment is the atoms' plus (σ² + h²/12)·I), the atom
count (a grid holding all the density sums to it), and round trips through shard files.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed (pip install 'pgrid-cli[torch]')"
)

from ase.io import iread  # noqa: E402
from rdkit import Chem, RDLogger  # noqa: E402
from torch.utils.data import DataLoader, get_worker_info  # noqa: E402

from pgrid_cli import (  # noqa: E402
    Box,
    ChannelSpec,
    GridRecipe,
    grid,
)
from pgrid_cli.core.reference import (  # noqa: E402
    reference_gradient,
    reference_grid,
    reference_structure,
)
from pgrid_cli.readers import Rejection, Structure, iter_records  # noqa: E402
from pgrid_cli.runs.grid import GridOptions, grid_files  # noqa: E402
from pgrid_cli.store.codec import DEFAULT_STEP  # noqa: E402
from pgrid_cli.store.shard import ShardMeta, ShardWriter, shard_name  # noqa: E402
from pgrid_cli.torch import (  # noqa: E402
    Augmentation,
    GridCollate,
    GridLayer,
    ShardDataset,
    StructureDataset,
    collate,
    grid_tensor,
)

from .conftest import SAMPLE  # noqa: E402


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def drugs() -> list[Structure]:
    """The 126 drug molecules of sample_data/drugs.sdf, read with RDKit."""
    RDLogger.DisableLog("rdApp.*")
    out = []
    path = SAMPLE / "drugs.sdf"
    for k, mol in enumerate(Chem.SDMolSupplier(str(path), removeHs=False)):
        out.append(
            Structure(
                numbers=np.array([a.GetAtomicNum() for a in mol.GetAtoms()]),
                positions=mol.GetConformer().GetPositions(),
                name=mol.GetProp("_Name"),
                source=str(path),
                record=k,
            )
        )
    return out


@pytest.fixture(scope="module")
def crystals() -> list[Structure]:
    """SrTiO3 (cubic) and Si in a skewed triclinic cell, read with ASE."""
    path = SAMPLE / "crystals" / "perovskite.extxyz"
    return [
        Structure(
            numbers=a.numbers,
            positions=a.positions,
            lattice=np.asarray(a.cell[:]),
            name=a.info["name"],
            source=str(path),
            record=k,
        )
        for k, a in enumerate(iread(path, format="extxyz"))
    ]


OPTS = GridRecipe(sigma=0.5, grid_size=16, box="cube:20", channels="elements")


def _dataset(structures, options=OPTS, **kw) -> StructureDataset:
    return StructureDataset.from_structures(structures, options, **kw)


def _moments(g: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray, float]:
    """Centroid (3,), central second moment (3, 3) and mass of a grid, from voxel centres."""
    w = np.asarray(g, dtype=np.float64).sum(axis=0).reshape(-1)
    r = box.voxel_centers().reshape(-1, 3)
    mass = w.sum()
    c = (w[:, None] * r).sum(axis=0) / mass
    d = r - c
    return c, (w[:, None, None] * d[:, :, None] * d[:, None, :]).sum(axis=0) / mass, mass


# ------------------------------------------------------------------------ datasets
def test_torch_is_optional_for_pgrid_cli():
    code = "import sys, pgrid_cli, pgrid_cli.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    # Without torch, pgrid_cli.torch says what to install (sys.modules[name] = None makes
    # "import torch" fail as if it were not installed).
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import pgrid_cli.torch\n"
        "except ImportError as e:\n    print(e)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'pgrid-cli[torch]'" in done.stdout


def test_second_derivatives_are_refused_clearly():
    box = Box.cube(np.zeros((1, 3)), 6.0, 4)
    p = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(grid_tensor(p, box).square().sum(), p, create_graph=True)
    with pytest.raises(RuntimeError, match=r"once_differentiable|twice"):
        g.sum().backward()


def test_lengths_shapes_and_values(drugs):
    ds = _dataset(drugs)
    assert len(ds) == len(drugs) == 126
    item = ds[5]
    m = len(drugs[5].numbers)
    assert item["grid"].shape == (11, 16, 16, 16) and item["grid"].dtype == torch.float32
    assert item["positions"].shape == (m, 3) and item["numbers"].shape == (m,)
    assert item["origin"].shape == (3,) and item["axes"].shape == (3, 3)
    assert item["name"] == drugs[5].name and item["record"] == 5 and item["index"] == 5
    assert ds[-1]["index"] == 125
    with pytest.raises(IndexError, match="out of range"):
        ds[126]
    # Without augmentation the item is the plain grid of the input, in a cube:20 box.
    box = Box.cube(drugs[5].positions, 20.0, 16)
    chans = ChannelSpec.parse("elements").assign(drugs[5].numbers)
    expected = reference_grid(drugs[5].positions, box, 0.5, chans, 11)
    assert_allclose(item["grid"].numpy(), expected, rtol=0, atol=1e-6)
    assert_allclose(item["origin"].numpy(), box.origin, rtol=0, atol=0)


class _SharedCheck:
    """Collate wrapper asserting, inside the worker, that the batch was rendered into
    shared memory (so sending it to the main process copies nothing)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, items):
        out = self.inner(items)
        if not out["grid"].is_shared():
            raise AssertionError("the worker's batch grid is not in shared memory")
        return out


def test_workers_render_batches_into_shared_memory(drugs):
    ds = _dataset(drugs[:8], render="batch")
    assert not ds.collate([ds[0]])["grid"].is_shared()  # main process: plain memory
    loader = DataLoader(ds, batch_size=4, num_workers=1, collate_fn=_SharedCheck(ds.collate))
    assert sum(len(b["grid"]) for b in loader) == 8


def test_batched_collate_matches_per_item_grids(drugs):
    per_item = _dataset(drugs[:20], rotate=True, translate=1.0, seed=7)
    batched = _dataset(drugs[:20], rotate=True, translate=1.0, seed=7, render="batch")
    assert "grid" not in batched[0]
    b1 = per_item.collate([per_item[i] for i in range(20)])
    b2 = batched.collate([batched[i] for i in range(20)])
    assert b2["grid"].shape == (20, 11, 16, 16, 16)
    assert_allclose(b2["grid"].numpy(), b1["grid"].numpy(), rtol=0, atol=1e-7)
    counts = [len(s.numbers) for s in drugs[:20]]
    assert_array_equal(b2["offsets"].numpy(), np.concatenate([[0], np.cumsum(counts)]))
    assert b2["positions"].shape == (sum(counts), 3)
    assert b2["name"] == [s.name for s in drugs[:20]]
    assert_array_equal(b2["index"].numpy(), np.arange(20))


def test_collate_rejects_mixed_items(drugs):
    ds = _dataset(drugs[:2])
    a, b = ds[0], ds[1]
    del b["rotation"]
    with pytest.raises(ValueError, match="same keys"):
        collate([a, b])
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="without origin"):
        GridCollate(OPTS)([{"positions": a["positions"], "numbers": a["numbers"]}])


def test_fixed_seed_gives_identical_items_and_epochs_differ(drugs):
    a = _dataset(drugs[:8], rotate=True, translate=2.0, seed=11)
    b = _dataset(drugs[:8], rotate=True, translate=2.0, seed=11)
    c = _dataset(drugs[:8], rotate=True, translate=2.0, seed=12)
    for i in (0, 3, 7):
        assert_array_equal(a[i]["grid"].numpy(), b[i]["grid"].numpy())
        assert_array_equal(a[i]["rotation"].numpy(), b[i]["rotation"].numpy())
        assert not np.allclose(a[i]["rotation"].numpy(), c[i]["rotation"].numpy())
    first = a[3]["grid"].numpy().copy()
    a.set_epoch(1)
    assert a.epoch == 1
    assert not np.allclose(a[3]["grid"].numpy(), first)
    a.set_epoch(0)
    assert_array_equal(a[3]["grid"].numpy(), first)  # reading order does not matter
    # Unseeded datasets draw a seed once; it can be read back to repeat the run.
    d = _dataset(drugs[:2], rotate=True)
    again = _dataset(drugs[:2], rotate=True, seed=d.augmentation.seed)
    assert_array_equal(d[1]["grid"].numpy(), again[1]["grid"].numpy())
    with pytest.raises(ValueError, match="epoch"):
        a.set_epoch(-1)


def test_items_do_not_depend_on_workers_and_survive_pickling(drugs):
    ds = _dataset(drugs[:24], rotate=True, translate=1.0, seed=3, render="batch")
    ds.set_epoch(2)
    serial = list(DataLoader(ds, batch_size=6, collate_fn=ds.collate))
    parallel = list(DataLoader(ds, batch_size=6, collate_fn=ds.collate, num_workers=2))
    assert len(serial) == len(parallel) == 4
    for s, p in zip(serial, parallel, strict=True):
        assert_array_equal(s["grid"].numpy(), p["grid"].numpy())
        assert_array_equal(s["positions"].numpy(), p["positions"].numpy())
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.epoch == 2
    assert_allclose(clone.collate([clone[5]])["grid"][0], serial[0]["grid"][5], atol=0)


def test_set_epoch_reaches_persistent_workers(drugs):
    ds = _dataset(drugs[:8], rotate=True, seed=5)
    loader = DataLoader(
        ds, batch_size=8, collate_fn=ds.collate, num_workers=2, persistent_workers=True
    )
    epoch0 = next(iter(loader))["grid"].numpy()
    ds.set_epoch(1)
    epoch1 = next(iter(loader))["grid"].numpy()
    fresh = _dataset(drugs[:8], rotate=True, seed=5)
    fresh.set_epoch(1)
    assert not np.allclose(epoch0, epoch1)
    assert_array_equal(epoch1, fresh.collate([fresh[i] for i in range(8)])["grid"].numpy())


# ------------------------------------------------------------------------ augmentation
def test_rotation_preserves_mass_and_moves_moments_as_expected(drugs):
    """Fine voxels (h = 0.5 Å, h/σ = 1) make voxel-centre moments exact to ~1e-9: the
    grid's centroid must be the gridded atoms' centroid, its second moment the atoms'
    plus (σ² + h²/12)·I (Gaussian width plus Sheppard's correction)."""
    opts = GridRecipe(sigma=0.5, grid_size=48, box="cube:24", channels="single")
    plain = _dataset(drugs[:3], opts)
    moved = _dataset(drugs[:3], opts, rotate=True, translate=1.5, seed=1)
    rotated_only = _dataset(drugs[:3], opts, rotate=True, seed=1)
    h2 = 0.5**2
    for i, s in enumerate(drugs[:3]):
        item, item0, item_r = moved[i], plain[i], rotated_only[i]
        n = len(s.numbers)
        R, t = item["rotation"].numpy(), item["translation"].numpy()
        assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        assert np.all(np.abs(t) <= 1.5) and np.any(np.abs(t) > 0)
        assert_array_equal(item_r["rotation"].numpy(), R)  # translation drawn after
        # Returned positions = R (x − centroid) + centroid + t.
        x = s.positions
        centroid = x.mean(axis=0)
        assert_allclose(item["positions"].numpy(), (x - centroid) @ R.T + centroid + t, atol=1e-12)
        # The box follows the rotated atoms; the translation moves the density inside it.
        assert_allclose(item["origin"].numpy(), item_r["origin"].numpy(), atol=0)
        box = Box(item["origin"].numpy(), item["axes"].numpy(), 48)
        g, g0 = item["grid"].numpy(), item0["grid"].numpy()
        c, m2, mass = _moments(g, box)
        c0, m20, mass0 = _moments(g0, Box(item0["origin"].numpy(), item0["axes"].numpy(), 48))
        assert mass == pytest.approx(n, rel=1e-5) and mass0 == pytest.approx(n, rel=1e-5)
        assert_allclose(c, centroid + t, atol=1e-5)
        assert_allclose(c0, centroid, atol=1e-5)
        d = x - centroid
        atoms_m2 = d.T @ d / n
        iso = (0.25 + h2 / 12) * np.eye(3)
        assert_allclose(m20, atoms_m2 + iso, atol=1e-4)
        assert_allclose(m2, R @ atoms_m2 @ R.T + iso, atol=1e-4)


def test_rotations_are_uniform_over_so3():
    """A uniform rotation sends any unit vector to a uniform point on the sphere:
    mean 0 and second moment I/3 (checked to ~5 standard errors over 4000 items)."""
    aug = Augmentation(rotate=True, seed=2024)
    Rs = np.stack([aug.transform(i).rotation for i in range(4000)])
    v = Rs @ np.array([0.0, 0.6, 0.8])
    assert_allclose(v.mean(axis=0), 0.0, atol=5 * np.sqrt(1 / 3 / 4000))
    assert_allclose(v.T @ v / len(v), np.eye(3) / 3, atol=0.03)
    # Quaternion sign-symmetric statistic: E[R_ii] = 0 for the Haar measure.
    assert_allclose(np.trace(Rs, axis1=1, axis2=2).mean(), 0.0, atol=0.1)


def test_crystals_are_translated_but_not_rotated(crystals):
    opts = GridRecipe(sigma=0.4, grid_size=16, channels="single")
    ds = _dataset(crystals, opts, rotate=True, translate=0.7, seed=4)
    plain = _dataset(crystals, opts)
    for i, s in enumerate(crystals):
        item = ds[i]
        assert item["periodic"] is True
        assert_array_equal(item["rotation"].numpy(), np.eye(3))
        assert_allclose(item["axes"].numpy(), s.lattice, atol=0)
        t = item["translation"].numpy()
        assert_allclose(item["positions"].numpy(), s.positions + t, atol=1e-12)
        # A periodic cell always holds every atom's whole density.
        assert item["grid"].sum().item() == pytest.approx(len(s.numbers), rel=1e-5)
        expected = grid(s.positions + t, Box.from_lattice(s.lattice, 16), 0.4)
        assert_array_equal(item["grid"].numpy(), expected)
        assert not np.allclose(item["grid"].numpy(), plain[i]["grid"].numpy(), atol=1e-3)


def test_bad_augmentation_options():
    with pytest.raises(ValueError, match="translate"):
        Augmentation(translate=-1)
    with pytest.raises(ValueError, match="seed"):
        Augmentation(seed=-3)
    with pytest.raises(ValueError, match="sigma"):
        StructureDataset.from_structures([], GridRecipe(sigma=0))
    with pytest.raises(ValueError, match="unknown box"):
        GridLayer(box="sphere")
    with pytest.raises(ValueError, match="render"):
        StructureDataset.from_structures([], render="lazy")


# ------------------------------------------------------------------------ bad records
def test_unusable_records_are_kept_as_rejections(drugs):
    opts = GridRecipe(grid_size=8, channels="C,H,N,O")  # no channel for S, Cl, ...
    records = [*drugs[:10], Rejection("x.sdf", 3, "broken", "cannot parse line 7")]
    with pytest.warns(UserWarning, match=r"record\(s\) skipped"):
        ds = StructureDataset.from_structures(records, opts)
    allowed = {1, 6, 7, 8}
    kept = [s for s in drugs[:10] if set(s.numbers.tolist()) <= allowed]
    assert len(ds) == len(kept) and len(ds.rejections) == 11 - len(kept)
    assert ds.rejections[-1].reason == "cannot parse line 7"
    assert any("no channel" in r.reason for r in ds.rejections)
    assert [ds[i]["name"] for i in range(len(ds))] == [s.name for s in kept]
    with pytest.raises(ValueError, match="no channel"):
        StructureDataset.from_structures(drugs[:10], opts, errors="raise")
    quiet = StructureDataset.from_structures(drugs[:10], opts, errors="ignore")
    assert len(quiet) == len(kept)


def test_targets_are_stacked_and_failures_rejected(drugs):
    def n_heavy(s: Structure) -> float:
        if s.name == drugs[2].name:
            raise ValueError("no value for this one")
        return float(np.sum(s.numbers > 1))

    with pytest.warns(UserWarning, match="target: no value"):
        ds = _dataset(drugs[:5], target=n_heavy)
    assert len(ds) == 4
    batch = ds.collate([ds[i] for i in range(4)])
    expected = [np.sum(s.numbers > 1) for k, s in enumerate(drugs[:5]) if k != 2]
    assert batch["target"].dtype == torch.float32
    assert_array_equal(batch["target"].numpy(), expected)


# ------------------------------------------------------------------------ files
def test_from_files_reads_what_pgrid_grid_reads(drugs):
    ds = StructureDataset.from_files(SAMPLE / "drugs.sdf", OPTS)
    assert len(ds) == 126 and ds.rejections == []
    for i in (0, 57, 125):
        item = ds[i]
        assert item["name"] == drugs[i].name and item["record"] == i
        assert_array_equal(item["numbers"].numpy(), drugs[i].numbers)
        assert_allclose(item["positions"].numpy(), drugs[i].positions, rtol=0, atol=1e-12)
    # A directory: every CIF block and extended-XYZ frame, as periodic cells.
    crystals = StructureDataset.from_files(
        [SAMPLE / "crystals"], GridRecipe(grid_size=8, channels="single")
    )
    assert len(crystals) == 9
    assert all(crystals[i]["periodic"] for i in range(9))
    for i in range(9):
        n = len(crystals[i]["numbers"])
        assert crystals[i]["grid"].sum().item() == pytest.approx(n, rel=1e-5)


def test_from_files_accounts_for_every_record():
    path = Path(__file__).parent / "data" / "malformed" / "records.sdf"
    records = list(iter_records(path))
    bad = [r for r in records if isinstance(r, Rejection)]
    assert bad, "the malformed corpus should hold rejected records"
    with pytest.warns(UserWarning, match=r"record\(s\) skipped"):
        ds = StructureDataset.from_files(path, GridRecipe(grid_size=8))
    assert len(ds) + len(ds.rejections) == len(records)
    assert [r.record for r in ds.rejections] == [r.record for r in bad]
    assert [ds[i]["record"] for i in range(len(ds))] == [
        r.record for r in records if not isinstance(r, Rejection)
    ]


def test_grids_match_the_shards_of_pgrid_grid(tmp_path, drugs):
    """The same recipe gives the same grids on the fly as ``pgrid grid`` stores
    (its default rounding changes each value by less than one step, at most 2⁻²¹)."""
    opts = GridRecipe(grid_size=16, box="cube:20", sigma=0.5, channels="elements")
    run = GridOptions(grid_size=16, box="cube:20", sigma=0.5, channels="elements")
    summary = grid_files([SAMPLE / "drugs.sdf"], tmp_path / "out", run, workers=0)
    assert summary.written == 126
    shards = ShardDataset(tmp_path / "out")
    fly = StructureDataset.from_files(SAMPLE / "drugs.sdf", opts)
    assert len(shards) == len(fly) == 126
    for i in (0, 40, 125):
        a, b = shards[i], fly[i]
        assert a["name"] == b["name"]
        assert_allclose(a["grid"].numpy(), b["grid"].numpy(), rtol=0, atol=DEFAULT_STEP)
        assert_allclose(a["origin"].numpy(), b["origin"].numpy(), rtol=0, atol=0)


# ------------------------------------------------------------------------ shards
def _write_shards(root: Path, structures, dtype="float32") -> np.ndarray:
    """Two shards of grids made by the kernel; returns every grid written."""
    boxes = [Box.fit(s.positions, 12) for s in structures]
    spec = ChannelSpec.parse("elements")
    grids = np.stack(
        [
            grid(s.positions, b, 0.5, channels=spec.assign(s.numbers), n_channels=11)
            for s, b in zip(structures, boxes, strict=True)
        ]
    )
    meta = ShardMeta(sigma=0.5, channels=spec.names, grid_shape=(12, 12, 12), box="fit")
    half = len(structures) // 2
    for k, (lo, hi) in enumerate([(0, half), (half, len(structures))]):
        with ShardWriter(root / shard_name(k), meta, dtype=dtype) as w:
            part = structures[lo:hi]
            w.append(
                grids[lo:hi],
                boxes[lo:hi],
                [s.numbers for s in part],
                [s.positions for s in part],
                [s.name for s in part],
                [s.source for s in part],
                [s.record for s in part],
            )
    return grids


def _check_no_inherited_handles(worker_id: int) -> None:
    ds = get_worker_info().dataset
    open_files = [s.path.name for s in ds.shards.shards if s._file is not None]
    if open_files:
        raise AssertionError(f"worker {worker_id} inherited open HDF5 files {open_files}")


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_shards_load_with_multiple_workers(tmp_path, drugs, context):
    structures = drugs[:30]
    grids = _write_shards(tmp_path, structures)
    ds = ShardDataset(tmp_path)
    assert len(ds) == 30 and ds.grid_shape == (11, 12, 12, 12) and ds.sigma == 0.5
    assert ds.recipe.spec.names == ChannelSpec.parse("elements").names
    assert ds.rejections == []
    ds[3]  # opens a handle in this process: it must not reach the workers
    loader = DataLoader(
        ds,
        batch_size=7,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        num_workers=2,
        collate_fn=ds.collate,
        multiprocessing_context=context,
        worker_init_fn=_check_no_inherited_handles if context == "fork" else None,
    )
    seen = []
    for batch in loader:
        idx = batch["index"].numpy()
        seen.extend(idx.tolist())
        assert batch["grid"].dtype == torch.float32
        assert_array_equal(batch["grid"].numpy(), grids[idx])
        offs = batch["offsets"].numpy()
        for k, i in enumerate(idx):
            s = structures[i]
            assert batch["name"][k] == s.name and batch["record"][k] == s.record
            assert_array_equal(batch["numbers"][offs[k] : offs[k + 1]].numpy(), s.numbers)
            assert_array_equal(batch["positions"][offs[k] : offs[k + 1]].numpy(), s.positions)
    assert sorted(seen) == list(range(30))


def test_shard_dataset_dtype_and_consistency(tmp_path, drugs):
    grids = _write_shards(tmp_path, drugs[:4], dtype="float16")
    ds = ShardDataset(tmp_path)
    assert ds[0]["grid"].dtype == torch.float32
    assert_allclose(ds[0]["grid"].numpy(), grids[0], atol=1e-3 * grids[0].max())
    assert ShardDataset(tmp_path, dtype=None)[0]["grid"].dtype == torch.float16
    # Every shard of one dataset must hold the same kind of grid.
    other = tmp_path / "other"
    other.mkdir()
    _write_shards(other, drugs[:4])
    meta = ShardMeta(sigma=0.7, channels=["all"], grid_shape=(12, 12, 12))
    with ShardWriter(other / shard_name(5), meta) as w:
        w.append(
            np.zeros((1, 1, 12, 12, 12), np.float32),
            [Box.fit(drugs[0].positions, 12)],
            [drugs[0].numbers],
            [drugs[0].positions],
            ["x"],
            ["y"],
            [0],
        )
    with pytest.raises(ValueError, match="one kind of grid"):
        ShardDataset(other)
    with pytest.raises(ValueError, match="no such shard"):
        ShardDataset(tmp_path / "missing")


# ------------------------------------------------------------------------ the layer
class ReferenceEngine:
    """grid_tensor's engine built on the float64 NumPy reference: a double-precision path
    through the same autograd.Function, so torch.autograd.gradcheck is meaningful."""

    def render(self, batch, threads):
        return np.stack([reference_structure(batch, s) for s in range(batch.n_structures)])

    def gradient(self, batch, dgrid, threads):
        dpos = np.zeros((batch.n_atoms, 3))
        dw = np.zeros(batch.n_atoms)
        for s in range(batch.n_structures):
            a, b = batch.offsets[s], batch.offsets[s + 1]
            box = batch.box(s)
            dpos[a:b] = reference_gradient(
                batch.positions[a:b],
                box,
                batch.sigmas[a:b],
                dgrid[s],
                batch.channels[a:b],
                batch.weights[a:b],
            )
            for k in range(a, b):  # dL/dw = Σ dgrid · (the atom's unit-weight grid)
                unit = reference_grid(
                    batch.positions[k : k + 1],
                    box,
                    batch.sigmas[k],
                    batch.channels[k : k + 1],
                    batch.n_channels,
                )
                dw[k] = float(np.sum(dgrid[s] * unit))
        return dpos, dw


def _layer_problem():
    """Two structures in one call: a molecule in an orthogonal box (2 channels) and a
    periodic triclinic cell (the skewed Si cell of sample_data, quadrature path)."""
    rng = np.random.default_rng(0)
    mol = rng.normal(scale=1.0, size=(3, 3))
    cell = np.array([[3.84, 0.0, 0.0], [2.0, 4.9, 0.0], [-1.1, 1.6, 6.2]])
    crystal = rng.uniform(size=(2, 3)) @ cell
    boxes = [Box.fit(mol, shape=6, padding=1.5), Box.from_lattice(cell, 6)]
    positions = np.concatenate([mol, crystal])
    kwargs = dict(offsets=[0, 3, 5], channels=[0, 1, 0, 1, 1], n_channels=2)
    weights = np.array([1.0, 0.8, 1.3, 1.0, 0.6])
    sigma = np.array([0.55, 0.6, 0.5, 0.7, 0.65])
    return positions, weights, boxes, sigma, kwargs


def test_gradcheck_double_reference_path():
    """gradcheck needs float64 end to end, so it runs on the reference engine: it proves
    that the autograd.Function (offsets, channels, weights, per-atom σ, several
    structures) passes the engine's exact gradient through correctly. ``fast_mode``
    compares vᵀJu for random u, v instead of all of J: the full Jacobian would need one
    backward pass per voxel (minutes of the float64 reference on the periodic cell)."""
    pos, w, boxes, sigma, kw = _layer_problem()
    p = torch.tensor(pos, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)

    def f(p, wt):
        return grid_tensor(p, boxes, sigma, weights=wt, engine=ReferenceEngine(), **kw)

    assert f(p, wt).dtype == torch.float64
    assert torch.autograd.gradcheck(f, (p, wt), eps=1e-6, atol=1e-8, rtol=1e-5, fast_mode=True)


def test_kernel_layer_matches_reference_values_and_gradients():
    """The float32 kernel path against the float64 reference: same grid (docs/format.md §3
    tolerances) and same gradients for a random upstream dL/dgrid."""
    pos, w, boxes, sigma, kw = _layer_problem()
    dgrid = torch.tensor(np.random.default_rng(1).normal(size=(2, 2, 6, 6, 6)))
    results = []
    for engine in (None, ReferenceEngine()):
        p = torch.tensor(pos, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        g = grid_tensor(p, boxes, sigma, weights=wt, engine=engine, **kw)
        (g.double() * dgrid).sum().backward()
        results.append((g.detach().double().numpy(), p.grad.numpy(), wt.grad.numpy()))
    (g32, dp32, dw32), (g64, dp64, dw64) = results
    assert_allclose(g32, g64, rtol=0, atol=1e-4 * g64.max())
    assert_allclose(dp32, dp64, rtol=1e-4, atol=1e-4 * np.abs(dp64).max())
    assert_allclose(dw32, dw64, rtol=1e-4, atol=1e-4 * np.abs(dw64).max())


def test_kernel_gradient_matches_central_differences(drugs):
    """Central differences of the float32 grid itself. Step 1e-3 Å: the truncation error
    (~h²) is ~1e-6 relative, and float32 rounding of a loss summed over 11·16³ voxels
    (~1e-7 · |L| / h) stays below 1e-4 of the gradient's scale (3e-5 measured)."""
    s = drugs[0]
    box = Box.cube(s.positions, 20.0, 16)
    chans = ChannelSpec.parse("elements").assign(s.numbers)
    dgrid = torch.tensor(np.random.default_rng(2).normal(size=(11, 16, 16, 16)))
    p = torch.tensor(s.positions, requires_grad=True)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return (grid_tensor(x, box, 0.5, channels=chans, n_channels=11).double() * dgrid).sum()

    loss(p).backward()
    analytic = p.grad.numpy()
    h = 1e-3
    fd = np.zeros_like(analytic)
    base = s.positions
    for a in range(0, len(base), 3):
        for d in range(3):
            plus, minus = base.copy(), base.copy()
            plus[a, d] += h
            minus[a, d] -= h
            with torch.no_grad():
                fd[a, d] = (loss(torch.tensor(plus)) - loss(torch.tensor(minus))).item() / (2 * h)
    rows = slice(0, len(base), 3)
    assert_allclose(fd[rows], analytic[rows], rtol=0, atol=3e-4 * np.abs(analytic).max())


def test_grid_layer_regrids_a_batch_differentiably(drugs):
    ds = _dataset(drugs[:6], rotate=True, seed=9, render="batch")
    batch = ds.collate([ds[i] for i in range(6)])
    layer = GridLayer(OPTS)
    pos = batch["positions"].clone().requires_grad_()
    out = layer(pos, batch["numbers"], batch["offsets"], boxes=batch)
    assert_allclose(out.detach().numpy(), batch["grid"].numpy(), rtol=0, atol=1e-7)
    out.sum().backward()  # the total mass inside a big box barely depends on positions
    assert pos.grad.shape == pos.shape
    assert np.abs(pos.grad.numpy()).max() < 1e-2
    # Boxes built by the layer itself (cube:20 around each structure) match too.
    fresh = GridLayer(sigma=0.5, grid_size=16, box="cube:20")(
        batch["positions"], batch["numbers"], batch["offsets"]
    )
    assert_allclose(fresh.numpy(), batch["grid"].numpy(), rtol=0, atol=1e-7)
    assert "cube:20" in repr(layer)


def test_grid_tensor_input_errors():
    box = Box.cube(np.zeros((1, 3)), 6.0, 4)
    p = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"shape \(M, 3\)"):
        grid_tensor(torch.zeros(3), box)
    with pytest.raises(ValueError, match="offsets"):
        grid_tensor(p, [box, box], offsets=[0, 3, 2])
    with pytest.raises(ValueError, match="sigma is a constant"):
        grid_tensor(p, box, torch.full((2,), 0.5, requires_grad=True))
    with pytest.raises(ValueError, match="weights"):
        grid_tensor(p, box, weights=torch.ones(3))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        grid_tensor(np.zeros((2, 3)), box)
    assert grid_tensor(p, box).shape == (1, 4, 4, 4)
    assert grid_tensor(p, [box], offsets=[0, 2]).shape == (1, 1, 4, 4, 4)


def test_training_example_runs():
    example = Path(__file__).resolve().parents[1] / "examples" / "train_3dcnn.py"
    done = subprocess.run(
        [sys.executable, str(example), "--epochs", "2", "--workers", "1", "--seconds", "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("epoch")]
    assert len(lines) == 1 and "train loss" in lines[0] and "validation MAE" in lines[0]
    assert "target gap" in done.stdout  # a property the QM9 reader stored


def test_training_example_runs_from_shards(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "train_3dcnn.py"
    args = ["--epochs", "1", "--workers", "0", "--seconds", "0", "--shards", str(tmp_path / "s")]
    done = subprocess.run(
        [sys.executable, str(example), *args], capture_output=True, text=True, check=True
    )
    assert "stored in shards" in done.stdout and "epoch   1" in done.stdout
    assert (tmp_path / "s" / "shard-00000.h5").exists()


# ------------------------------------------------------------------------ typed channels
def test_typed_channels_on_the_fly_match_pgrid_grid_and_the_reference(tmp_path):
    """Typed channels (pharmacophore + a signed Gasteiger charge channel) gridded on the
    fly: without augmentation they are the grids ``pgrid grid`` stores for the same recipe
    (within its rounding step); rotated, they are the float64 reference of the rotated
    atoms expanded with the typer's own memberships."""
    from pgrid_cli.typers import channel_typer

    typer = channel_typer("pharmacophore", "gasteiger")
    recipe = GridRecipe(grid_size=16, sigma=0.5, box="cube:20", typer=typer)
    run = GridOptions(
        grid_size=16, sigma=0.5, box="cube:20", channels="pharmacophore", charge_channel="gasteiger"
    )
    summary = grid_files([SAMPLE / "drugs.sdf"], tmp_path / "out", run, workers=0)
    stored = ShardDataset(tmp_path / "out")
    fly = StructureDataset.from_files(SAMPLE / "drugs.sdf", recipe)
    assert len(fly) == len(stored) == summary.written
    assert fly[0]["grid"].shape == (len(typer.channels), 16, 16, 16)
    for i in (0, 57, len(fly) - 1):
        a, b = stored[i], fly[i]
        assert a["name"] == b["name"]
        assert_allclose(b["grid"].numpy(), a["grid"].numpy(), rtol=0, atol=DEFAULT_STEP)

    rotated = StructureDataset.from_files(
        SAMPLE / "drugs.sdf", recipe, rotate=True, translate=0.5, seed=7
    )
    structures = [s for s in iter_records(SAMPLE / "drugs.sdf") if not isinstance(s, Rejection)]
    for i in (3, 90):
        item = rotated[i]
        m = typer.memberships(structures[i])  # typed independently of the dataset
        atoms, chans = np.nonzero(m)
        box = Box(item["origin"].numpy(), item["axes"].numpy(), 16)
        ref = reference_grid(
            item["positions"].numpy()[atoms],
            box,
            0.5,
            channels=chans,
            n_channels=len(typer.channels),
            weights=m[atoms, chans],
        )
        assert_allclose(item["grid"].numpy(), ref, rtol=0, atol=1e-6)
        assert np.any(item["grid"].numpy()[-1] < 0)  # the signed charge channel


def test_typed_channels_in_a_dataloader_are_the_items(drugs):
    from pgrid_cli.typers import get_typer

    recipe = GridRecipe(grid_size=12, sigma=0.5, box="cube:20", typer=get_typer("xs"))
    ds = StructureDataset.from_files(SAMPLE / "drugs.sdf", recipe, rotate=True, seed=3)
    loader = DataLoader(ds, batch_size=4, collate_fn=ds.collate, num_workers=0)
    batch = next(iter(loader))
    want = torch.stack([ds[i]["grid"] for i in range(4)])
    assert torch.equal(batch["grid"], want)


def test_typed_structures_shards_grid_like_the_in_memory_dataset(tmp_path):
    """`pgrid grid --store structures --channels pharmacophore --charge-channel gasteiger`
    types in the workers and stores the memberships; StructureShardDataset grids them
    bit for bit as StructureDataset.from_files does (rotated, 2 workers writing); another
    typer is refused."""
    from pgrid_cli.torch import StructureShardDataset
    from pgrid_cli.typers import channel_typer, get_typer

    run = GridOptions(store="structures", channels="pharmacophore", charge_channel="gasteiger")
    summary = grid_files([SAMPLE / "drugs.sdf"], tmp_path / "st", run, workers=2)
    assert summary.written == 126
    typer = channel_typer("pharmacophore", "gasteiger")
    recipe = GridRecipe(grid_size=16, sigma=0.5, box="cube:20", typer=typer)
    disk = StructureShardDataset(tmp_path / "st", recipe, rotate=True, seed=11)
    memory = StructureDataset.from_files(SAMPLE / "drugs.sdf", recipe, rotate=True, seed=11)
    assert len(disk) == len(memory) == 126
    for i in (0, 64, 125):
        assert torch.equal(disk[i]["grid"], memory[i]["grid"])
    loader = DataLoader(disk, batch_size=4, collate_fn=disk.collate, num_workers=2)
    batch = next(iter(loader))
    assert torch.equal(batch["grid"], torch.stack([memory[i]["grid"] for i in range(4)]))
    with pytest.raises(ValueError, match="memberships of typer 'pharmacophore\\+gasteiger'"):
        StructureShardDataset(tmp_path / "st", GridRecipe(grid_size=16, typer=get_typer("xs")))


def test_typed_channels_are_refused_where_there_is_no_chemistry(tmp_path, drugs):
    from pgrid_cli.torch import StructureShardDataset
    from pgrid_cli.torch.structure_dataset import StructureTable
    from pgrid_cli.typers import get_typer

    recipe = GridRecipe(grid_size=12, typer=get_typer("xs"))
    with pytest.raises(ValueError, match="need each structure's chemistry"):
        StructureDataset(StructureTable.from_structures(drugs[:3]), recipe)
    with pytest.raises(ValueError, match="gridded per item"):
        StructureDataset.from_files(SAMPLE / "drugs.sdf", recipe, render="batch")
    run = GridOptions(grid_size=12, store="structures")
    grid_files([SAMPLE / "drugs.sdf"], tmp_path / "st", run, workers=0)
    with pytest.raises(ValueError, match="need each structure's chemistry"):
        StructureShardDataset(tmp_path / "st", recipe)
