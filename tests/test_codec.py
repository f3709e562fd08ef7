"""Grid storage (pgrid_cli.store.codec): the rounding bound, and chunks encoded outside HDF5 that
plain h5py (HDF5's own shuffle + deflate filters) decodes to the same values."""

from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from pgrid_cli import available_isas
from pgrid_cli.store.codec import DEFAULT_STEP, GridCodec, deflate, shuffle


def sparse_grid(seed=0, shape=(3, 20, 20, 20)):
    """Mostly zero with a few dense blobs, like a density grid."""
    rng = np.random.default_rng(seed)
    g = np.zeros(shape, np.float32)
    g[1, 4:12, 5:9, :] = rng.random((8, 4, 20), dtype=np.float32) * 0.3
    g[2, 15:, :, 3:5] = rng.random((5, 20, 2), dtype=np.float32) * 1e-6
    return g


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
def test_shuffle_is_hdf5_byte_transpose(dtype):
    a = (np.arange(24) * 7).astype(dtype)
    s = shuffle(a)
    size = np.dtype(dtype).itemsize
    expect = a.view(np.uint8).reshape(-1, size).T.reshape(-1)
    assert_array_equal(s, expect)
    back = np.ascontiguousarray(np.asarray(s).reshape(size, -1).T).view(dtype).reshape(-1)
    assert_array_equal(back, a)


