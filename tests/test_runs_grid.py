"""The gridding pipeline (pgrid_cli.runs.grid.grid_files): accuracy of what it stores,
every record accounted for, determinism across workers, resume after a kill, slicing,
and the output-directory rules."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from pgrid_cli import ChannelSpec, grid
from pgrid_cli import readers as pio
from pgrid_cli.core.reference import reference_grid
from pgrid_cli.readers import iter_records
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.runs.gridoptions import default_shard_size
from pgrid_cli.runs.slicing import SlurmArray, resolve_slice, slice_from_env
from pgrid_cli.store.codec import GridCodec
from pgrid_cli.store.rundir import ERRORS, MANIFEST, describe, write_index
from pgrid_cli.store.shard import Shard, ShardSet
from pgrid_cli.store.verify import verify_shard

from .conftest import ROOT, SAMPLE

CORPUS = Path(__file__).parent / "data" / "malformed"
#: Records per corpus file (see tests/test_readers.py for what each one is).
CORPUS_RECORDS = {
    "blocks.cif": 2,
    "corrupt_deflate.sdf.gz": 4,
    "count_lines.xyz": 6,
    "disorder.cif": 1,
    "empty.xyz": 0,
    "frames.xyz": 12,
    "no_blocks.cif": 1,
    "not_gzip.xyz.gz": 1,
    "occupancy.cif": 7,
    "records.sdf": 8,
}
SMALL = GridOptions(grid_size=12, sigma=0.5)
MIXED = [str(SAMPLE / "drugs.sdf"), str(CORPUS)]  # 126 good records + 42 in the corpus


def run(inputs, out, options=SMALL, **kw):
    kw.setdefault("workers", 0)
    return grid_files(inputs, out, options, **kw)


def _datasets(f: h5py.File) -> list[str]:
    """The paths of every dataset in a file (groups included: ``checksums/grids``)."""
    names: list[str] = []
    f.visititems(lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) else None)
    return names


def differences(a: dict, b: dict) -> list[str]:
    """Where two :func:`contents` differ (file, then dataset or attribute), for messages."""
    out = []
    for name in sorted(set(a) | set(b)):
        if a.get(name) == b.get(name):
            continue
        if not (isinstance(a.get(name), tuple) and isinstance(b.get(name), tuple)):
            out.append(name)
            continue
        (attrs_a, data_a), (attrs_b, data_b) = a[name], b[name]
        out += [f"{name}: attribute {k}" for k in sorted(set(attrs_a) | set(attrs_b))
                if attrs_a.get(k) != attrs_b.get(k)]  # fmt: skip
        out += [f"{name}: dataset {k}" for k in sorted(set(data_a) | set(data_b))
                if data_a.get(k) != data_b.get(k)]  # fmt: skip
    return out


def contents(out: Path) -> dict:
    """Everything a run wrote that must not depend on how it was run."""
    d: dict = {}
    for p in sorted(out.glob("shard-*.h5")):
        with h5py.File(p, "r") as f:
            attrs = {k: str(v) for k, v in f.attrs.items() if k not in ("command",)}
            names = _datasets(f)
            data = {
                k: f[k][()].tobytes() if f[k].dtype.kind != "O" else list(f[k][()]) for k in names
            }
            if "checksums" in f:
                data["checksums"] = dict(f["checksums"].attrs)
        d[p.name] = (attrs, data)
    d[ERRORS] = (out / ERRORS).read_text() if (out / ERRORS).exists() else None
    if (out / MANIFEST).exists():
        m = json.loads((out / MANIFEST).read_text())
        d[MANIFEST] = {k: m[k] for k in ("counts", "shards", "parameters", "run_id")}
    return d


# ---------------------------------------------------------------------- accuracy
def test_stored_grids_match_the_float64_reference(tmp_path):
    """docs/format.md §3 holds for what is stored (after rounding): |error| ≤ 1e-6 for orthogonal
    boxes (molecules at the default 32³, orthogonal crystals), ≤ 1e-4·max for triclinic
    cells (at 16³, where the float64 reference is affordable; the 1-atom Cu cell has
    values small enough to need a finer rounding step), and periodic grids sum to their
    atoms (1e-5 relative)."""
    spec = ChannelSpec.parse("elements")
    checked = Counter()
    runs = [
        ([SAMPLE / "small_molecules.xyz", *sorted((SAMPLE / "crystals").glob("*.cif"))], 32),
        ([SAMPLE / "crystals" / "Cu_fcc_primitive.cif", SAMPLE / "crystals" / "multi.cif"], 16),
    ]
    for k, (inputs, size) in enumerate(runs):
        run(inputs, tmp_path / f"o{k}", GridOptions(grid_size=size))
        for rec in ShardSet(tmp_path / f"o{k}"):
            if rec.box.is_orthogonal != (size == 32):
                continue  # orthogonal boxes checked at 32³, triclinic cells at 16³
            chans = spec.assign(rec.numbers)
            ref = reference_grid(rec.positions, rec.box, 0.5, chans, spec.n_channels)
            g = rec.grid.astype(np.float64)
            if rec.box.periodic:
                assert g.sum() == pytest.approx(len(rec.numbers), rel=1e-5), rec.name
            if rec.box.is_orthogonal:
                assert np.abs(g - ref).max() <= 1e-6, rec.name
                checked["orthogonal"] += 1
            else:
                assert np.abs(g - ref).max() <= 1e-4 * ref.max(), rec.name
                checked["triclinic"] += 1
    assert checked == {"orthogonal": 19 + 4, "triclinic": 2}


def test_lossless_stores_the_kernel_values(tmp_path):
    opts = GridOptions(grid_size=12, lossless=True)
    run([SAMPLE / "small_molecules.xyz"], tmp_path / "o", opts)
    spec = ChannelSpec.parse("elements")
    for rec in ShardSet(tmp_path / "o"):
        kernel = grid(
            rec.positions,
            rec.box,
            0.5,
            channels=spec.assign(rec.numbers),
            n_channels=spec.n_channels,
        )
        assert_array_equal(rec.grid, kernel)
    with h5py.File(tmp_path / "o" / "shard-00000.h5") as f:
        assert f.attrs["rounding_step"] == 0


@pytest.mark.parametrize(
    ("compression", "dtype"),
    [
        ("lzf", "float32"),
        ("none", "float16"),
        ("lzf", "float16"),
        ("zstd", "float32"),
        ("zstd:9", "float16"),
        ("lz4", "float32"),
        ("blosc2-lz4", "float32"),
        ("blosc2-zstd:3", "float16"),
        ("blosc2-lz4-bitshuffle", "float32"),
    ],
)
def test_other_storage_options(tmp_path, compression, dtype):
    """Every codec stores the same rounded values (rounded once, then cast): exactly the
    default gzip float32 grids, or those grids cast to float16."""
    opts = GridOptions(grid_size=12, compression=compression, dtype=dtype)
    run([SAMPLE / "small_molecules.xyz"], tmp_path / "o", opts)
    run([SAMPLE / "small_molecules.xyz"], tmp_path / "ref", GridOptions(grid_size=12))
    a, b = ShardSet(tmp_path / "o"), ShardSet(tmp_path / "ref")
    for ra, rb in zip(a, b, strict=True):
        assert ra.grid.dtype == np.dtype(dtype)
        assert_array_equal(ra.grid, rb.grid.astype(dtype))
    with h5py.File(tmp_path / "o" / "shard-00000.h5") as f:
        name = compression.split(":")[0]
        assert f.attrs["compression"] == name
        if name == "zstd":  # HDF5's registered Zstandard filter, read by plain h5py + hdf5plugin
            import hdf5plugin  # noqa: F401

            filters = f["grids"].id.get_create_plist()
            assert filters.get_filter(1)[0] == 32015
            assert_array_equal(f["grids"][0], next(iter(a)).grid)
        elif name in ("lz4", "blosc2-lz4", "blosc2-zstd", "blosc2-lz4-bitshuffle"):
            from hdf5plugin import BLOSC2_ID, LZ4_ID  # HDF5's filters decode the workers' chunks

            plist = f["grids"].id.get_create_plist()
            ids = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
            assert ids[-1] == (LZ4_ID if name == "lz4" else BLOSC2_ID)
            assert "hdf5plugin" in f.attrs["reading"]
            for i, rec in enumerate(a.shards[0]):
                assert_array_equal(f["grids"][i], rec.grid)
        else:
            assert f["grids"].compression == (None if name == "none" else name)


def test_default_storage_is_a_tenth_of_raw_float32(tmp_path):
    s = run([SAMPLE / "drugs.sdf"], tmp_path / "o", GridOptions())
    raw = 11 * 32**3 * 4
    assert s.written == 126
    assert s.bytes_per_structure <= raw / 10
    with h5py.File(tmp_path / "o" / "shard-00000.h5") as f:
        g = f["grids"]
        assert g.compression == "gzip" and g.shuffle and g.chunks == (1, 11, 32, 32, 32)
        for key in (
            "format",
            "format_version",
            "sigma",
            "channels",
            "grid_shape",
            "box",
            "padding",
            "pgrid_version",
            "command",
            "rounding_step",
            "max_rounding_error",
        ):
            assert key in f.attrs


def test_disorder_weights_reach_the_grid(tmp_path):
    opts = GridOptions(grid_size=16, disorder="weight", channels="single")
    s = run([CORPUS / "disorder.cif"], tmp_path / "o", opts)
    assert s.written == 1
    rec = ShardSet(tmp_path / "o")[0]
    assert sorted(rec.weights.tolist()) == [0.3, 0.4, 0.7, 1.0]
    assert rec.grid.sum() == pytest.approx(2.4, rel=1e-5)  # Σ occupancies of the cell
    assert s.notes == {"partial occupancy handled with disorder=weight": 1}


# ---------------------------------------------------------------------- nothing lost
def test_every_record_accounted_for(tmp_path):
    out = tmp_path / "o"
    s = run(MIXED, out, GridOptions(grid_size=12, shard_size=40))
    total = 126 + sum(CORPUS_RECORDS.values())
    assert s.total_items == s.read == total
    seen = Counter()
    for rec in ShardSet(out):
        seen[(rec.source, rec.record)] += 1
    errors = [json.loads(line) for line in (out / ERRORS).read_text().splitlines()]
    for e in errors:
        seen[(e["source"], e["record"])] += 1
        assert set(e) >= {"source", "record", "name", "reason"}
    expected = {(str(SAMPLE / "drugs.sdf"), r) for r in range(126)}
    for name, n in CORPUS_RECORDS.items():
        records = [-1] if name == "not_gzip.xyz.gz" else range(n)
        expected |= {(str(CORPUS / name), r) for r in records}
    assert set(seen) == expected and set(seen.values()) == {1}
    assert s.written == 126 + 13 and s.rejected == len(errors) == total - s.written
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["counts"]["read"] == total
    assert manifest["counts"]["rejected_by_kind"] == dict(sorted(s.rejected_by_kind.items()))
    assert [sh["n_items"] for sh in manifest["shards"]] == [40, 40, 40, 40, total - 160]


def test_rejections_at_gridding_time(tmp_path):
    chain = tmp_path / "chain.xyz"
    atoms = "\n".join(f"C {1.5 * i:.2f} 0 0" for i in range(16))  # 22.5 Å long
    chain.write_text(f"16\nname=chain\n{atoms}\n2\nname=short\nC 0 0 0\nC 1.5 0 0\n")
    s = run([chain], tmp_path / "o", GridOptions(grid_size=8, box="cube:18"))
    assert (s.written, s.rejected_by_kind) == (1, {pio.OUTSIDE_BOX: 1})
    (err,) = [json.loads(x) for x in (tmp_path / "o" / ERRORS).read_text().splitlines()]
    assert err["name"] == "chain" and "outside the 18 Å cube" in err["reason"]
    # Atoms just outside a cube (within 3σ) are kept: they contribute part of their density.
    s = run([chain], tmp_path / "o2", GridOptions(grid_size=8, box="cube:21.6"))
    assert s.written == 2
    # An element with no channel is a rejected record, never silently dropped.
    s = run(
        [SAMPLE / "small_molecules.xyz"],
        tmp_path / "o3",
        GridOptions(grid_size=8, channels="C,H,O"),
    )
    assert s.rejected_by_kind == {pio.UNKNOWN_ELEMENT: s.rejected} and s.rejected >= 5


# ---------------------------------------------------------------------- determinism
def test_workers_do_not_change_the_shards(tmp_path):
    opts = GridOptions(grid_size=12, shard_size=30)
    run(MIXED, tmp_path / "w0", opts, workers=0)
    s = run(MIXED, tmp_path / "w2", opts, workers=2, threads=2)
    assert s.written == 139
    assert contents(tmp_path / "w0") == contents(tmp_path / "w2")


def test_resume_after_a_kill_equals_a_clean_run(tmp_path):
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pgrid_cli.runs import grid as pp
        pp._TASK_BYTES = 8 * 11 * 12**3 * 4  # tasks of 8 records
        def die(p):
            if p.items >= 60:  # shard 0 (50 records) done, shard 1 half written
                os.kill(os.getpid(), signal.SIGKILL)
        opts = pp.GridOptions(grid_size=12, shard_size=50)
        pp.grid_files({MIXED!r}, {str(out)!r}, opts, workers=0, progress=die)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert (out / "shard-00000.h5").exists() and list(out.glob("shard-00001.h5.*.partial"))
    assert not (out / "shard-00001.h5").exists() and not (out / MANIFEST).exists()
    assert describe(out)["problems"]  # info sees an unfinished run

    opts = GridOptions(grid_size=12, shard_size=50)
    with pytest.raises(ValueError, match=r"not empty.*use resume"):
        run(MIXED, out, opts)
    s = run(MIXED, out, opts, resume=True)
    assert s.shards_kept == 1 and s.shards_written == 3 - 1 + 1  # shards 1, 2, 3 redone
    assert s.read == s.total_items == 168 and s.manifest
    run(MIXED, tmp_path / "clean", opts)
    resumed, clean = contents(out), contents(tmp_path / "clean")
    assert resumed == clean, differences(resumed, clean)
    assert not list(out.glob("*.partial"))


def test_resume_redoes_an_invalid_shard(tmp_path):
    opts = GridOptions(grid_size=12, shard_size=50)
    out = tmp_path / "o"
    run(MIXED, out, opts)
    before = contents(out)
    with h5py.File(out / "shard-00002.h5", "a") as f:
        f.attrs["n_items"] = 7  # as if a different, broken file were there
    (out / "shard-00000.h5").unlink()
    s = run(MIXED, out, opts, resume=True)
    assert (s.shards_kept, s.shards_written) == (2, 2)
    assert contents(out) == before


def test_slices_plus_index_equal_a_single_run(tmp_path):
    opts = GridOptions(grid_size=12, shard_size=20)
    whole = tmp_path / "whole"
    run(MIXED, whole, opts)
    out = tmp_path / "sliced"
    summaries = [run(MIXED, out, opts, shard_index=i, num_shards=3) for i in range(3)]
    assert [s.manifest for s in summaries] == [False, False, True]  # the last one indexes
    assert sorted(int(p.stem[-5:]) % 3 for p in out.glob("shard-*.h5")) == sorted(
        k % 3 for k in range(9)
    )
    assert sum(s.read for s in summaries) == 168
    write_index(out)  # what `pgrid index` runs: idempotent
    assert contents(out) == contents(whole)
    with pytest.raises(ValueError, match="slice 1 of 3 has already run"):
        run(MIXED, out, opts, shard_index=1, num_shards=3)


def test_index_refuses_an_unfinished_run(tmp_path):
    opts = GridOptions(grid_size=12, shard_size=20)
    out = tmp_path / "o"
    run(MIXED, out, opts, shard_index=0, num_shards=3)
    with pytest.raises(ValueError, match=r"slice.*1, 2 of 3 have not finished"):
        write_index(out)
    run(MIXED, out, opts, shard_index=2, num_shards=3)
    run(MIXED, out, opts, shard_index=1, num_shards=3)
    (out / "shard-00004.h5").unlink()
    with pytest.raises(ValueError, match=r"shard-00004\.h5 is missing"):
        write_index(out)


def test_slurm_environment_picks_the_slice():
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert slice_from_env(environ=env) == (3, 4)
    assert slice_from_env(
        environ={**env, "SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    ) == (3, 4)
    assert slice_from_env(1, 2, environ=env) == (1, 2)
    assert slice_from_env(environ={}) == (0, 1)
    with pytest.raises(ValueError, match=r"task 7 is no slice of this run of 4 slices"):
        slice_from_env(environ={**env, "SLURM_ARRAY_TASK_ID": "7"})
    with pytest.raises(ValueError, match="not an integer"):
        slice_from_env(environ={"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "four"})


def slurm(array: str, task: int, job: str = "100") -> dict[str, str]:
    """The SLURM_ARRAY_* variables Slurm gives task ``task`` of ``sbatch --array=ARRAY``."""
    ids: list[int] = []
    for part in array.split(","):
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        ids += range(int(lo), int(hi or lo) + 1, int(step or 1))
    assert task in ids
    steps = {b - a for a, b in itertools.pairwise(ids)}
    return {
        "SLURM_ARRAY_JOB_ID": job,
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(min(ids)),
        "SLURM_ARRAY_TASK_MAX": str(max(ids)),
        "SLURM_ARRAY_TASK_COUNT": str(len(ids)),
        "SLURM_ARRAY_TASK_STEP": str(steps.pop() if len(steps) == 1 else 1),
    }


def resolve(array: str, task: int, record=None, job: str = "100", **kw):
    return resolve_slice(
        kw.get("shard_index"), kw.get("num_shards"), SlurmArray.from_env(slurm(array, task, job)),
        record,
    )  # fmt: skip


def test_a_resubmitted_task_runs_its_own_slice_of_the_recorded_count():
    # First contact: --array=0-3 records N = 4, base 0, step 1.
    i, n, rec = resolve("0-3", 2)
    assert (i, n) == (2, 4)
    assert rec is not None and rec["num_slices"] == 4 and rec["task_base"] == 0
    # Resubmissions are shaped differently; Slurm's COUNT/MIN of them are ignored.
    assert resolve("1,3", 1, rec, job="101")[:2] == (1, 4)
    assert resolve("1,3", 3, rec, job="101")[:2] == (3, 4)
    assert resolve("1", 1, rec, job="102")[:2] == (1, 4)
    assert resolve("2-3", 3, rec, job="103")[:2] == (3, 4)
    assert resolve("1,3", 3, rec)[2] is None  # nothing new to record
    with pytest.raises(ValueError, match=r"task 4 is no slice of this run of 4 slices.* 0-3"):
        resolve("4", 4, rec)
    with pytest.raises(ValueError, match="divided into 4 slices"):
        resolve("1", 1, rec, num_shards=2)


def test_stepped_and_offset_arrays():
    # A first array starting at 1: task t is slice t − 1, also when resubmitted.
    i, n, rec = resolve("1-16", 1)
    assert (i, n, rec["task_base"]) == (0, 16, 1)
    assert resolve("1-16", 16, rec)[:2] == (15, 16)
    assert resolve("5,9", 9, rec, job="7")[:2] == (8, 16)
    # Stepped first array: the step is divided out and recorded.
    i, n, rec = resolve("0-8:2", 4)
    assert (i, n, rec["task_step"]) == (2, 5, 2)
    assert resolve("4-8:4", 8, rec, job="8")[:2] == (4, 5)
    with pytest.raises(ValueError, match=r"task 3 is no slice.*0-8:2"):
        resolve("3", 3, rec)
    # A first array that is a range with a step, resubmitted with a step (scenario c-stepped).
    _, _, rec = resolve("0-4", 0)
    assert [resolve("0-4:2", t, rec, job="9")[:2] for t in (0, 2, 4)] == [(0, 5), (2, 5), (4, 5)]
    # A sparse first array cannot say how many slices there are, unless told.
    with pytest.raises(ValueError, match="must be a range"):
        resolve("1,2,7", 2)
    i, n, rec = resolve("1,2,7", 7, num_shards=8)
    assert (i, n, rec["task_base"]) == (7, 8, 0)
    # --num-shards with an array spanning exactly N ids: task MIN is slice 0.
    assert resolve("1-4", 4, num_shards=4)[:2] == (3, 4)


def test_slurm_resubmissions_complete_the_run(tmp_path, monkeypatch):
    """The Slurm recipe: --array=0-3 with tasks 1 and 3 failing, then --array=1,3; then
    --array=1 after another failure; the shards equal a single-process run's."""
    opts = GridOptions(grid_size=12, shard_size=20)
    whole = tmp_path / "whole"
    run(MIXED, whole, opts)
    out = tmp_path / "o"

    def task(array: str, t: int, job: str):
        for k, v in slurm(array, t, job).items():
            monkeypatch.setenv(k, v)
        return run(MIXED, out, opts, resume=True)

    assert [task("0-3", t, "1").slice_index for t in (0, 2)] == [0, 2]
    rec = json.loads((out / "slices" / "slicing.json").read_text())
    assert (rec["num_slices"], rec["task_base"], rec["array_job_id"]) == (4, 0, "1")
    s1 = task("1,3", 1, "2")
    assert (s1.slice_index, s1.num_slices, s1.manifest) == (1, 4, False)
    s3 = task("1,3", 3, "2")
    assert (s3.slice_index, s3.num_slices, s3.manifest) == (3, 4, True)
    assert contents(out) == contents(whole)
    # A task rerun after the run finished keeps everything (resume).
    again = task("1", 1, "3")
    assert (again.slice_index, again.shards_written, again.shards_kept) == (1, 0, 2)
    assert contents(out) == contents(whole)


