"""Shard files (docs/format.md §6): round trips, atomic completion, format checks."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from pgrid_cli import Box, grid
from pgrid_cli.store.shard import Shard, ShardMeta, ShardSet, ShardWriter, shard_name


def _structures(rng, n):
    out = []
    for s in range(n):
        m = 3 + s
        pos = rng.normal(size=(m, 3)) * 1.5
        z = rng.choice([1, 6, 7, 8], size=m)
        out.append((z, pos, Box.fit(pos, shape=12)))
    return out


def _columns(structs):
    """append()'s per-structure arguments after the grids, for three structures."""
    boxes, numbers, positions = ([s[k] for s in structs] for k in (2, 0, 1))
    return boxes, numbers, positions, ["a", "b", "c"], ["x"] * 3, [0, 1, 2]


def _write(path, structs, dtype="float32", compression="gzip"):
    meta = ShardMeta(sigma=0.5, channels=["all"], grid_shape=(12, 12, 12), command="test")
    grids = np.stack([grid(p, b, 0.5) for _, p, b in structs])
    with ShardWriter(path, meta, dtype=dtype, compression=compression) as w:
        w.append(
            grids[:2],
            [b for *_, b in structs[:2]],
            [z for z, *_ in structs[:2]],
            [p for _, p, _ in structs[:2]],
            ["a", "b"],
            ["in.xyz"] * 2,
            [0, 1],
        )
        w.append(
            grids[2:],
            [b for *_, b in structs[2:]],
            [z for z, *_ in structs[2:]],
            [p for _, p, _ in structs[2:]],
            ["c", "d"],
            ["in.xyz"] * 2,
            [2, 3],
        )
    return grids


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_round_trip(tmp_path, compression):
    rng = np.random.default_rng(1)
    structs = _structures(rng, 4)
    path = tmp_path / shard_name(0)
    grids = _write(path, structs, compression=compression)
    shard = Shard(path)
    assert len(shard) == 4
    assert shard.sigma == 0.5
    assert shard.channels.names == ("all",)
    for i, (z, pos, box) in enumerate(structs):
        rec = shard[i]
        assert_array_equal(rec.grid, grids[i])
        assert rec.box == box
        assert_array_equal(rec.numbers, z)
        assert_allclose(rec.positions, pos, rtol=0, atol=0)
        assert rec.name == "abcd"[i] and rec.record == i and rec.source == "in.xyz"
    with h5py.File(path) as f:
        assert f["grids"].chunks == (1, 1, 12, 12, 12)
        assert f.attrs["format"] == "pgrid-shard" and f.attrs["format_version"] == 1
        assert_array_equal(f["atom_offset"][:], np.cumsum([0] + [len(s[0]) for s in structs]))


def test_float16_storage(tmp_path):
    structs = _structures(np.random.default_rng(2), 4)
    path = tmp_path / shard_name(0)
    grids = _write(path, structs, dtype="float16")
    rec = Shard(path)[1]
    assert rec.grid.dtype == np.float16
    assert_allclose(rec.grid.astype(np.float32), grids[1], atol=1e-3 * grids[1].max())


def test_partial_file_never_has_final_name(tmp_path):
    path = tmp_path / shard_name(0)
    meta = ShardMeta(sigma=0.5, channels=["all"], grid_shape=(4, 4, 4))
    with pytest.raises(RuntimeError), ShardWriter(path, meta) as w:
        assert w.partial.exists() and not path.exists()
        raise RuntimeError("interrupted")
    assert not path.exists()
    assert not list(tmp_path.iterdir())


def test_shard_set_and_pickling(tmp_path):
    rng = np.random.default_rng(3)
    _write(tmp_path / shard_name(0), _structures(rng, 4))
    _write(tmp_path / shard_name(1), _structures(rng, 4))
    ss = ShardSet(tmp_path)
    assert len(ss) == 8
    shard, j = ss.locate(5)
    assert shard.path.name == shard_name(1) and j == 1
    assert ss[5].name == "b"
    clone = pickle.loads(pickle.dumps(ss.shards[0]))
    assert clone[3].name == "d"


