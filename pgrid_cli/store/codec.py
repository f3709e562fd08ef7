"""How grids are stored in shards: a controlled rounding, then HDF5 chunks encoded here.

Density grids are mostly near-zero, and the low mantissa bits of a float32 carry detail far
below docs/format.md §3's accuracy. :class:`GridCodec` therefore rounds the values of each grid to
multiples of a power-of-two step before storing them:

* the step of a grid is the largest power of two ≤ min(2⁻²¹, 5e-5 × the grid's maximum)
  — 2⁻²¹ ≈ 4.8e-7 for ordinary grids, finer for grids of tiny values (small cells, fine
  voxels), so that both bounds of docs/format.md §3 hold: |error| ≤ 1e-6 and ≤ 1e-4 × max(value);
* values go to the nearest multiple, then each channel's total is restored: as many
  values as needed, among those whose rounding residual points the right way (strongest
  first), move one more step, so every value changes by less than one step and every
  channel's sum by at most half a step (a grid still sums to its atoms);
* values below about half a step become exactly 0 — which is what makes grids compress.

The shard records this in its attributes (``rounding``, ``rounding_step``,
``rounding_relative``, ``max_rounding_error``); ``lossless=True`` keeps the kernel's float32
bits unchanged.

The grid chunks (one structure each) are then encoded *outside* HDF5 into exactly what its
``shuffle`` + ``deflate`` (gzip) filter pipeline would produce, so that worker processes
can compress in parallel and the writer stores the bytes with
``h5py.Dataset.id.write_direct_chunk``. The result is a standard gzip+shuffle dataset that
plain h5py (or any HDF5 reader) decodes. Long runs of zero bytes — most of a grid — are
emitted as precomputed deflate blocks instead of being fed through zlib, which is where
most of the speed comes from; the stream is still an ordinary zlib stream.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _core
from . import plugins
from .checksums import crc32

try:  # ISA-L writes the same zlib/deflate format, several times faster than zlib
    from isal import isal_zlib as _fast_zlib
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _fast_zlib = zlib

#: Compression choices for ``--compression``. ``zstd`` is HDF5's registered Zstandard
#: filter (id 32015, from ``hdf5plugin``): readers need ``import hdf5plugin`` before h5py
#: opens the shard (pgrid's own readers do it themselves).
#: ``lz4`` and ``blosc2-*`` are HDF5's LZ4 and Blosc2 plugin filters (:mod:`.plugins`):
#: the same ``import hdf5plugin`` lets h5py read them.
COMPRESSIONS = ("gzip", "zstd", "lzf", "none", *plugins.PLUGIN_COMPRESSIONS)
#: HDF5's filter id of Zstandard (as registered with The HDF Group; hdf5plugin carries it).
ZSTD_FILTER = 32015
#: Levels of each compression that takes one (the default is the fastest).
LEVELS = {"gzip": range(1, 10), "zstd": range(1, 23), **{b: range(1, 10) for b in plugins.BLOSC2}}
#: Default (largest) rounding step: a power of two, so that rounding is exact in float32.
DEFAULT_STEP = 2.0**-21
#: A grid's step is also at most this fraction of its largest value.
RELATIVE_STEP = 5e-5
ROUNDING = (
    "per grid, rounding to multiples of the largest power of two <= "
    "min(rounding_step, rounding_relative * max of the grid), each channel's total restored "
    "by moving the values with the strongest residuals one more step: each value changes "
    "by less than one step, each channel's sum by at most half a step"
)
#: Default deflate level (1 = fastest; the rounding, not the level, does most of the work).
DEFAULT_LEVEL = 1

_BLOCK = 4096  # bytes; zero runs are found at this granularity
_MIN_ZERO_RUN = 2 * _BLOCK  # shorter runs are cheaper to let zlib handle
#: Zero runs of whole channels at least this long are spliced in as cached fragments: a
#: full flush costs about as much as ISA-L compressing ~50 KiB of zeros.
_MIN_SPLICE = 128 * 1024
_ADLER_MOD = 65521


@dataclass(frozen=True)
class GridCodec:
    """Storage of grids: dtype, rounding and compression.

    Parameters
    ----------
    dtype : ``float32`` or ``float16``
    compression : ``gzip`` (with shuffle; encoded by :meth:`encode`), ``lzf`` (h5py's own
        filter, applied by h5py when writing), ``none``, or a plugin filter encoded by
        :meth:`encode` (``zstd``; ``lz4`` and ``blosc2-*``, see :mod:`.plugins`)
    level : deflate level 1-9 for gzip, 1-22 for zstd, 1-9 for Blosc2
    step : largest rounding step (absolute, in the grid's units: the fraction of an atom
        in a voxel); 0 keeps values unchanged
    """

    dtype: str = "float32"
    compression: str = "gzip"
    level: int = DEFAULT_LEVEL
    step: float = DEFAULT_STEP

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"grid dtype must be float32 or float16, got {self.dtype!r}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(
                f"unknown compression {self.compression!r}: use one of {', '.join(COMPRESSIONS)}"
            )
        if self.compression == "zstd":
            load_zstd_filter()  # refuse up front, in one line, when the libraries are missing
        if self.compression in plugins.PLUGIN_COMPRESSIONS:
            plugins.load_plugins(self.compression)
        levels = LEVELS.get(self.compression, range(1, 10))
        if int(self.level) not in levels:
            raise ValueError(
                f"{self.compression} level must be {levels[0]}-{levels[-1]}, got {self.level}"
            )
        if not (self.step == 0 or (np.isfinite(self.step) and self.step > 0)):
            raise ValueError(f"rounding step must be 0 or a positive number, got {self.step}")
        if self.step and np.log2(self.step) != round(np.log2(self.step)):
            raise ValueError(f"rounding step must be a power of two, got {self.step}")

    @classmethod
    def parse(cls, compression: str, dtype: str = "float32", lossless: bool = False) -> GridCodec:
        """From CLI options: ``gzip``, ``gzip:6``, ``zstd``, ``zstd:3`` (levels), ``lzf``,
        ``none``, ``lz4``, ``blosc2-lz4``, ``blosc2-zstd:3`` (levels 1-9; default 5 for LZ4, 1
        for Zstd), and
        the ``-bitshuffle`` variants of the two Blosc2 ones."""
        name, _, level = compression.strip().lower().partition(":")
        if level and name not in LEVELS:
            raise ValueError(
                f"only gzip, zstd and blosc2-* take a level (gzip:1 … gzip:9, zstd:1 … "
                f"zstd:22, blosc2-lz4:1 … blosc2-lz4:9), got {compression!r}"
            )
        blosc2 = plugins.BLOSC2.get(name)
        default = plugins.BLOSC2_LEVEL[blosc2[0]] if blosc2 else DEFAULT_LEVEL
        try:
            lvl = int(level) if level else default
        except ValueError:
            raise ValueError(f"{name} level must be a whole number, got {compression!r}") from None
        return cls(dtype=dtype, compression=name, level=lvl, step=0.0 if lossless else DEFAULT_STEP)

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return np.dtype(self.dtype)

    @property
    def max_rounding_error(self) -> float:
        """Bound on the change the rounding makes to a value (before any float16 cast);
        a channel's sum changes by at most half of it. :meth:`error_bound` adds the cast."""
        return self.step

    def error_bound(self, peak: float) -> float:
        """Bound on |stored − kernel value| over a grid whose largest value is ``peak``:
        the rounding step (:meth:`step_for`) plus, for float16, the cast's error at the
        largest value (half a float16 spacing there; values are non-negative, so smaller
        ones are cast at least as accurately)."""
        bound = self.step_for(peak)
        if self.dtype == "float16" and peak > 0:
            return bound + float16_cast_error(peak + bound)
        return bound

    def step_for(self, peak: float) -> float:
        """The rounding step of a grid whose largest value is ``peak``."""
        if not self.step:
            return 0.0
        if not peak > 0:
            return self.step
        exponent = max(-100.0, float(np.floor(np.log2(RELATIVE_STEP * peak))))
        return float(min(self.step, 2.0**exponent))

    @property
    def encodes_chunks(self) -> bool:
        """True when :meth:`encode` produces the stored chunk bytes (gzip, zstd, none)."""
        return self.compression != "lzf"

    def h5_options(self) -> dict[str, Any]:
        """h5py ``create_dataset`` keywords for the ``grids`` dataset."""
        if self.compression == "gzip":
            return {"compression": "gzip", "compression_opts": int(self.level), "shuffle": True}
        if self.compression == "zstd":
            return {"shuffle": True, **load_zstd_filter().Zstd(clevel=int(self.level))}
        if self.compression == "lzf":
            return {"compression": "lzf", "shuffle": True}
        if self.compression in plugins.PLUGIN_COMPRESSIONS:
            return plugins.h5_options(self.compression, self.level)
        return {}

    def attrs(self) -> dict[str, Any]:
        """Shard attributes that say how the grids were stored."""
        return {
            "compression": self.compression,
            "compression_level": int(self.level) if self.compression in LEVELS else 0,
            "shuffle": self.compression != "none",
            **(
                {"hdf5_filters": self.filters_note(), "reading": plugins.READER_NOTE}
                if self.compression in plugins.PLUGIN_COMPRESSIONS or self.compression == "zstd"
                else {}
            ),
            "rounding": ROUNDING if self.step else "none (lossless)",
            "rounding_step": float(self.step),
            "rounding_relative": RELATIVE_STEP if self.step else 0.0,
            "max_rounding_error": float(self.max_rounding_error),
        }

    def filters_note(self) -> str:
        """The HDF5 filters of a plugin compression, in words (a shard attribute)."""
        if self.compression == "zstd":
            return f"shuffle, Zstandard (filter {ZSTD_FILTER})"
        if self.compression == "lz4":
            return f"shuffle, LZ4 (filter {plugins.LZ4_FILTER})"
        cname, kind = plugins.BLOSC2[self.compression]
        return f"Blosc2 (filter {plugins.BLOSC2_FILTER}: {cname}, {kind} inside)"

    def round(self, grids: np.ndarray) -> np.ndarray:
        """Round float32 ``grids`` in place as the module docstring says; returns them.

        ``grids`` is one (C, nx, ny, nz) grid or a (B, C, nx, ny, nz) batch (each grid
        gets its own step, :meth:`step_for` its maximum). Negative zeros become +0. The
        passes run in the native kernel (``pgrid/codec.hpp``).
        """
        if not self.step:
            return grids
        if grids.dtype != np.float32 or not grids.flags.c_contiguous:
            raise ValueError("round() works on C-contiguous float32 grids")
        if grids.ndim == 5:
            for g in grids:
                self.round(g)
            return grids
        if grids.size:
            _core.round_grid(grids.reshape(grids.shape[0], -1), self.step, RELATIVE_STEP)
        return grids

    def encode(self, grid: np.ndarray, total: float | None = None) -> EncodedChunk:
        """(chunk bytes, HDF5 filter mask) of one structure's (already rounded) grid.

        ``total``: the grid's sum when the caller has it (``pgrid grid``'s workers pass the
        sum before rounding, within C × step / 2 of the rounded grid's), saving a pass.

        The bytes are what the dataset's filter pipeline (:meth:`h5_options`) would
        store; the mask is 0, or marks deflate as skipped when it would not shrink the
        chunk (as HDF5 itself does for its optional deflate filter).
        """
        if not self.encodes_chunks:
            raise ValueError(f"{self.compression} chunks are written by h5py, not encoded here")
        src = np.asarray(grid)
        with np.errstate(all="ignore"):  # any bits can be stored (inf, NaN: not our business)
            if total is None:  # float32 pairwise: ~1e-7 relative
                total = float(src.sum()) if src.size else 0.0
            peak = float(src.max()) if src.size and self.dtype == "float16" else 0.0
        arr = np.ascontiguousarray(src, dtype=self.np_dtype)
        if self.compression == "none":
            data, mask = arr.tobytes(), 0
        elif self.compression in plugins.PLUGIN_COMPRESSIONS:
            data, mask = plugins.encode(self.compression, self.level, arr), 0
        elif self.compression == "zstd":
            shuffled = shuffle(arr, out=_work("shuffled", arr.nbytes, np.uint8))
            data, mask = _zstd_compressor(int(self.level)).compress(shuffled), 0
        else:
            if arr.dtype == np.float32 and arr.ndim >= 2:
                packed = deflate_shuffled_channels(arr.reshape(arr.shape[0], -1), self.level)
            else:
                shuffled = shuffle(arr, out=_work("shuffled", arr.nbytes, np.uint8))
                packed = deflate(shuffled, self.level)
            if len(packed) >= arr.nbytes:  # bit 1: the deflate filter (after shuffle)
                data, mask = shuffle(arr).tobytes(), 0b10
            else:
                data, mask = packed, 0
        return EncodedChunk(data, mask, crc32(data), peak, total)

    def decode(self, data: bytes, mask: int, shape: tuple[int, ...]) -> np.ndarray:
        """The grid of an encoded chunk (the inverse of :meth:`encode`)."""
        if self.compression == "none":
            return np.frombuffer(data, dtype=self.np_dtype).reshape(shape).copy()
        if self.compression in plugins.PLUGIN_COMPRESSIONS:
            return plugins.decode(self.compression, data, shape, self.np_dtype)
        if self.compression == "zstd":
            raw = np.frombuffer(zstd_decompressor().decompress(data), np.uint8)
        else:
            raw = np.frombuffer(data if mask & 0b10 else _fast_zlib.decompress(data), np.uint8)
        size = self.np_dtype.itemsize
        return raw.reshape(size, -1).T.copy().view(self.np_dtype).reshape(shape)