def test_missing_runs_what_is_left(tmp_path, monkeypatch):
    opts = GridOptions(grid_size=12, shard_size=20)
    whole = tmp_path / "whole"
    run(MIXED, whole, opts)
    out = tmp_path / "o"
    for k, v in slurm("0-3", 2, "5").items():
        monkeypatch.setenv(k, v)
    run(MIXED, out, opts, resume=True)  # slice 2 of 4 only
    for k in list(os.environ):
        if k.startswith("SLURM_"):
            monkeypatch.delenv(k)
    s = run(MIXED, out, opts, resume=True, missing=True)
    assert s.slices_run == [0, 1, 3] and s.num_slices == 4 and s.manifest
    assert s.to_json()["slices_run"] == [0, 1, 3]
    assert contents(out) == contents(whole)
    assert (out / MANIFEST).exists()
    # Nothing missing: nothing run, nothing touched, success.
    s = run(MIXED, out, opts, missing=True)
    assert s.slices_run == [] and s.total_items == 168 and s.shards_written == 0
    # Without a record, N must be given; with one, it must agree.
    with pytest.raises(ValueError, match="not 3"):
        run(MIXED, out, opts, missing=True, num_shards=3)
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match="says how many slices"):
        run(MIXED, fresh, opts, missing=True)
    s = run(MIXED, fresh, opts, missing=True, num_shards=2)
    assert s.slices_run == [0, 1] and s.manifest
    assert contents(fresh) == contents(whole)


