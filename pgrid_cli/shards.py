"""HDF5 shards of grids (SPEC §6, format version 1).

A shard holds N structures: their grids ``(N, C, nx, ny, nz)`` (float32 or float16, one
structure per chunk), boxes, atoms (CSR layout: ``atom_offset``) and provenance (name,
source file, record index). :class:`ShardWriter` appends structures and makes the file
appear under its final name only once it is complete; :class:`Shard` reads one with
random access; :class:`ShardSet` reads a whole output directory as one sequence.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .box import Box
from .channels import ChannelSpec

FORMAT = "pgrid-shard"
FORMAT_VERSION = 1
SHARD_GLOB = "shard-*.h5"
#: Suffix of a shard being written; renamed away only when the shard is complete.
PARTIAL_SUFFIX = ".partial"

_STR = h5py.string_dtype("utf-8")


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00000.h5``."""
    return f"shard-{index:05d}.h5"


@dataclass
class ShardMeta:
    """File attributes shared by every structure of a shard (SPEC §6)."""

    sigma: float  #: Gaussian standard deviation, Å
    channels: Sequence[str]  #: channel names, in channel order
    grid_shape: tuple[int, int, int]
    box: str = "fit"  #: box choice for molecules (fit | tight | cube:L)
    padding: float = 2.0  #: Å
    command: str = ""  #: the command line that made the shard
    extra: dict[str, Any] = field(default_factory=dict)  #: further attributes to store

    def attrs(self) -> dict[str, Any]:
        from . import __version__

        out: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "sigma": float(self.sigma),
            "channels": np.array([str(c) for c in self.channels], dtype=_STR),
            "grid_shape": np.asarray(self.grid_shape, dtype=np.int64),
            "box": str(self.box),
            "padding": float(self.padding),
            "pgrid_version": __version__,
            "command": str(self.command),
        }
        out.update(self.extra)
        return out


def compression_options(compression: str) -> dict[str, Any]:
    """h5py dataset keywords for ``gzip`` (with shuffle), ``lzf`` or ``none``."""
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if compression == "none":
        return {}
    raise ValueError(f"unknown compression {compression!r}: use gzip, lzf or none")