@pytest.mark.parametrize(
    "data",
    [
        np.zeros(100_000, np.uint8),
        np.zeros(10, np.uint8),
        np.arange(50_000, dtype=np.uint8),
        np.random.default_rng(1).integers(0, 256, 70_000).astype(np.uint8),
        np.concatenate(
            [
                np.zeros(9000, np.uint8),
                np.arange(5000, dtype=np.uint8),
                np.zeros(40_000, np.uint8),
                np.ones(3, np.uint8),
                np.zeros(12_345, np.uint8),
            ]
        ),
    ],
    ids=["zeros", "tiny", "dense", "random", "runs"],
)
@pytest.mark.parametrize("level", [1, 6])
def test_deflate_is_a_valid_zlib_stream(data, level):
    packed = deflate(data, level)
    assert zlib.decompress(packed) == data.tobytes()  # checks the Adler-32 trailer too
    if not data.any():  # all zeros: next to nothing
        assert len(packed) < max(64, data.nbytes // 100)
    # incompressible data grows by at most ~0.1% (block headers, the zlib wrapper)
    assert len(packed) <= data.nbytes + data.nbytes // 1000 + 64


def test_rounding_bounds_and_exactness():
    rng = np.random.default_rng(2)
    g = (rng.random((2, 4, 16, 16, 16)) ** 8).astype(np.float32)  # many tiny values
    g[0, 0, 0, 0, :3] = [-1e-9, 1e-9, 3e-7]
    g[1, 2] = 0.0  # an empty channel stays exactly empty
    codec = GridCodec()
    q = codec.round(g.copy())
    steps = q.astype(np.float64) / DEFAULT_STEP
    assert_array_equal(steps, np.rint(steps))  # exact multiples of the step
    assert np.abs(q - g).max() < DEFAULT_STEP == codec.max_rounding_error < 4.8e-7
    # Largest-remainder rounding keeps every channel's sum to half a step.
    sums = g.sum(axis=(2, 3, 4), dtype=np.float64)
    qsums = q.sum(axis=(2, 3, 4), dtype=np.float64)
    assert np.abs(qsums - sums).max() <= DEFAULT_STEP / 2
    # Plain rounding to nearest would have lost the tails' mass.
    nearest = np.rint(g.astype(np.float64) / DEFAULT_STEP) * DEFAULT_STEP
    assert np.abs(nearest.sum(axis=(2, 3, 4)) - sums).max() > 20 * DEFAULT_STEP
    assert q[0, 0, 0, 0, 0] == 0 and not np.signbit(q[0, 0, 0, 0, 0])  # -tiny → +0
    assert (q[1, 2] == 0).all()
    assert np.mean(q == 0) > np.mean(g == 0) + 0.1  # tiny values become zeros
    lossless = GridCodec(step=0.0)
    assert_array_equal(lossless.round(g.copy()), g)


def test_grids_of_tiny_values_get_a_finer_step():
    """docs/format.md §3 also bounds the error by 1e-4 × max(value): a grid whose largest value is
    2e-4 (a small cell on a fine grid) is rounded to a step of 2^-26, not 2^-21."""
    codec = GridCodec()
    assert codec.step_for(0.05) == DEFAULT_STEP
    assert codec.step_for(2e-4) == 2.0**-27  # largest power of two <= 1e-8
    assert codec.step_for(0.0) == DEFAULT_STEP
    g = (np.random.default_rng(3).random((2, 8, 8, 8)) * 2e-4).astype(np.float32)
    q = codec.round(g.copy())
    assert np.abs(q - g).max() < 1e-4 * g.max() * 0.5
    assert_array_equal(q / 2.0**-27, np.rint(q / 2.0**-27))


@pytest.mark.parametrize("compression", ["gzip", "none"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_encoded_chunks_read_back_with_plain_h5py(tmp_path, compression, dtype):
    codec = GridCodec(dtype=dtype, compression=compression)
    grids = [codec.round(sparse_grid(s)) for s in range(3)]
    # An incompressible chunk: HDF5 then stores it with deflate marked as skipped.
    bits = np.random.default_rng(9).integers(0, 2**32, grids[0].shape, dtype=np.uint32)
    noise = bits.view(np.float32)  # random bit patterns (NaNs included): compared bitwise
    if dtype == "float32":
        grids.append(noise)
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset(
            "g",
            shape=(len(grids), *grids[0].shape),
            dtype=dtype,
            chunks=(1, *grids[0].shape),
            **codec.h5_options(),
        )
        masks = []
        for i, g in enumerate(grids):
            data, mask = codec.encode(g)
            masks.append(mask)
            d.id.write_direct_chunk((i, 0, 0, 0, 0), data, mask)
    with h5py.File(path, "r") as f:
        back = f["g"][:]
    for g, b in zip(grids, back, strict=True):
        assert b.tobytes() == g.astype(dtype).tobytes()
    if compression == "gzip":
        assert masks[:3] == [0, 0, 0]
        assert masks[3:] == ([0b10] if dtype == "float32" else [])  # noise does not deflate


def test_codec_options():
    assert GridCodec.parse("gzip:6").level == 6
    assert GridCodec.parse("zstd:19").level == 19 and GridCodec.parse("zstd").encodes_chunks
    assert GridCodec.parse("gzip", lossless=True).step == 0
    assert GridCodec.parse("LZF").compression == "lzf"
    assert not GridCodec.parse("lzf").encodes_chunks
    for bad, msg in [
        ("zip", "unknown compression"),
        ("gzip:0", "gzip level must be 1-9"),
        ("gzip:x", "gzip level must be a whole number"),
        ("zstd:23", "zstd level must be 1-22"),
        ("lzf:3", r"only gzip, zstd and blosc2-\* take a level"),
    ]:
        with pytest.raises(ValueError, match=msg):
            GridCodec.parse(bad)
    with pytest.raises(ValueError, match="float32 or float16"):
        GridCodec(dtype="float64")
    with pytest.raises(ValueError, match="power of two"):
        GridCodec(step=1e-6)
    with pytest.raises(ValueError, match="written by h5py"):
        GridCodec(compression="lzf").encode(sparse_grid())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rounding_keeps_sums_on_wide_random_grids(seed):
    """Many values just below half a step (a deficit of hundreds of steps per channel)
    must still leave each channel within half a step of its sum."""
    rng = np.random.default_rng(seed)
    grid = (rng.random((3, 100_000)) ** 8).astype(np.float32)
    grid[1] = 0.0
    rounded = grid.copy()
    codec = GridCodec()
    codec.round(rounded)
    step = codec.step_for(float(grid.max()))
    sums = np.abs(rounded.sum(axis=1, dtype=np.float64) - grid.sum(axis=1, dtype=np.float64))
    assert np.all(sums <= 0.5 * step)
    assert np.abs(rounded - grid).max() < step
    assert not rounded[1].any()
    again = grid.copy()
    codec.round(again)
    np.testing.assert_array_equal(again, rounded)  # deterministic


@pytest.mark.parametrize("isa", available_isas())
def test_native_shuffle_round_trip_on_every_isa(isa):
    from pgrid_cli import _core

    x = np.random.default_rng(5).random(1001).astype(np.float32)  # not a vector multiple
    shuffled = np.empty(4 * x.size, np.uint8)
    _core.shuffle4(x, shuffled, isa)
    assert_array_equal(shuffled, shuffle(x))
    back = np.empty_like(x)
    _core.unshuffle4(shuffled, back, isa)
    assert_array_equal(back, x)