def test_missing_skips_a_running_slice(tmp_path):
    from pgrid_cli.store.files import FileLock
    from pgrid_cli.store.rundir import slice_lock_path

    opts = GridOptions(grid_size=12, shard_size=20)
    out = tmp_path / "o"
    run(MIXED, out, opts, shard_index=0, num_shards=3)
    held = FileLock(slice_lock_path(out, 1, 3))  # slice 1 "runs" in another process
    code = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from pgrid_cli.store.files import FileLock
lock = FileLock(__import__("pathlib").Path({str(held.path)!r}))
assert lock.acquire(blocking=False)
print("held", flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        s = run(MIXED, out, opts, missing=True)
        assert s.slices_run == [2] and not s.manifest
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    s = run(MIXED, out, opts, missing=True)
    assert s.slices_run == [1] and s.manifest


# ---------------------------------------------------------------------- what the kernel refuses
TINY_CELL = """1
Lattice="10 0 0 0 10 0 0 0 0.001" Properties=species:S:1:pos:R:3 pbc="T T T"
C 0 0 0
"""
COARSE_TRICLINIC = """2
Lattice="30 0 0 15 26 0 5 5 30" Properties=species:S:1:pos:R:3 pbc="T T T"
C 1 1 1
O 5 5 5
"""


def test_a_structure_the_kernel_refuses_is_one_rejection(tmp_path):
    """Issue 9, item 6: a cell too small for σ, or a triclinic cell too coarse for it, is
    rejected alone; the other structures of its task are written."""
    mixed = tmp_path / "mixed.xyz"
    mixed.write_text((SAMPLE / "small_molecules.xyz").read_text() + TINY_CELL + COARSE_TRICLINIC)
    n_good = sum(1 for _ in iter_records(SAMPLE / "small_molecules.xyz"))
    s = run([mixed], tmp_path / "o", GridOptions(grid_size=8, sigma=0.02))
    assert s.written == n_good and s.rejected == 2
    assert s.rejected_by_kind == {"cannot grid": 2}
    errors = [json.loads(x) for x in (tmp_path / "o" / ERRORS).read_text().splitlines()]
    assert [e["record"] for e in errors] == [n_good, n_good + 1]
    assert errors[0]["reason"].startswith("atom 0: sigma")
    assert "triclinic" in errors[1]["reason"]
    # The same run resumed is complete at once: the refusals are final, not retried forever.
    again = run([mixed], tmp_path / "o", GridOptions(grid_size=8, sigma=0.02), resume=True)
    assert again.shards_kept == again.shards_written + again.shards_kept


def test_the_memory_cap_is_checked_before_any_work(tmp_path, monkeypatch):
    """Issue 9, item 8: PGRID_MAX_GRID_BYTES holds for pgrid grid, before anything is
    written (a grid of 11 × 256³ float32 is 0.69 GiB)."""
    monkeypatch.setenv("PGRID_MAX_GRID_BYTES", str(100_000_000))
    with pytest.raises(
        ValueError, match=r"one grid of shape \(11, 256, 256, 256\) needs 0\.69 GiB"
    ):
        run([SAMPLE / "crystals"], tmp_path / "never", GridOptions(grid_size=256))
    assert not (tmp_path / "never").exists()


def test_density_cut_off_by_the_box_is_counted(tmp_path):
    """Issue 9, item 19: the share of each structure's weight its grid holds is measured;
    structures below 99% are counted in the summary."""
    tight = run(
        [SAMPLE / "drugs.sdf"],
        tmp_path / "t",
        GridOptions(grid_size=8, box="tight", padding=1.5, sigma=1.0),
    )
    assert tight.low_capture > 100 and tight.min_captured < 0.95
    roomy = run(
        [SAMPLE / "drugs.sdf"], tmp_path / "f", GridOptions(grid_size=8, padding=4.0, sigma=0.5)
    )
    assert roomy.low_capture == 0 and roomy.min_captured > 0.999


WORKER_SCRIPT = """
import sys, time
from pgrid_cli.runs.grid import _start_pool  # the pool pgrid grid uses
pool = _start_pool(2)
print(" ".join(str(p) for p in pool._processes), flush=True)
time.sleep(600)
"""


def test_workers_exit_when_the_main_process_is_killed():
    """Issue 9, item 11: kill -9 of the main process takes its workers with it."""
    with subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT], stdout=subprocess.PIPE, text=True
    ) as proc:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        alive = pids
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [p for p in pids if _alive(p)]
        assert not alive, f"workers {alive} outlived their parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------- output directory