class ShardWriter:
    """Append structures to a new shard; it appears at ``path`` only after :meth:`close`.

    Use as a context manager. Writing goes to ``path + ".partial"``; a clean exit
    renames it into place, an exception deletes it, so a file under the final name is
    always complete.

    Parameters
    ----------
    path : path of the final shard file
    meta : file attributes
    dtype : ``float32`` or ``float16`` storage of the grids
    compression : ``gzip`` | ``lzf`` | ``none``, or a dict of h5py dataset keywords
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: ShardMeta,
        *,
        dtype: str = "float32",
        compression: str | dict[str, Any] = "gzip",
    ) -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"grid dtype must be float32 or float16, got {dtype!r}")
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.meta = meta
        self._dtype = np.dtype(dtype)
        self._filters = (
            compression if isinstance(compression, dict) else compression_options(compression)
        )
        self._n = 0
        self._m = 0
        self._file: h5py.File | None = h5py.File(self.partial, "w")
        for k, v in meta.attrs().items():
            self._file.attrs[k] = v
        self._create()

    def _create(self) -> None:
        f = self._file
        assert f is not None
        c = len(self.meta.channels)
        gshape = (c, *self.meta.grid_shape)
        f.create_dataset(
            "grids",
            shape=(0, *gshape),
            maxshape=(None, *gshape),
            dtype=self._dtype,
            chunks=(1, *gshape),
            **self._filters,
        )
        f.create_dataset("origin", shape=(0, 3), maxshape=(None, 3), dtype=np.float64)
        f.create_dataset("axes", shape=(0, 3, 3), maxshape=(None, 3, 3), dtype=np.float64)
        f.create_dataset("periodic", shape=(0,), maxshape=(None,), dtype=bool)
        f.create_dataset("atom_offset", data=np.zeros(1, np.int64), maxshape=(None,))
        f.create_dataset("atomic_numbers", shape=(0,), maxshape=(None,), dtype=np.int16)
        f.create_dataset("positions", shape=(0, 3), maxshape=(None, 3), dtype=np.float64)
        f.create_dataset("name", shape=(0,), maxshape=(None,), dtype=_STR)
        f.create_dataset("source", shape=(0,), maxshape=(None,), dtype=_STR)
        f.create_dataset("record", shape=(0,), maxshape=(None,), dtype=np.int64)

    def __len__(self) -> int:
        return self._n

    def append(
        self,
        grids: np.ndarray,
        boxes: Sequence[Box],
        numbers: Sequence[np.ndarray],
        positions: Sequence[np.ndarray],
        names: Sequence[str],
        sources: Sequence[str],
        records: Sequence[int],
    ) -> None:
        """Append k structures: grids (k, C, nx, ny, nz) and per-structure metadata."""
        f = self._file
        if f is None:
            raise ValueError("shard writer is closed")
        k = len(grids)
        if not (len(boxes) == len(numbers) == len(positions) == len(names) == k):
            raise ValueError("append() needs one box, atom list and name per grid")
        if len(sources) != k or len(records) != k:
            raise ValueError("append() needs one source and record index per grid")
        n0, n1 = self._n, self._n + k
        counts = np.array([len(z) for z in numbers], dtype=np.int64)
        m0, m1 = self._m, self._m + int(counts.sum())

        def grow(name: str, size: int) -> h5py.Dataset:
            ds = f[name]
            ds.resize(size, axis=0)
            return ds

        g = grow("grids", n1)
        for i in range(k):  # one chunk per structure
            g[n0 + i] = np.asarray(grids[i], dtype=self._dtype)
        grow("origin", n1)[n0:n1] = np.stack([b.origin for b in boxes])
        grow("axes", n1)[n0:n1] = np.stack([b.axes for b in boxes])
        grow("periodic", n1)[n0:n1] = np.array([b.periodic for b in boxes], dtype=bool)
        grow("atom_offset", n1 + 1)[n0 + 1 : n1 + 1] = m0 + np.cumsum(counts)
        if m1 > m0:
            grow("atomic_numbers", m1)[m0:m1] = np.concatenate(numbers).astype(np.int16)
            grow("positions", m1)[m0:m1] = np.concatenate(
                [np.reshape(p, (-1, 3)) for p in positions]
            )
        grow("name", n1)[n0:n1] = [str(s) for s in names]
        grow("source", n1)[n0:n1] = [str(s) for s in sources]
        grow("record", n1)[n0:n1] = np.asarray(records, dtype=np.int64)
        self._n, self._m = n1, m1

    def close(self) -> Path:
        """Finish the file and move it to its final name; returns that path."""
        if self._file is not None:
            self._file.attrs["n_structures"] = self._n
            self._file.close()
            self._file = None
            os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class ShardRecord:
    """One structure read back from a shard."""

    grid: np.ndarray  #: (C, nx, ny, nz), the stored dtype
    box: Box
    numbers: np.ndarray  #: (M,) int16 atomic numbers
    positions: np.ndarray  #: (M, 3) float64, Å, the input frame
    name: str
    source: str
    record: int


class Shard:
    """Random access to one shard file. Opens lazily, so it can be created in one process
    and used in another (the handle itself is never pickled)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._offsets: np.ndarray | None = None
        f = self.file  # validate now, so a bad file fails early and clearly
        self._len = int(f["grids"].shape[0])

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise OSError(f"{self.path}: not a readable HDF5 file ({exc})") from None
            self._pid = os.getpid()
            check_format(self._file, self.path)
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_len": self._len}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._len = state["_len"]
        self._file = None
        self._pid = None
        self._offsets = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __len__(self) -> int:
        return self._len

    @property
    def attrs(self) -> dict[str, Any]:
        """File attributes, with strings and arrays turned into plain Python values."""
        return {k: _plain(v) for k, v in self.file.attrs.items()}

    @property
    def sigma(self) -> float:
        return float(self.file.attrs["sigma"])

    @property
    def channels(self) -> ChannelSpec:
        return ChannelSpec([str(c) for c in _plain(self.file.attrs["channels"])])

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.file.attrs["grid_shape"])  # type: ignore[return-value]

    def _atom_range(self, i: int) -> tuple[int, int]:
        if self._offsets is None:
            self._offsets = self.file["atom_offset"][:]
        return int(self._offsets[i]), int(self._offsets[i + 1])

    def _index(self, i: int) -> int:
        if not -self._len <= i < self._len:
            raise IndexError(f"structure {i} out of range for {self.path.name} ({self._len})")
        return i % self._len

    def grid(self, i: int) -> np.ndarray:
        """(C, nx, ny, nz) grid of structure ``i`` (stored dtype)."""
        return self.file["grids"][self._index(i)]

    def box(self, i: int) -> Box:
        i = self._index(i)
        f = self.file
        return Box(f["origin"][i], f["axes"][i], self.grid_shape, bool(f["periodic"][i]))

    def atoms(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(atomic numbers (M,), positions (M, 3) Å) of structure ``i``."""
        a0, a1 = self._atom_range(self._index(i))
        return self.file["atomic_numbers"][a0:a1], self.file["positions"][a0:a1]

    def __getitem__(self, i: int) -> ShardRecord:
        i = self._index(i)
        f = self.file
        numbers, positions = self.atoms(i)
        return ShardRecord(
            grid=self.grid(i),
            box=self.box(i),
            numbers=numbers,
            positions=positions,
            name=_plain(f["name"][i]),
            source=_plain(f["source"][i]),
            record=int(f["record"][i]),
        )

    def __iter__(self) -> Iterator[ShardRecord]:
        for i in range(self._len):
            yield self[i]


class ShardSet:
    """Every complete shard of an output directory (or a single shard file), read as one
    sequence of structures in shard order."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if p.is_dir():
            files = sorted(p.glob(SHARD_GLOB))
            if not files:
                raise ValueError(f"{p}: no {SHARD_GLOB} files in this directory")
        elif p.is_file():
            files = [p]
        else:
            raise ValueError(f"{p}: no such shard file or directory")
        self.path = p
        self.shards = [Shard(f) for f in files]
        self._ends = np.cumsum([len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def locate(self, i: int) -> tuple[Shard, int]:
        """(shard, index within it) of global structure ``i``."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"structure {i} out of range ({n} structures in {self.path})")
        i %= n
        k = int(np.searchsorted(self._ends, i, side="right"))
        start = int(self._ends[k - 1]) if k else 0
        return self.shards[k], i - start

    def __getitem__(self, i: int) -> ShardRecord:
        shard, j = self.locate(i)
        return shard[j]

    def __iter__(self) -> Iterator[ShardRecord]:
        for s in self.shards:
            yield from s


def check_format(f: h5py.File, path: Path | str) -> None:
    """Raise ValueError unless ``f`` is a pgrid shard of a version this code reads."""
    fmt = _plain(f.attrs.get("format", ""))
    if fmt != FORMAT:
        raise ValueError(f"{path}: not a pgrid shard (format attribute is {fmt!r})")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: shard format version {version}; this pgrid reads version {FORMAT_VERSION}"
        )


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):
        if v.dtype.kind in ("O", "S"):
            return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in v.tolist()]
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
