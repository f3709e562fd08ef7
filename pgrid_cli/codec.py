"""How grids are stored in shards: a controlled rounding, then HDF5 chunks encoded here.

Density grids are mostly near-zero, and the low mantissa bits of a float32 carry detail far
below SPEC §3's accuracy. :class:`GridCodec` therefore rounds the values of each grid to
multiples of a power-of-two step before storing them:

* the step of a grid is the largest power of two ≤ min(2⁻²¹, 5e-5 × the grid's maximum)
  — 2⁻²¹ ≈ 4.8e-7 for ordinary grids, finer for grids of tiny values (small cells, fine
  voxels), so that both SPEC bounds hold: |error| ≤ 1e-6 and ≤ 1e-4 × max(value);
* values go to the nearest multiple, then each channel's total is restored by
  largest-remainder rounding, so every value changes by less than one step and every
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

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Compression choices for ``--compression``.
COMPRESSIONS = ("gzip", "lzf", "none")
#: Default (largest) rounding step: a power of two, so that rounding is exact in float32.
DEFAULT_STEP = 2.0**-21
#: A grid's step is also at most this fraction of its largest value.
RELATIVE_STEP = 5e-5
ROUNDING = (
    "per grid, largest-remainder rounding to multiples of the largest power of two <= "
    "min(rounding_step, rounding_relative * max of the grid): each value changes by less "
    "than one step, each channel's sum by at most half a step"
)
#: Default deflate level (1 = fastest; the rounding, not the level, does most of the work).
DEFAULT_LEVEL = 1

_BLOCK = 4096  # bytes; zero runs are found at this granularity
_MIN_ZERO_RUN = 2 * _BLOCK  # shorter runs are cheaper to let zlib handle
_ADLER_MOD = 65521


@dataclass(frozen=True)
class GridCodec:
    """Storage of grids: dtype, rounding and compression.

    Parameters
    ----------
    dtype : ``float32`` or ``float16``
    compression : ``gzip`` (with shuffle; encoded by :meth:`encode`), ``lzf`` (h5py's own
        filter, applied by h5py when writing) or ``none``
    level : deflate level 1-9 for gzip
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
        if not 1 <= int(self.level) <= 9:
            raise ValueError(f"gzip level must be 1-9, got {self.level}")
        if not (self.step == 0 or (np.isfinite(self.step) and self.step > 0)):
            raise ValueError(f"rounding step must be 0 or a positive number, got {self.step}")
        if self.step and np.log2(self.step) != round(np.log2(self.step)):
            raise ValueError(f"rounding step must be a power of two, got {self.step}")

    @classmethod
    def parse(cls, compression: str, dtype: str = "float32", lossless: bool = False) -> GridCodec:
        """From CLI options: ``gzip``, ``gzip:6`` (level), ``lzf`` or ``none``."""
        name, _, level = compression.strip().lower().partition(":")
        if level and name != "gzip":
            raise ValueError(f"only gzip takes a level (gzip:1 … gzip:9), got {compression!r}")
        try:
            lvl = int(level) if level else DEFAULT_LEVEL
        except ValueError:
            raise ValueError(f"gzip level must be 1-9, got {compression!r}") from None
        return cls(dtype=dtype, compression=name, level=lvl, step=0.0 if lossless else DEFAULT_STEP)

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return np.dtype(self.dtype)

    @property
    def max_rounding_error(self) -> float:
        """Bound on the change the rounding makes to a value (before any float16 cast);
        a channel's sum changes by at most half of it."""
        return self.step

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
        """True when :meth:`encode` produces the stored chunk bytes (gzip, none)."""
        return self.compression != "lzf"

    def h5_options(self) -> dict[str, Any]:
        """h5py ``create_dataset`` keywords for the ``grids`` dataset."""
        if self.compression == "gzip":
            return {"compression": "gzip", "compression_opts": int(self.level), "shuffle": True}
        if self.compression == "lzf":
            return {"compression": "lzf", "shuffle": True}
        return {}

    def attrs(self) -> dict[str, Any]:
        """Shard attributes that say how the grids were stored."""
        return {
            "compression": self.compression,
            "compression_level": int(self.level) if self.compression == "gzip" else 0,
            "shuffle": self.compression != "none",
            "rounding": ROUNDING if self.step else "none (lossless)",
            "rounding_step": float(self.step),
            "rounding_relative": RELATIVE_STEP if self.step else 0.0,
            "max_rounding_error": float(self.max_rounding_error),
        }

    def round(self, grids: np.ndarray) -> np.ndarray:
        """Round float32 ``grids`` in place as the module docstring says; returns them.

        ``grids`` is one (C, nx, ny, nz) grid or a (B, C, nx, ny, nz) batch (each grid
        gets its own step, :meth:`step_for` its maximum). Negative zeros become +0.
        """
        if not self.step:
            return grids
        if grids.dtype != np.float32 or not grids.flags.c_contiguous:
            raise ValueError("round() works on C-contiguous float32 grids")
        if grids.ndim == 5:
            for g in grids:
                self.round(g)
            return grids
        voxels = int(np.prod(grids.shape[-3:]))
        rows = grids.reshape(-1, voxels)  # one row per channel
        size = self.step_for(float(grids.max()) if grids.size else 0.0)
        inv, step = np.float32(1.0 / size), np.float32(size)
        for r in np.flatnonzero(rows.any(axis=1)):  # all-zero channels stay as they are
            row = rows[r]
            np.multiply(row, inv, out=row)  # in units of the step (exact: a power of two)
            rounded = np.rint(row)
            np.subtract(row, rounded, out=row)  # the residuals, in [-0.5, 0.5]
            # Σ values − Σ rounded = Σ residuals: restore the channel's total.
            deficit = int(np.rint(row.sum(dtype=np.float64)))
            if deficit:
                _restore_total(row, rounded, deficit)
            np.multiply(rounded, step, out=row)
            np.add(row, np.float32(0.0), out=row)  # -0.0 → +0.0: all-zero bytes
        return grids

    def encode(self, grid: np.ndarray) -> tuple[bytes, int]:
        """(chunk bytes, HDF5 filter mask) of one structure's (already rounded) grid.

        The bytes are what the dataset's filter pipeline (:meth:`h5_options`) would
        store; the mask is 0, or marks deflate as skipped when it would not shrink the
        chunk (as HDF5 itself does for its optional deflate filter).
        """
        if not self.encodes_chunks:
            raise ValueError(f"{self.compression} chunks are written by h5py, not encoded here")
        arr = np.ascontiguousarray(grid, dtype=self.np_dtype)
        if self.compression == "none":
            return arr.tobytes(), 0
        shuffled = shuffle(arr)
        packed = deflate(shuffled, self.level)
        if len(packed) >= shuffled.nbytes:
            return shuffled.tobytes(), 0b10  # bit 1: the deflate filter (after shuffle)
        return packed, 0