def test_output_directory_rules(tmp_path):
    opts = GridOptions(grid_size=8)
    out = tmp_path / "o"
    run([SAMPLE / "small_molecules.xyz"], out, opts)
    with pytest.raises(ValueError, match="is not empty"):
        run([SAMPLE / "small_molecules.xyz"], out, opts)
    with pytest.raises(ValueError, match=r"different run \(parameters differ: sigma 0.5 → 0.4"):
        run([SAMPLE / "small_molecules.xyz"], out, GridOptions(grid_size=8, sigma=0.4), resume=True)
    with pytest.raises(ValueError, match="cannot be combined"):
        run([SAMPLE / "small_molecules.xyz"], out, opts, resume=True, overwrite=True)
    (out / "notes.txt").write_text("mine")
    s = run([SAMPLE / "crystals"], out, opts, overwrite=True)
    assert s.written == 9 and len(ShardSet(out)) == 9
    assert (out / "notes.txt").read_text() == "mine"  # only pgrid's own files are replaced
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is not a directory"):
        run([SAMPLE / "crystals"], tmp_path / "file", opts)


def test_bad_options_fail_before_any_work(tmp_path):
    for opts, msg in [
        (GridOptions(grid_size=0), "grid shape must be positive"),
        (GridOptions(sigma=-1), "sigma must be a positive width"),
        (GridOptions(channels="C,Q"), "'Q' is not a chemical element"),
        (GridOptions(box="sphere"), "unknown box 'sphere'"),
        (GridOptions(box="cube:-3"), "cube side must be a positive length"),
        (GridOptions(padding=-1), "padding must be a non-negative"),
        (GridOptions(compression="bz2"), "unknown compression"),
        (GridOptions(dtype="int8"), "float32 or float16"),
        (GridOptions(disorder="drop"), "unknown disorder policy"),
        (GridOptions(format="pdbqt"), "unknown format"),
        (GridOptions(shard_size=0), "shard_size must be at least 1"),
    ]:
        with pytest.raises(ValueError, match=msg):
            run([SAMPLE / "crystals"], tmp_path / "never", opts)
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match=r"^workers must be 0 or more"):
        run([SAMPLE / "crystals"], tmp_path / "never", workers=-1)


