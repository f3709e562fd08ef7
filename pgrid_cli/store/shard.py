"""HDF5 shards of grids (docs/format.md, "Shards"): the file format, its writer and reader.

A shard holds N structures: their grids ``(N, C, nx, ny, nz)`` (float32 or float16, one
structure per chunk), boxes, atoms (CSR layout: ``atom_offset``, plus per-atom
``weights``) and provenance (name, source file, record index). Shards written by
``pgrid grid`` also keep the input records of their range that were rejected (dataset
``rejected``, one JSON object per record) so that a shard is a self-contained unit of work.

:class:`ShardWriter` appends structures (arrays, or chunks already encoded by a
:class:`~pgrid_cli.store.codec.GridCodec`) and makes the file appear under its final name
only once it is complete; :class:`Shard` reads one with random access; :class:`ShardSet`
reads a whole output directory as one sequence; :func:`verify_shard` checks one. The
output directory around the shards is :mod:`pgrid_cli.store.rundir`'s.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import _core
from ..core.box import Box
from ..core.channels import ChannelSpec
from ..core.version import __version__
from ..readers.records import Rejection
from .codec import GridCodec

FORMAT = "pgrid-shard"
FORMAT_VERSION = 1
SHARD_GLOB = "shard-*.h5"
#: Suffix of a shard being written; renamed away only when the shard is complete.
PARTIAL_SUFFIX = ".partial"
#: Dataset of the rejected input records of a shard's range (JSON objects, UTF-8).
REJECTED = "rejected"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")

STR_DTYPE = h5py.string_dtype("utf-8")


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00000.h5``."""
    return f"shard-{index:05d}.h5"


def shard_index(path: str | os.PathLike[str]) -> int | None:
    """Index of a shard file from its name (``shard-00012.h5`` → 12), else None."""
    m = _SHARD_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


@dataclass
class ShardMeta:
    """File attributes shared by every structure of a shard (docs/format.md §6)."""

    sigma: float  #: Gaussian standard deviation, Å
    channels: Sequence[str]  #: channel names, in channel order
    grid_shape: tuple[int, int, int]
    box: str = "fit"  #: box choice for molecules (fit | tight | cube:L)
    padding: float = 2.0  #: Å
    command: str = ""  #: the command line that made the shard
    extra: dict[str, Any] = field(default_factory=dict)  #: further attributes to store

    def attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "sigma": float(self.sigma),
            "channels": np.array([str(c) for c in self.channels], dtype=STR_DTYPE),
            "grid_shape": np.asarray(self.grid_shape, dtype=np.int64),
            "box": str(self.box),
            "padding": float(self.padding),
            "pgrid_version": __version__,
            "command": str(self.command),
        }
        out.update(self.extra)
        return out