@functools.cache
def _zstd_compressor(level: int) -> Any:
    import zstandard

    return zstandard.ZstdCompressor(level=level)


@functools.cache
def zstd_decompressor() -> Any:
    import zstandard

    return zstandard.ZstdDecompressor()


def load_zstd_filter() -> Any:
    """``hdf5plugin``, imported: it registers the Zstandard filter with HDF5 (needed to
    write or read ``zstd`` shards; ``zstandard`` encodes the chunks). A clear error when
    they are not installed."""
    try:
        import hdf5plugin
        import zstandard  # noqa: F401
    except ImportError:  # pragma: no cover - the test environment has both
        raise ValueError(
            "zstd shards need hdf5plugin and zstandard (pip install 'pgrid-cli[plugins]'); "
            "gzip needs nothing"
        ) from None
    return hdf5plugin


class EncodedChunk(tuple):  # type: ignore[type-arg]
    """What :meth:`GridCodec.encode` returns: a ``(bytes, filter_mask)`` pair that also
    carries the chunk's CRC-32 (``crc``), the grid's sum (``total``) and, for float16, its
    largest value before the cast (``peak``; 0 for float32), so the writer need not decode
    it."""

    crc: int
    peak: float
    total: float

    def __new__(cls, data: bytes, mask: int, crc: int, peak: float, total: float) -> EncodedChunk:
        self = super().__new__(cls, (data, mask))
        self.crc, self.peak, self.total = crc, peak, total
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return EncodedChunk, (self[0], self[1], self.crc, self.peak, self.total)