def test_default_shard_size():
    gz = GridCodec()
    assert default_shard_size(32, 11, gz) == 5000
    assert default_shard_size(32, 1, gz) == 50_000
    assert default_shard_size(64, 11, gz) == 500
    assert default_shard_size(32, 11, GridCodec(compression="none")) == 100
    assert default_shard_size(256, 11, GridCodec(compression="none")) == 1


# ---------------------------------------------------------------------- shards of a run
def test_vds_spans_every_shard(tmp_path):
    out = tmp_path / "o"
    run(MIXED, out, GridOptions(grid_size=8, shard_size=40))
    manifest = write_index(out, vds=True)
    assert manifest["vds"] == "all.h5"
    vds = Shard(out / "all.h5")
    shards = ShardSet(out)
    assert len(vds) == len(shards) == 139
    for i in (0, 57, 138):
        a, b = vds[i], shards[i]
        assert_array_equal(a.grid, b.grid)
        assert_array_equal(a.positions, b.positions)
        assert (a.name, a.source, a.record) == (b.name, b.source, b.record)
    assert len(vds.rejections()) == 168 - 139
    os.chdir(tmp_path)  # the VDS finds its sources relative to itself, not the cwd
    assert Shard(out / "all.h5")[100].name == shards[100].name


def test_verify_shard_finds_damage(tmp_path):
    out = tmp_path / "o"
    run([SAMPLE / "small_molecules.xyz"], out, GridOptions(grid_size=8))
    path = out / "shard-00000.h5"
    assert verify_shard(path, deep=True).ok
    assert "first_item is 0, expected 5" in verify_shard(path, expect={"first_item": 5}).problem
    with h5py.File(path, "r") as f:
        offset = f["grids"].id.get_chunk_info(3).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 10 : offset + 60] = bytes(50)
    broken = out / "broken.h5"
    broken.write_bytes(bytes(data))
    assert verify_shard(broken).ok  # structure intact …
    assert "grid 3 cannot be read" in verify_shard(broken, deep=True).problem  # … data not
    broken.write_bytes(path.read_bytes()[:5000])
    assert "not a readable HDF5 file" in verify_shard(broken).problem
    broken.unlink()
    with h5py.File(path, "a") as f:
        del f.attrs["n_structures"]
    assert "was not closed" in verify_shard(path).problem
    d = describe(out)
    assert d["kind"] == "directory" and d["problems"]