class ShardWriter:
    """Append structures to a new shard; it appears at ``path`` only after :meth:`close`.

    Use as a context manager. Writing goes to ``path + ".partial"``; a clean exit
    renames it into place, an exception deletes it, so a file under the final name is
    always complete.

    Parameters
    ----------
    path : path of the final shard file
    meta : file attributes
    dtype : ``float32`` or ``float16`` storage of the grids (a codec's dtype wins)
    compression : ``gzip`` | ``lzf`` | ``none`` or a dict of h5py dataset keywords (h5py
        compresses, values stored unchanged), or a :class:`~pgrid_cli.codec.GridCodec`
        (values rounded as it says; its chunks can be encoded elsewhere and appended with
        ``encoded=True``). The codec's settings are stored as file attributes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: ShardMeta,
        *,
        dtype: str = "float32",
        compression: str | dict[str, Any] | GridCodec = "gzip",
    ) -> None:
        self.codec = compression if isinstance(compression, GridCodec) else None
        if self.codec is not None:
            dtype = self.codec.dtype
        if dtype not in ("float32", "float16"):
            raise ValueError(f"grid dtype must be float32 or float16, got {dtype!r}")
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.meta = meta
        self._dtype = np.dtype(dtype)
        if self.codec is not None:
            self._filters = self.codec.h5_options()
        elif isinstance(compression, dict):
            self._filters = compression
        else:
            self._filters = GridCodec.parse(compression, dtype, lossless=True).h5_options()
        self._n = 0
        # Everything but the grids is small: kept here and written once by close(), which
        # is much cheaper than growing ten datasets on every append.
        self._boxes: list[Box] = []
        self._numbers: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._names: list[str] = []
        self._sources: list[str] = []
        self._records: list[int] = []
        self._rejected: list[str] = []
        self._file: h5py.File | None = h5py.File(self.partial, "w")
        for k, v in meta.attrs().items():
            self._file.attrs[k] = v
        if self.codec is not None:
            for k, v in self.codec.attrs().items():
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

    def __len__(self) -> int:
        return self._n

    def append(
        self,
        grids: np.ndarray | Sequence[tuple[bytes, int]],
        boxes: Sequence[Box],
        numbers: Sequence[np.ndarray],
        positions: Sequence[np.ndarray],
        names: Sequence[str],
        sources: Sequence[str],
        records: Sequence[int],
        weights: Sequence[np.ndarray | None] | None = None,
        *,
        encoded: bool = False,
        rounded: bool = False,
    ) -> None:
        """Append k structures: grids (k, C, nx, ny, nz) and per-structure metadata.

        ``weights[s]`` is (M_s,) per-atom weights (default 1). With a codec, the grids are
        rounded (on a copy) as it says before they are stored, unless ``rounded`` says
        they already were (by this codec). With ``encoded``, ``grids``
        are k ``(bytes, filter_mask)`` chunks from :meth:`GridCodec.encode` of this
        writer's codec (gzip or none), written as they are.
        """
        f = self._require_open()
        k = len(grids)
        if not (len(boxes) == len(numbers) == len(positions) == len(names) == k):
            raise ValueError("append() needs one box, atom list and name per grid")
        if len(sources) != k or len(records) != k:
            raise ValueError("append() needs one source and record index per grid")
        if weights is not None and len(weights) != k:
            raise ValueError("append() needs one weight array (or None) per grid")
        if encoded and (self.codec is None or not self.codec.encodes_chunks):
            raise ValueError("encoded chunks need a writer made with a gzip/none GridCodec")
        g = f["grids"]
        g.resize(self._n + k, axis=0)
        zeros = (0,) * (g.ndim - 1)
        for i in range(k):  # one chunk per structure
            if encoded:
                data, mask = grids[i]  # type: ignore[misc]
                g.id.write_direct_chunk((self._n + i, *zeros), data, mask)
                continue
            grid = np.asarray(grids[i])
            if self.codec is not None and self.codec.step and not rounded:
                grid = self.codec.round(np.array(grid, dtype=np.float32))
            g[self._n + i] = np.asarray(grid, dtype=self._dtype)
        for i in range(k):
            z = np.asarray(numbers[i]).reshape(-1)
            self._boxes.append(boxes[i])
            self._numbers.append(z.astype(np.int16))
            self._positions.append(np.asarray(positions[i], dtype=np.float64).reshape(-1, 3))
            w = None if weights is None else weights[i]
            self._weights.append(
                np.ones(len(z)) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
            )
            self._names.append(str(names[i]))
            self._sources.append(str(sources[i]))
            self._records.append(int(records[i]))
        self._n += k

    def add_rejections(self, rejections: Sequence[Rejection]) -> None:
        """Keep the rejected input records of this shard's range (in input order)."""
        self._require_open()
        self._rejected.extend(json.dumps(r.to_json(), sort_keys=True) for r in rejections)

    @property
    def n_rejected(self) -> int:
        return len(self._rejected)

    def _require_open(self) -> h5py.File:
        if self._file is None:
            raise ValueError("shard writer is closed")
        return self._file

    def close(self, attrs: dict[str, Any] | None = None) -> Path:
        """Finish the file (adding ``attrs``) and move it to its final name; returns it."""
        if self._file is not None:
            f = self._file
            n = self._n
            boxes = self._boxes
            counts = np.array([len(z) for z in self._numbers], dtype=np.int64)
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])

            def stack(parts: list[np.ndarray], tail: tuple[int, ...], dtype: Any) -> np.ndarray:
                return np.concatenate(parts).astype(dtype) if parts else np.zeros((0, *tail), dtype)

            f.create_dataset("origin", data=np.array([b.origin for b in boxes]).reshape(n, 3))
            f.create_dataset("axes", data=np.array([b.axes for b in boxes]).reshape(n, 3, 3))
            f.create_dataset("periodic", data=np.array([b.periodic for b in boxes], dtype=bool))
            f.create_dataset("atom_offset", data=offsets)
            f.create_dataset("atomic_numbers", data=stack(self._numbers, (), np.int16))
            f.create_dataset("positions", data=stack(self._positions, (3,), np.float64))
            f.create_dataset("weights", data=stack(self._weights, (), np.float64))
            f.create_dataset("name", data=np.array(self._names, dtype=object), dtype=STR_DTYPE)
            f.create_dataset("source", data=np.array(self._sources, dtype=object), dtype=STR_DTYPE)
            f.create_dataset("record", data=np.array(self._records, dtype=np.int64))
            rejected = np.array(self._rejected, dtype=STR_DTYPE)
            f.create_dataset(REJECTED, data=rejected, dtype=STR_DTYPE)
            f.attrs["n_structures"] = self._n
            f.attrs["n_rejected"] = len(self._rejected)
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
            f.close()
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
    weights: np.ndarray | None = None  #: (M,) float64 per-atom weights (None: all 1)