def float16_cast_error(value: float) -> float:
    """Largest error of casting a value in [0, ``value``] to float16 (round to nearest):
    half the float16 spacing at ``value`` (2⁻²⁵ among subnormals)."""
    if not value > 0:
        return 0.0
    exponent = max(int(np.floor(np.log2(value))), -14)  # -14: float16's smallest normal
    return 2.0 ** (exponent - 11)


_scratch: dict[tuple[str, str], np.ndarray] = {}


def _work(name: str, n: int, dtype: Any) -> np.ndarray:
    """A reused scratch array of ``n`` elements (per process and name): allocating large
    temporaries anew each time costs page faults that outweigh the arithmetic."""
    key = (name, np.dtype(dtype).str)
    buf = _scratch.get(key)
    if buf is None or buf.size < n:
        buf = _scratch[key] = np.empty(n, dtype=dtype)
    return buf[:n]


def shuffle(arr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """HDF5's shuffle filter: byte k of every element, for k = 0 … itemsize-1 (1-D uint8,
    written into ``out`` when given)."""
    size = arr.dtype.itemsize
    flat = arr.reshape(-1)
    if out is None:
        out = np.empty(flat.size * size, dtype=np.uint8)
    if size == 1:
        out[:] = flat.view(np.uint8)
        return out
    if size == 4:
        _core.shuffle4(np.ascontiguousarray(flat).view(np.float32), out)
        return out
    planes = out.reshape(size, flat.size)
    words = flat.view(np.uint16)
    planes[0] = words  # assignment keeps the low byte
    planes[1] = words >> 8
    return out


_zero_fragments: dict[int, bytes] = {}


def _zero_fragment(length: int) -> bytes:
    """Byte-aligned, non-final deflate blocks that inflate to ``length`` zero bytes and
    refer to nothing before them, so they can be spliced into any stream."""
    frag = _zero_fragments.get(length)
    if frag is None:
        c = zlib.compressobj(1, zlib.DEFLATED, -15)
        frag = c.compress(bytes(length)) + c.flush(zlib.Z_FULL_FLUSH)
        _zero_fragments[length] = frag
    return frag


def _adler_zeros(adler: int, length: int) -> int:
    """Adler-32 of the data so far followed by ``length`` zero bytes."""
    a = adler & 0xFFFF
    b = ((adler >> 16) + length * a) % _ADLER_MOD
    return (b << 16) | a


def _fast_level(level: int) -> int:
    """ISA-L has levels 0-3: gzip levels 1-3 map to its 1, higher ones to its 3."""
    if _fast_zlib is zlib:
        return level
    return 1 if level <= 3 else 3


def deflate_shuffled_channels(rows: np.ndarray, level: int = DEFAULT_LEVEL) -> bytes:
    """zlib stream of ``shuffle(rows)`` for a (C, V) float32 grid, without building it.

    The shuffled bytes are plane k (byte k of every value) of channel 0, 1, …, C-1, for
    k = 0 … 3. All-zero channels (most element channels of a molecule) are emitted as
    cached zero fragments and only the others are shuffled and compressed; the Adler-32
    checksum is carried across the zero runs arithmetically.
    """
    n_chan, voxels = rows.shape
    planes = _work("planes", 4 * voxels * n_chan, np.uint8).reshape(n_chan, 4, voxels)
    dense = _core.nonzero_rows(rows)
    for c in np.flatnonzero(dense):
        _core.shuffle4(rows[c], planes[c].reshape(-1))
    # The stream is a sequence of regions: a channel's plane, or zeros. Zero runs long
    # enough to repay ending a deflate block (a full flush) are spliced in as cached
    # fragments; shorter ones go through the compressor, which is fast on zeros too.
    regions: list[np.ndarray | int] = []
    for k in range(4):
        for c in range(n_chan):
            if not dense[c]:
                if regions and isinstance(regions[-1], int):
                    regions[-1] += voxels
                else:
                    regions.append(voxels)
            else:
                regions.append(planes[c, k])
    zero_bytes = _zero_bytes(voxels)
    header = zlib.compress(b"", level)[:2]
    comp = _fast_zlib.compressobj(_fast_level(level), zlib.DEFLATED, -15)
    parts = [header]
    adler = 1
    for region in regions:
        if isinstance(region, int) and region >= _MIN_SPLICE:
            parts.append(comp.flush(zlib.Z_FULL_FLUSH))
            parts.append(_zero_fragment(region))
            adler = _adler_zeros(adler, region)
            continue
        if isinstance(region, int):
            for start in range(0, region, voxels):  # short runs: whole zero channels
                data = zero_bytes[: min(voxels, region - start)]
                parts.append(comp.compress(data))
                adler = _fast_zlib.adler32(data, adler)
            continue
        parts.append(comp.compress(region))
        adler = _fast_zlib.adler32(region, adler)
    parts.append(comp.flush(zlib.Z_FINISH))
    parts.append(adler.to_bytes(4, "big"))
    return b"".join(parts)


def _zero_bytes(n: int) -> np.ndarray:
    buf = _work("zero_bytes", n, np.uint8)
    if buf.any():
        buf[:] = 0
    return buf


def deflate(data: np.ndarray, level: int = DEFAULT_LEVEL) -> bytes:
    """zlib stream (RFC 1950, as HDF5's deflate filter writes) of 1-D uint8 ``data``.

    Runs of at least 8 KiB of zero bytes (aligned to 4 KiB) skip zlib: a full flush ends
    the compressor's history before each run, a cached zero fragment stands for it, and
    the Adler-32 checksum is carried across it arithmetically.
    """
    buf = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    n = buf.size
    nblocks = n // _BLOCK
    header = zlib.compress(b"", level)[:2]
    if nblocks < _MIN_ZERO_RUN // _BLOCK:
        return _fast_zlib.compress(buf.tobytes(), _fast_level(level))
    dense = buf[: nblocks * _BLOCK].view(np.uint64).reshape(nblocks, -1).any(axis=1)
    # Run boundaries, in blocks: where the dense/zero flag changes.
    edges = np.flatnonzero(dense[1:] != dense[:-1]) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [nblocks]))
    comp = _fast_zlib.compressobj(_fast_level(level), zlib.DEFLATED, -15)
    parts = [header]
    adler = 1
    pending = 0  # start (bytes) of data not yet handed to zlib
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if dense[s] or (e - s) * _BLOCK < _MIN_ZERO_RUN:
            continue
        lo, hi = s * _BLOCK, e * _BLOCK
        if lo > pending:
            chunk = buf[pending:lo]
            parts.append(comp.compress(chunk))
            adler = zlib.adler32(chunk, adler)
        parts.append(comp.flush(zlib.Z_FULL_FLUSH))
        parts.append(_zero_fragment(hi - lo))
        adler = _adler_zeros(adler, hi - lo)
        pending = hi
    if pending < n:
        chunk = buf[pending:]
        parts.append(comp.compress(chunk))
        adler = zlib.adler32(chunk, adler)
    parts.append(comp.flush(zlib.Z_FINISH))
    parts.append(adler.to_bytes(4, "big"))
    return b"".join(parts)