def test_sample_data_flow_reads_back(tmp_path):
    """The README / make demo flow: everything in sample_data, one shard, read back."""
    s = run([SAMPLE], tmp_path / "o", GridOptions(grid_size=16))
    assert (s.files, s.read, s.written, s.rejected) == (73, 218, 218, 0)
    shards = ShardSet(tmp_path / "o")
    names = [r.name for r in shards]
    assert names[0] == "Cu" and "aspirin" in names and names[-1] == "thiophene"
    periodic = [r.box.periodic for r in shards]
    assert sum(periodic) == 9
    d = describe(tmp_path / "o")
    assert d["problems"] == [] and d["n_structures"] == 218
    assert d["parameters"]["channels"] == list(ChannelSpec.parse("elements").names)
    assert [len(list(iter_records(p))) for p in [SAMPLE / "drugs.sdf"]] == [126]


# ---------------------------------------------------------------------- integrity (issue 9)
def _flip_grid_byte(path: Path, i: int) -> None:
    with h5py.File(path, "r") as f:
        offset = f["grids"].id.get_chunk_info(i).byte_offset + 40
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_resume_redoes_a_shard_that_fails_its_checksums(tmp_path):
    """A one-byte flip in a grid chunk passed pgrid info and was kept by resume."""
    opts = GridOptions(grid_size=12, shard_size=50)
    out = tmp_path / "o"
    run(MIXED, out, opts)
    before = contents(out)
    _flip_grid_byte(out / "shard-00001.h5", 3)
    d = describe(out)
    assert [p for p in d["problems"] if p.startswith("shard-00001.h5")], d["problems"]
    s = run(MIXED, out, opts, resume=True)
    assert (s.shards_kept, s.shards_written) == (3, 1)
    assert contents(out) == before and describe(out)["problems"] == []


