"""The plugin codecs (pgrid_cli.store.plugins): chunks encoded by pgrid's workers that
plain h5py + hdf5plugin (HDF5's LZ4 and Blosc2 filters, an independent reader) decodes
bitwise, through pgrid's own reader too, with checksums and ``pgrid info`` saying so."""

from __future__ import annotations

import h5py
import hdf5plugin
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from typer.testing import CliRunner

from pgrid_cli.cli import app
from pgrid_cli.runs.grid import GridOptions, grid_files
from pgrid_cli.store.codec import GridCodec
from pgrid_cli.store.plugins import PLUGIN_COMPRESSIONS, _lz4_decode
from pgrid_cli.store.shard import Shard, ShardSet

from .conftest import SAMPLE
from .test_codec import sparse_grid

FILTER_IDS = {
    "lz4": hdf5plugin.LZ4_ID,
    **dict.fromkeys(PLUGIN_COMPRESSIONS[1:], hdf5plugin.BLOSC2_ID),
}


def _grids(codec: GridCodec, lossless: bool, dtype: str) -> list[np.ndarray]:
    grids = [sparse_grid(s) for s in range(3)]
    if not lossless:
        grids = [codec.round(g) for g in grids]
    # Random bit patterns (NaNs included, compared bitwise): incompressible blocks.
    bits = np.random.default_rng(9).integers(0, 2**32, grids[0].shape, dtype=np.uint32)
    if dtype == "float32":  # (as float16 they would overflow)
        grids.append(bits.view(np.float32))
    grids.append(np.zeros_like(grids[0]))  # every channel empty
    return grids


@pytest.mark.parametrize("compression", PLUGIN_COMPRESSIONS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("lossless", [False, True])
def test_chunks_read_back_bitwise_with_plain_h5py_and_hdf5plugin(
    tmp_path, compression, dtype, lossless
):
    codec = GridCodec.parse(compression, dtype, lossless=lossless)
    grids = _grids(codec, lossless, dtype)
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset(
            "g",
            shape=(len(grids), *grids[0].shape),
            dtype=dtype,
            chunks=(1, *grids[0].shape),
            **codec.h5_options(),
        )
        plist = d.id.get_create_plist()
        ids = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
        assert ids[-1] == FILTER_IDS[compression]
        for i, g in enumerate(grids):
            chunk = codec.encode(g)
            assert chunk[1] == 0
            assert codec.decode(chunk[0], chunk[1], g.shape).tobytes() == g.astype(dtype).tobytes()
            d.id.write_direct_chunk((i, 0, 0, 0, 0), chunk[0], chunk[1])
    with h5py.File(path, "r") as f:  # HDF5's own filters (hdf5plugin) decode them
        back = f["g"][:]
    for g, b in zip(grids, back, strict=True):
        assert b.tobytes() == g.astype(dtype).tobytes()


def test_lz4_blocks_are_channel_byte_planes_and_zero_channels_are_shared():
    """The LZ4 filter chunk: 12-byte header (size, block size = voxels per channel), then one
    block per byte plane per channel; empty channels all carry the same cached block."""
    codec = GridCodec.parse("lz4")
    g = codec.round(sparse_grid(1))  # channel 0 empty
    data = codec.encode(g)[0]
    assert int.from_bytes(data[:8], "big") == g.nbytes
    assert int.from_bytes(data[8:12], "big") == g[0].size
    zero_block = int.from_bytes(data[12:16], "big")
    assert zero_block < g[0].size // 100  # 8,000 zero bytes compress to a few dozen
    raw = np.frombuffer(_lz4_decode(data), np.uint8)
    planes = g.reshape(3, -1).view(np.uint8).reshape(3, -1, 4).transpose(2, 0, 1)
    assert_array_equal(raw, planes.reshape(-1))  # HDF5's shuffle order, independently built


@pytest.mark.parametrize("compression", ["lz4", "blosc2-zstd", "blosc2-lz4-bitshuffle"])
def test_pgrid_grid_shards_verify_and_pgrid_info_shows_the_codec(tmp_path, compression):
    xyz = SAMPLE / "small_molecules.xyz"
    grid_files([xyz], tmp_path / "o", GridOptions(grid_size=12, compression=compression))
    grid_files([xyz], tmp_path / "raw", GridOptions(grid_size=12, lossless=True))
    shards = ShardSet(tmp_path / "o")
    path = shards.shards[0].path
    check = Shard(path).verify()
    assert check.ok and check.checksums == "verified"
    bound = float(Shard(path).attrs["max_rounding_error"])
    with h5py.File(path) as f:
        assert f.attrs["compression"] == compression.split(":")[0]
        for i, (rec, ref) in enumerate(zip(shards, ShardSet(tmp_path / "raw"), strict=True)):
            assert_array_equal(f["grids"][i], rec.grid)  # plain h5py + hdf5plugin
            assert np.abs(rec.grid.astype(np.float64) - ref.grid).max() <= bound
    out = CliRunner().invoke(app, ["info", str(tmp_path / "o")], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert compression in out.output and "hdf5plugin" in out.output
    out = CliRunner().invoke(app, ["info", str(path)], terminal_width=200)
    assert str(FILTER_IDS[compression]) in out.output  # the HDF5 filter id


def test_plugin_levels():
    assert GridCodec.parse("blosc2-lz4").level == 5
    assert GridCodec.parse("blosc2-zstd-bitshuffle").level == 1
    assert GridCodec.parse("blosc2-zstd:9").level == 9
    with pytest.raises(ValueError, match="blosc2-lz4 level must be 1-9"):
        GridCodec.parse("blosc2-lz4:10")
    with pytest.raises(ValueError, match="only gzip, zstd and blosc2"):
        GridCodec.parse("lz4:3")