class Shard:
    """Random access to one shard file. Opens lazily, so it can be created in one process
    and used in another (the handle itself is never pickled)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._offsets: np.ndarray | None = None
        self._fast: bool | None = None  # grids readable by the fast path (set on first read)
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
        self._fast = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __len__(self) -> int:
        return self._len

    @property
    def attrs(self) -> dict[str, Any]:
        """File attributes, with strings and arrays turned into plain Python values."""
        return {k: plain(v) for k, v in self.file.attrs.items()}

    @property
    def sigma(self) -> float:
        return float(self.file.attrs["sigma"])

    @property
    def channels(self) -> ChannelSpec:
        return ChannelSpec([str(c) for c in plain(self.file.attrs["channels"])])

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
        i = self._index(i)
        ds = self.file["grids"]
        if self._fast is None:
            self._fast = _shuffle_deflate_float32(ds)
        if not self._fast:
            return ds[i]
        # Standard shuffle + gzip chunks (what pgrid grid writes): inflate with ISA-L and
        # unshuffle in native code, several times faster than HDF5's own filters.
        mask, chunk = ds.id.read_direct_chunk((i, *(0,) * (ds.ndim - 1)))
        raw = chunk if mask & 0b10 else _inflate(chunk)
        out = np.empty(ds.shape[1:], dtype=np.float32)
        if len(raw) != out.nbytes:
            raise ValueError(f"{self.path}: chunk {i} of grids is damaged ({len(raw)} bytes)")
        _core.unshuffle4(np.frombuffer(raw, dtype=np.uint8), out.reshape(-1))
        return out

    def box(self, i: int) -> Box:
        i = self._index(i)
        f = self.file
        return Box(f["origin"][i], f["axes"][i], self.grid_shape, bool(f["periodic"][i]))

    def atoms(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(atomic numbers (M,), positions (M, 3) Å) of structure ``i``."""
        a0, a1 = self._atom_range(self._index(i))
        return self.file["atomic_numbers"][a0:a1], self.file["positions"][a0:a1]

    def weights(self, i: int) -> np.ndarray | None:
        """(M,) per-atom weights of structure ``i``; None when the shard stores none
        (every weight 1)."""
        if "weights" not in self.file:
            return None
        a0, a1 = self._atom_range(self._index(i))
        return self.file["weights"][a0:a1]

    def __getitem__(self, i: int) -> ShardRecord:
        i = self._index(i)
        f = self.file
        numbers, positions = self.atoms(i)
        weights = self.weights(i)
        return ShardRecord(
            grid=self.grid(i),
            box=self.box(i),
            numbers=numbers,
            positions=positions,
            name=plain(f["name"][i]),
            source=plain(f["source"][i]),
            record=int(f["record"][i]),
            weights=weights,
        )

    def rejections(self) -> list[Rejection]:
        """The rejected input records of this shard's range (empty for older shards)."""
        if REJECTED not in self.file:
            return []
        return [Rejection.from_json(json.loads(plain(t))) for t in self.file[REJECTED][:]]

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
    fmt = plain(f.attrs.get("format", ""))
    if fmt != FORMAT:
        raise ValueError(f"{path}: not a pgrid shard (format attribute is {fmt!r})")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: shard format version {version}; this pgrid reads version {FORMAT_VERSION}"
        )


def plain(v: Any) -> Any:
    """An HDF5 attribute or dataset value as plain Python (str, list, int, float)."""
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):
        if v.dtype.kind in ("O", "S"):
            return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in v.tolist()]
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _shuffle_deflate_float32(ds: h5py.Dataset) -> bool:
    """Whether ``ds`` stores float32 grids one structure per chunk through exactly HDF5's
    shuffle then deflate filters (the layout :func:`Shard.grid` decodes itself)."""
    if ds.dtype != np.float32 or ds.chunks != (1, *ds.shape[1:]):
        return False
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
    return filters == [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]


def _inflate(chunk: bytes) -> bytes:
    try:
        from isal import isal_zlib as z
    except ImportError:  # pragma: no cover - isal is a dependency
        import zlib as z
    return z.decompress(chunk)