def test_info_reports_a_missing_or_changed_source_of_the_virtual_dataset(tmp_path):
    """HDF5 reads a missing VDS source as zeros; pgrid info must not pass it."""
    out = tmp_path / "o"
    run(MIXED, out, GridOptions(grid_size=8, shard_size=40))
    write_index(out, vds=True)
    assert describe(out)["problems"] == [] and describe(out / "all.h5")["problems"] == []
    moved = tmp_path / "shard-00001.h5"
    (out / "shard-00001.h5").rename(moved)
    with h5py.File(out / "all.h5") as f:  # what plain h5py shows: zeros, no error
        assert not f["grids"][45].any()
    for d in (describe(out), describe(out / "all.h5", deep=True)):
        assert any("shard-00001.h5 of the virtual dataset is missing" in p for p in d["problems"])
    shutil.copy(moved, out / "shard-00001.h5")
    _flip_grid_byte(out / "shard-00001.h5", 5)  # damaged: all.h5 checks its sources' bytes
    problems = describe(out / "all.h5")["problems"]
    assert any("shard-00001.h5: grid 5 fails its checksum" in p for p in problems), problems
    run(MIXED, tmp_path / "other", GridOptions(grid_size=8, shard_size=40, sigma=0.6))
    shutil.copy(tmp_path / "other" / "shard-00001.h5", out / "shard-00001.h5")
    problems = describe(out / "all.h5")["problems"]
    assert any("shard-00001.h5 changed since" in p for p in problems), problems


