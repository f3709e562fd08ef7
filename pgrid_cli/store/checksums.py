"""Checksums of a shard's contents (docs/format.md §6, group ``checksums``).

Every shard written by this version carries

* ``checksums/grids`` (N,) uint32: the CRC-32 of each stored grid chunk, the bytes as
  they are on disk (compressed, filtered), so checking a shard reads the raw chunks
  (``read_direct_chunk``) at disk speed and decompresses nothing;
* one attribute of the ``checksums`` group per other dataset (``origin``, ``positions``,
  ``name``, ``rejected``, …): the CRC-32 of its values (numbers: their little-endian
  bytes in C order; strings: each one's UTF-8 bytes followed by a NUL byte).

CRC-32 is zlib's (ISA-L computes the same value faster).
"""

from __future__ import annotations

import zlib
from typing import Any

import h5py
import numpy as np

try:
    from isal import isal_zlib as _z
except ImportError:  # pragma: no cover - isal is a dependency
    _z = zlib

GROUP = "checksums"
GRIDS = "grids"
ALGORITHM = "crc32"


def crc32(data: Any, value: int = 0) -> int:
    """zlib's CRC-32 of a bytes-like object (continuing from ``value``)."""
    return int(_z.crc32(data, value)) & 0xFFFFFFFF


def values_checksum(values: Any, dtype: Any = None) -> int:
    """CRC-32 of a dataset's values (as stored with ``dtype``; see the module docstring)."""
    arr = np.asarray(values) if dtype is None else np.asarray(values, dtype=dtype)
    if arr.dtype.kind == "O" and any(isinstance(v, np.ndarray) for v in arr.reshape(-1)):
        crc = 0  # variable-length arrays: each one's little-endian bytes, then its length
        for v in arr.reshape(-1):
            a = np.ascontiguousarray(v, dtype=np.asarray(v).dtype.newbyteorder("<"))
            crc = crc32(np.int64(a.size).tobytes(), crc32(a.view(np.uint8).reshape(-1), crc))
        return crc
    if arr.dtype.kind in ("O", "S", "U"):
        crc = 0
        for v in arr.reshape(-1).tolist():
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            crc = crc32(b + b"\0", crc)
        return crc
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return crc32(arr.view(np.uint8).reshape(-1))


def write_checksums(f: h5py.File, grid_crcs: list[int] | None, datasets: list[str]) -> None:
    """Store the chunk checksums (None: a shard without grids) and those of
    ``datasets`` (read back from ``f``)."""
    group = f.create_group(GROUP)
    group.attrs["algorithm"] = ALGORITHM
    if grid_crcs is not None:
        group.create_dataset(GRIDS, data=np.asarray(grid_crcs, dtype=np.uint32))
    for name in datasets:
        group.attrs[name] = np.uint32(values_checksum(f[name][()]))


def chunk_checksums(ds: h5py.Dataset, n: int | None = None) -> list[int]:
    """CRC-32 of each stored (raw) chunk of a one-structure-per-chunk ``grids`` dataset."""
    zeros = (0,) * (ds.ndim - 1)
    return [
        crc32(ds.id.read_direct_chunk((i, *zeros))[1])
        for i in range(ds.shape[0] if n is None else n)
    ]


def has_checksums(f: h5py.File) -> bool:
    return GROUP in f and (GRIDS in f[GROUP] or GRIDS not in f)


def checksum_problem(f: h5py.File) -> str:
    """What fails the shard's checksums ("" when all match). The shard must have them."""
    group = f[GROUP]
    if GRIDS not in f:  # a structures shard: its datasets only
        return _values_problem(f, group)
    ds = f["grids"]
    want = group[GRIDS][()]
    n = int(ds.shape[0])
    if want.shape != (n,):
        return f"{GROUP}/{GRIDS} has {want.shape[0] if want.ndim else 0} entries for {n} grids"
    if ds.is_virtual:
        return ""  # a virtual view: its sources are checked instead
    zeros = (0,) * (ds.ndim - 1)
    bad = []
    for i in range(n):
        try:
            _, chunk = ds.id.read_direct_chunk((i, *zeros))
        except (OSError, ValueError, KeyError) as exc:
            return f"grid {i} cannot be read ({' '.join(str(exc).split())[:80]})"
        if crc32(chunk) != int(want[i]):
            bad.append(i)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return f"grid {bad[0]} fails its checksum{more}: the file is damaged"
    return _values_problem(f, group)


def _values_problem(f: h5py.File, group: h5py.Group) -> str:
    for name, value in sorted(group.attrs.items()):
        if name == "algorithm":
            continue
        if name not in f:
            return f"{name} is missing (it has a checksum)"
        if values_checksum(f[name][()]) != int(value):
            return f"{name} fails its checksum: the file is damaged"
    return ""


def shard_digest(f: h5py.File) -> int:
    """One CRC-32 standing for a shard's contents: its counts and its checksums (or,
    for a shard without checksums, its counts only)."""
    n = int(f[GRIDS].shape[0]) if GRIDS in f else int(f["record"].shape[0])
    m = int(f["atomic_numbers"].shape[0]) if "atomic_numbers" in f else 0
    crc = crc32(f"{n} {m}".encode())
    if has_checksums(f):
        group = f[GROUP]
        if GRIDS in group:
            crc = crc32(np.ascontiguousarray(group[GRIDS][()], dtype="<u4").tobytes(), crc)
        for name, value in sorted(group.attrs.items()):
            if name != "algorithm":
                crc = crc32(f"{name}={int(value)}".encode(), crc)
    return crc