def _restore_total(residual: np.ndarray, rounded: np.ndarray, deficit: int) -> None:
    """Round ``|deficit|`` more values up (or down) — those with the largest residual
    towards it — so that ``rounded`` has the total of the unrounded values.

    ``residual`` is value − rounded value, in units of the step.
    """
    key = residual if deficit > 0 else -residual
    count = abs(deficit)
    # The deficit is at most about half the number of values with a residual of that
    # sign, so look among the strongest candidates first (cheap), everywhere if need be.
    candidates = np.flatnonzero(key > 0.25)
    if len(candidates) < count:
        candidates = np.arange(len(key))
    pick = candidates[np.argpartition(key[candidates], -count)[-count:]]
    rounded[pick] += 1.0 if deficit > 0 else -1.0


def shuffle(arr: np.ndarray) -> np.ndarray:
    """HDF5's shuffle filter: byte k of every element, for k = 0 … itemsize-1 (1-D uint8)."""
    size = arr.dtype.itemsize
    flat = arr.reshape(-1)
    if size == 1:
        return flat.view(np.uint8).copy()
    out = np.empty((size, flat.size), dtype=np.uint8)
    words = flat.view(np.uint32 if size == 4 else np.uint16)
    for k in range(size):
        out[k] = words >> (8 * k) if k else words  # assignment keeps the low byte
    return out.reshape(-1)


def unshuffle(data: bytes | np.ndarray, dtype: Any) -> np.ndarray:
    """Inverse of :func:`shuffle` (1-D array of ``dtype``)."""
    dt = np.dtype(dtype)
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    return np.ascontiguousarray(raw.reshape(dt.itemsize, -1).T).view(dt).reshape(-1)


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
        return zlib.compress(buf.tobytes(), level)
    dense = buf[: nblocks * _BLOCK].view(np.uint64).reshape(nblocks, -1).any(axis=1)
    # Run boundaries, in blocks: where the dense/zero flag changes.
    edges = np.flatnonzero(dense[1:] != dense[:-1]) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [nblocks]))
    comp = zlib.compressobj(level, zlib.DEFLATED, -15)
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