def test_errors_jsonl_survives_line_based_readers(tmp_path):
    """U+2028 / U+0085 in a record name were written raw: str.splitlines broke the line."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    name = "flat\u2028ethanol\x85 \u2029x"
    m = Chem.MolFromSmiles("CCO")
    AllChem.Compute2DCoords(m)  # a 2D record: rejected, with its name
    m.SetProp("_Name", name)
    sdf = tmp_path / "u.sdf"
    sdf.write_text(Chem.MolToMolBlock(m) + "$$$$\n", encoding="utf-8")
    out = tmp_path / "o"
    run([sdf, SAMPLE / "small_molecules.xyz"], out, GridOptions(grid_size=8))
    text = (out / ERRORS).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == 1
    assert [json.loads(line)["name"] for line in lines] == [name]


def test_another_spelling_of_the_inputs_is_one_run_stored_once(tmp_path, monkeypatch):
    """Relative and absolute spellings of the same inputs are one run (run_id from the
    resolved path), and what is stored (slice states, manifest, shards) has one form."""
    (tmp_path / "in").mkdir()
    shutil.copy(SAMPLE / "drugs.sdf", tmp_path / "in" / "drugs.sdf")
    (tmp_path / "link").symlink_to(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    opts = GridOptions(grid_size=8, shard_size=40)
    out = tmp_path / "o"
    run(["in/drugs.sdf"], out, opts, shard_index=0, num_shards=3)
    run([str(tmp_path / "in" / "drugs.sdf")], out, opts, shard_index=1, num_shards=3)
    s = run(["./link/../in/drugs.sdf"], out, opts, shard_index=2, num_shards=3)
    assert s.manifest
    canonical = str((tmp_path / "in" / "drugs.sdf").resolve())
    states = sorted((out / "slices").glob("slice-*.json"))
    assert {json.loads(p.read_text())["inputs"][0]["path"] for p in states} == {canonical}
    assert json.loads((out / MANIFEST).read_text())["inputs"][0]["path"] == canonical
    assert {rec.source for rec in ShardSet(out)} == {canonical}
    assert run(["link/drugs.sdf"], out, opts, resume=True).shards_kept == 4


def test_index_and_overwrite_remove_stale_temporaries(tmp_path):
    """A killed `pgrid index --vds` left all.h5.<pid>.tmp forever, even after overwrite."""
    out = tmp_path / "o"
    opts = GridOptions(grid_size=8, shard_size=40)
    run(MIXED, out, opts)
    stale = [
        "all.h5.4242.tmp",
        "all.h5.4242-0badf00d.tmp",
        "manifest.json.77.tmp",
        "errors.jsonl.9.tmp",
    ]
    for name in stale:
        (out / name).write_bytes(b"half written")
    write_index(out, vds=True)
    assert not [p.name for p in out.iterdir() if p.name in stale]
    for name in stale:
        (out / name).write_bytes(b"half written")
    run(MIXED, out, opts, overwrite=True)
    assert not list(out.glob("*.tmp"))
    (out / "all.h5.4243.tmp").write_bytes(b"")
    run(MIXED, out, opts, resume=True)
    assert not list(out.glob("*.tmp"))


def test_slice_messages_tell_started_from_complete(tmp_path):
    """'slice 1 of 3 has already run' was said of a slice that had never written a shard."""
    opts = GridOptions(grid_size=8, shard_size=20)
    out = tmp_path / "o"
    run(MIXED, out, opts, shard_index=1, num_shards=3)
    state_path = out / "slices" / "slice-00001-of-00003.json"
    state = json.loads(state_path.read_text())
    mine = sorted(out.glob("shard-*.h5"))
    assert [int(p.stem[-5:]) % 3 for p in mine] == [1, 1, 1]
    with pytest.raises(ValueError, match=r"slice 1 of 3 has already run .*\(it is complete\)"):
        run(MIXED, out, opts, shard_index=1, num_shards=3)
    # Killed after one shard: started and stopped, to be resumed.
    state_path.write_text(json.dumps({**state, "complete": False, "total_items": None}))
    for p in mine[1:]:
        p.unlink()
    with pytest.raises(ValueError, match=r"slice 1 of 3 was started .* after writing 1 of its"):
        run(MIXED, out, opts, shard_index=1, num_shards=3)
    # Killed before it wrote anything: there is nothing to resume or refuse.
    mine[0].unlink()
    (out / "shard-00004.h5.31337.partial").write_bytes(b"")
    s = run(MIXED, out, opts, shard_index=1, num_shards=3)
    assert s.shards_written == 3 and not list(out.glob("*.partial"))


def test_a_run_that_fails_before_writing_a_shard_leaves_the_directory_as_it_was(
    tmp_path, monkeypatch
):
    """--grid-size 2000 failed and left slices/ behind, which refused the corrected run."""
    import pgrid_cli.runs.gridtask as pp

    def too_big(*args, **kw):
        raise MemoryError("Unable to allocate 328. GiB for an array")

    inputs = [SAMPLE / "small_molecules.xyz"]
    empty = tmp_path / "empty"
    empty.mkdir()
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with monkeypatch.context() as m:
        m.setattr(pp, "render_batch", too_big)
        for out, kw in [
            (tmp_path / "new" / "deeper", {}),
            (empty, {}),
            (tmp_path / "sliced", {"shard_index": 0, "num_shards": 2}),
            (tmp_path / "resumed", {"resume": True}),
        ]:
            with pytest.raises(MemoryError):
                run(inputs, out, GridOptions(grid_size=16), **kw)
        with pytest.raises(ValueError, match="is not empty"):
            run(inputs, user, GridOptions(grid_size=16))
        # A resume that fails before its first shard puts back the state it replaced.
        half = tmp_path / "half"
        m.undo()
        run(inputs, half, GridOptions(grid_size=8, shard_size=10))
        m.setattr(pp, "render_batch", too_big)
        state_path = half / "slices" / "slice-00000-of-00001.json"
        state_path.write_text(state_path.read_text().replace('"complete": true', '"complete": 0'))
        (half / "shard-00001.h5").unlink()
        before = sorted((p.name, p.read_bytes()) for p in half.rglob("*") if p.is_file())
        with pytest.raises(MemoryError):
            run(inputs, half, GridOptions(grid_size=8, shard_size=10), resume=True)
        after = sorted((p.name, p.read_bytes()) for p in half.rglob("*") if p.is_file())
        assert after == before
    assert not (tmp_path / "new").exists() and not (tmp_path / "sliced").exists()
    assert list(empty.iterdir()) == [] and not (tmp_path / "resumed").exists()
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    corrected = GridOptions(grid_size=8)
    assert run(inputs, empty, corrected).written == 19
    assert run(inputs, tmp_path / "sliced", corrected, shard_index=0, num_shards=2).read == 19


def _kernel_grid(rec) -> np.ndarray:
    """The kernel's float32 grid of a stored structure (default σ and channels)."""
    spec = ChannelSpec.parse("elements")
    chans = spec.assign(rec.numbers)
    return grid(rec.positions, rec.box, 0.5, channels=chans, n_channels=spec.n_channels)


def test_float16_bound_holds_against_the_kernel(tmp_path):
    """With dtype float16, max_rounding_error said 4.77e-7 while the real error was
    ~3e-6: the stored bound now covers the cast, against the kernel's float32 grids."""
    out = tmp_path / "o"
    inputs = [SAMPLE / "drugs.sdf", *sorted((SAMPLE / "crystals").glob("*.cif"))]
    run(inputs, out, GridOptions(grid_size=24, dtype="float16"))
    with h5py.File(out / "shard-00000.h5") as f:
        bound = float(f.attrs["max_rounding_error"])
    worst = 0.0
    for rec in ShardSet(out):
        kernel = _kernel_grid(rec)
        worst = max(worst, float(np.abs(rec.grid.astype(np.float64) - kernel).max()))
    assert 4.8e-7 < worst <= bound < 4 * worst
    assert describe(out)["parameters"]["max_rounding_error"] == bound


def test_captured_fraction_is_stored_and_summarised(tmp_path):
    """captured = Σ grid ÷ Σ weights per structure; info shows the smallest and how many
    are below 0.99 (atoms cut off by a fixed cube)."""
    out = tmp_path / "o"
    run([SAMPLE / "drugs.sdf"], out, GridOptions(grid_size=16, box="cube:9"))
    values = []
    for rec in ShardSet(out):
        kernel = _kernel_grid(rec)
        assert rec.captured == pytest.approx(kernel.sum(dtype=np.float64) / len(rec.numbers))
        values.append(rec.captured)
    d = describe(out)
    assert d["captured_min"] == pytest.approx(min(values))
    assert d["captured_below"] == sum(v < 0.99 for v in values) > 0
    assert d["captured_threshold"] == 0.99
