"""Grid chunks for HDF5's plugin filters: LZ4 and Blosc2 (LZ4 or Zstandard inside).

These are the fast ``--compression`` choices. Each writes, in the worker processes, exactly
the chunk bytes that the filter of the same name in ``hdf5plugin`` stores and reads, so
a shard is read by plain h5py after ``import hdf5plugin`` (pgrid's readers import it
themselves); gzip stays the default because any HDF5 reader decodes it.

* ``lz4``: HDF5's shuffle filter, then the LZ4 filter (id 32004). The LZ4 filter's chunk
  is: total size (8 bytes, big-endian), block size (4 bytes), then per block its
  compressed size (4 bytes) and an LZ4 block (stored raw when that is not smaller). The
  blocks here are one byte plane of one channel each, so a channel that is all zeros —
  most element channels of a molecule — is a cached block, never compressed again.
* ``blosc2-lz4``, ``blosc2-zstd`` (byte shuffle inside Blosc2) and
  ``blosc2-lz4-bitshuffle``, ``blosc2-zstd-bitshuffle``: the Blosc2 filter (id 32026),
  whose chunk is a Blosc2 contiguous frame holding one Blosc2 chunk (the ``blosc2``
  package writes both).
"""

from __future__ import annotations

import functools
import struct
import threading
from typing import Any

import numpy as np

from .. import _core

#: HDF5 filter ids (registered with The HDF Group; ``hdf5plugin`` carries both).
LZ4_FILTER = 32004
BLOSC2_FILTER = 32026
#: ``--compression`` names of this module → (Blosc2 codec name, shuffle kind); lz4 has none.
BLOSC2 = {
    "blosc2-lz4": ("lz4", "shuffle"),
    "blosc2-zstd": ("zstd", "shuffle"),
    "blosc2-lz4-bitshuffle": ("lz4", "bitshuffle"),
    "blosc2-zstd-bitshuffle": ("zstd", "bitshuffle"),
}
PLUGIN_COMPRESSIONS = ("lz4", *BLOSC2)
#: Default Blosc2 compression level by codec (levels are 1-9): the fastest on density grids
#: (docs/benchmarks.md, "Storage codecs"); LZ4's size hardly changes with the level.
BLOSC2_LEVEL = {"lz4": 5, "zstd": 1}
#: What readers need, for the shard attributes and ``pgrid info``.
READER_NOTE = "readers need hdf5plugin: `import hdf5plugin` before h5py opens the shard"


def load_plugins(compression: str) -> Any:
    """``hdf5plugin`` (it registers the filters with HDF5) and the encoder's package, or a
    clear one-line error when they are not installed."""
    try:
        import hdf5plugin

        if compression == "lz4":
            import lz4.block  # noqa: F401
        else:
            import blosc2  # noqa: F401
    except ImportError:
        raise ValueError(
            f"{compression} shards need hdf5plugin, lz4 and blosc2 "
            "(pip install 'pgrid-cli[plugins]'); gzip needs nothing"
        ) from None
    return hdf5plugin


def h5_options(compression: str, level: int) -> dict[str, Any]:
    """h5py ``create_dataset`` keywords of the filter pipeline these chunks are for."""
    hdf5plugin = load_plugins(compression)
    if compression == "lz4":
        return {"shuffle": True, **hdf5plugin.LZ4()}
    cname, kind = BLOSC2[compression]
    flt = hdf5plugin.Blosc2.BITSHUFFLE if kind == "bitshuffle" else hdf5plugin.Blosc2.SHUFFLE
    return dict(hdf5plugin.Blosc2(cname=cname, clevel=int(level), filters=flt))


def encode(compression: str, level: int, arr: np.ndarray) -> bytes:
    """The stored chunk of one (C, nx, ny, nz) grid (C-contiguous float32 or float16)."""
    if compression == "lz4":
        return _lz4_chunk(arr)
    schunk = _frame(compression, int(level), arr.nbytes, arr.dtype.itemsize)
    import blosc2

    chunk = blosc2.compress2(arr, **_cparams(compression, int(level), arr.dtype.itemsize))
    with _FRAME_LOCK:  # one reused frame per process: threads take turns
        schunk.update_chunk(0, chunk)
        return bytes(schunk.to_cframe())