def test_not_a_shard(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="not a pgrid shard"):
        Shard(path)
    (tmp_path / "junk.h5").write_text("hello")
    with pytest.raises(OSError, match="not a readable HDF5 file"):
        Shard(tmp_path / "junk.h5")
    with pytest.raises(ValueError, match="no such shard file or directory"):
        ShardSet(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no shard-"):
        ShardSet(tmp_path / "empty")


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_fast_read_path_matches_hdf5_filters(tmp_path, compression):
    """Shard.grid decodes shuffle+gzip (or zstd) chunks itself (ISA-L or zstandard +
    native unshuffle); the result must be exactly what HDF5's filters give (hdf5plugin's
    Zstandard filter for zstd), including gzip chunks stored with deflate skipped
    (incompressible data, filter mask bit 1)."""
    import hdf5plugin  # noqa: F401  (HDF5's own Zstandard filter, for the comparison)

    from pgrid_cli.store.codec import GridCodec

    rng = np.random.default_rng(6)
    structs = _structures(rng, 3)
    meta = ShardMeta(sigma=0.5, channels=["all"], grid_shape=(12, 12, 12))
    codec = GridCodec(compression=compression, step=0.0)  # lossless
    grids = np.stack([grid(p, b, 0.5) for _, p, b in structs])
    # Random bit patterns: deflate cannot shrink them, so the chunk is stored shuffled only.
    grids[2] = rng.integers(0, 2**32, size=(1, 12, 12, 12), dtype=np.uint32).view(np.float32)
    chunks = [codec.encode(g) for g in grids]
    if compression == "gzip":
        assert chunks[2][1] == 0b10 and chunks[0][1] == 0
    path = tmp_path / shard_name(0)
    with ShardWriter(path, meta, compression=codec) as w:
        w.append(chunks, *_columns(structs), encoded=True)
    shard = Shard(path)
    with h5py.File(path) as f:
        for i in range(3):
            assert_array_equal(shard.grid(i), f["grids"][i])  # HDF5's own decoding
            assert_array_equal(shard.grid(i), grids[i])
    assert shard._fast == compression


# ---------------------------------------------------------------------- integrity (issue 9)
def _flip(path, offset, out):
    """A copy of ``path`` with one byte flipped at ``offset``."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    out.write_bytes(bytes(data))
    return out


def test_checksums_catch_one_flipped_byte_in_grids_positions_or_record(tmp_path):
    """A one-byte flip in a grid chunk passed pgrid info (and resume); one in positions
    or record passed even --deep. Every shard now carries checksums that catch each."""
    from pgrid_cli.store.verify import verify_shard

    path = tmp_path / shard_name(0)
    _write(path, _structures(np.random.default_rng(7), 4))
    assert Shard(path).verify().ok and Shard(path).verify().checksums == "verified"
    with h5py.File(path) as f:
        spots = {
            "grid": f["grids"].id.get_chunk_info(2).byte_offset + 20,
            "positions": f["positions"].id.get_offset() + 8 * 5 + 3,
            "record": f["record"].id.get_offset() + 8,
        }
    for what, offset in spots.items():
        bad = _flip(path, offset, tmp_path / f"bad-{what}.h5")
        check = verify_shard(bad, checksums=True)
        assert not check.ok, what
        assert "checksum" in check.problem or "cannot be read" in check.problem, check.problem
        assert not Shard(bad).verify().ok
    assert verify_shard(tmp_path / "bad-positions.h5").ok  # the structural check alone …
    assert verify_shard(tmp_path / "bad-positions.h5", deep=True).ok  # … passes it


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_checksums_are_of_the_stored_bytes(tmp_path, compression):
    """checksums/grids is the CRC-32 of each raw chunk as stored, whoever compressed it
    (pgrid's encoder or h5py's filters), so checking reads no decompressed data."""
    import zlib

    path = tmp_path / shard_name(0)
    _write(path, _structures(np.random.default_rng(8), 4), compression=compression)
    with h5py.File(path) as f:
        g = f["grids"]
        stored = [zlib.crc32(g.id.read_direct_chunk((i, 0, 0, 0, 0))[1]) for i in range(4)]
        assert f["checksums/grids"].dtype == np.uint32
        assert f["checksums/grids"][()].tolist() == stored
        names = {k for k in f["checksums"].attrs if k != "algorithm"}
        assert names == {k for k in f if k not in ("grids", "checksums")}
        assert "captured" in names and "positions" in names and "rejected" in names


def test_shards_without_checksums_still_read_and_say_so(tmp_path):
    from pgrid_cli.store.rundir import describe
    from pgrid_cli.store.verify import verify_shard

    path = tmp_path / shard_name(0)
    grids = _write(path, _structures(np.random.default_rng(9), 4))
    with h5py.File(path, "a") as f:  # as written before pgrid stored checksums
        del f["checksums"], f["captured"]
    assert_array_equal(Shard(path)[1].grid, grids[1])
    assert Shard(path)[1].captured is None
    check = verify_shard(path, checksums=True)
    assert check.ok and check.checksums == "absent"
    d = describe(path)
    assert d["problems"] == [] and d["checksums"] == "absent"
    assert any("no checksums" in n for n in d["notes"])


def test_captured_is_stored_given_or_computed(tmp_path):
    """captured = Σ grid ÷ Σ weights per structure: given by the caller (the worker
    computes it before rounding), or computed from the grids given, or from encoded
    chunks (plain (bytes, mask) pairs are decoded)."""
    from pgrid_cli.store.codec import GridCodec

    structs = _structures(np.random.default_rng(10), 3)
    grids = np.stack([grid(p, b, 0.5) for _, p, b in structs])
    meta = ShardMeta(sigma=0.5, channels=["all"], grid_shape=(12, 12, 12))
    args = _columns(structs)
    codec = GridCodec()
    want = [g.sum(dtype=np.float64) / len(z) for g, (z, *_) in zip(grids, structs, strict=True)]
    for k, how in enumerate(["arrays", "given", "encoded", "pairs"]):
        path = tmp_path / shard_name(k)
        with ShardWriter(path, meta, compression=codec) as w:
            if how == "arrays":
                w.append(grids, *args)
            elif how == "given":
                w.append(grids, *args, captured=[0.5, 0.25, 1.0])
            else:
                chunks = [codec.encode(codec.round(g.copy())) for g in grids]
                if how == "pairs":
                    chunks = [(bytes(c[0]), int(c[1])) for c in chunks]
                w.append(chunks, *args, encoded=True)
        got = [rec.captured for rec in Shard(path)]
        if how == "given":
            assert got == [0.5, 0.25, 1.0]
        else:
            assert_allclose(got, want, rtol=1e-6)
        assert Shard(path).verify().ok


def test_float16_bound_covers_the_cast():
    """The stored bound is the rounding step plus the float16 cast's error at the largest
    value, never the float32 step alone (4.77e-7)."""
    from pgrid_cli.store.codec import DEFAULT_STEP, GridCodec

    rng = np.random.default_rng(11)
    g = (rng.random((2, 8, 8, 8)) ** 4 * 0.3).astype(np.float32)
    for codec in (GridCodec(dtype="float16"), GridCodec(dtype="float16", step=0.0)):
        r = codec.round(g.copy())
        err = np.abs(r.astype(np.float16).astype(np.float64) - g).max()
        bound = codec.error_bound(float(g.max()))
        assert err <= bound < 2 * err + DEFAULT_STEP
        assert bound > DEFAULT_STEP
    assert GridCodec().error_bound(float(g.max())) == DEFAULT_STEP