def decode(
    compression: str, data: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]
) -> np.ndarray:
    """The grid of a chunk written by :func:`encode` (HDF5's Blosc2 filter itself writes
    B2ND frames, whose block order differs: those are read through h5py)."""
    if compression == "lz4":
        raw = np.frombuffer(_lz4_decode(data), np.uint8)
        size = dtype.itemsize
        return raw.reshape(size, -1).T.copy().view(dtype).reshape(shape)
    import blosc2

    schunk = blosc2.schunk_from_cframe(data, copy=True)
    if schunk.nchunks != 1:
        raise ValueError(f"a Blosc2 grid chunk holds one Blosc2 chunk, found {schunk.nchunks}")
    return np.frombuffer(schunk.decompress_chunk(0), dtype).reshape(shape).copy()


# ---------------------------------------------------------------------- Blosc2
def _cparams(compression: str, level: int, typesize: int) -> dict[str, Any]:
    import blosc2

    cname, kind = BLOSC2[compression]
    flt = blosc2.Filter.BITSHUFFLE if kind == "bitshuffle" else blosc2.Filter.SHUFFLE
    codec = blosc2.Codec.LZ4 if cname == "lz4" else blosc2.Codec.ZSTD
    return {"codec": codec, "clevel": level, "filters": [flt], "typesize": typesize, "nthreads": 1}


_FRAME_LOCK = threading.Lock()


@functools.cache
def _frame(compression: str, level: int, nbytes: int, typesize: int) -> Any:
    """A reused one-chunk, in-memory contiguous super-chunk (per process and layout):
    replacing its chunk and reading the frame back is cheaper than building a new one."""
    import blosc2

    cparams = _cparams(compression, level, typesize)
    schunk = blosc2.SChunk(chunksize=nbytes, cparams=cparams, contiguous=True)
    schunk.append_chunk(blosc2.compress2(bytes(nbytes), **cparams))
    return schunk


# ---------------------------------------------------------------------- LZ4
_HEADER = struct.Struct(">QI")
_SIZE = struct.Struct(">I")


@functools.cache
def _lz4_zero_block(n: int) -> bytes:
    """The LZ4 filter's stored block (size prefix included) of ``n`` zero bytes."""
    import lz4.block

    packed = lz4.block.compress(bytes(n), store_size=False)
    return _SIZE.pack(len(packed)) + packed if len(packed) < n else _SIZE.pack(n) + bytes(n)


def _lz4_chunk(arr: np.ndarray) -> bytes:
    """shuffle + LZ4-filter bytes of a (C, …) grid, one block per channel byte plane:
    plane k of channel 0, 1, …, C-1, for k = 0 … itemsize-1 (HDF5's shuffle order)."""
    import lz4.block

    size = arr.dtype.itemsize
    n_chan = arr.shape[0]
    rows = arr.reshape(n_chan, -1)
    voxels = rows.shape[1]
    parts = [_HEADER.pack(arr.nbytes, voxels)]
    if voxels == 0:
        return parts[0]
    dense = _core.nonzero_rows(rows.view(np.float32)) if size == 4 else rows.any(axis=1)
    planes = np.empty((n_chan, size, voxels), np.uint8)
    for c in np.flatnonzero(dense):
        if size == 4:
            _core.shuffle4(rows[c], planes[c].reshape(-1))
        else:
            planes[c] = rows[c].view(np.uint8).reshape(voxels, size).T
    zero = _lz4_zero_block(voxels)
    for k in range(size):
        for c in range(n_chan):
            if not dense[c]:
                parts.append(zero)
                continue
            plane = planes[c, k]
            packed = lz4.block.compress(plane, store_size=False)
            if len(packed) < voxels:
                parts += [_SIZE.pack(len(packed)), packed]
            else:
                parts += [_SIZE.pack(voxels), plane.tobytes()]
    return b"".join(parts)


def _lz4_decode(data: bytes) -> bytes:
    """The shuffled bytes of an LZ4-filter chunk (any block size)."""
    import lz4.block

    total, block = _HEADER.unpack_from(data, 0)
    block = min(block, total) if total else 0
    pos, out = _HEADER.size, []
    done = 0
    while done < total:
        n = min(block, total - done)
        (csize,) = _SIZE.unpack_from(data, pos)
        pos += _SIZE.size
        piece = data[pos : pos + csize]
        out.append(piece if csize == n else lz4.block.decompress(piece, uncompressed_size=n))
        pos += csize
        done += n
    raw = b"".join(out)
    if len(raw) != total:
        raise ValueError(f"damaged LZ4 chunk: {len(raw)} of {total} bytes")
    return raw
