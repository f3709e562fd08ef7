"""HDF5 shards of grids (SPEC §6, format version 1), and the output directory of a run.

A shard holds N structures: their grids ``(N, C, nx, ny, nz)`` (float32 or float16, one
structure per chunk), boxes, atoms (CSR layout: ``atom_offset``, plus per-atom
``weights``) and provenance (name, source file, record index). Shards written by
``pgrid grid`` also keep the input records of their range that were rejected (dataset
``rejected``, one JSON object per record) so that a shard is a self-contained unit of work.

:class:`ShardWriter` appends structures (arrays, or chunks already encoded by a
:class:`~pgrid_cli.codec.GridCodec`) and makes the file appear under its final name only
once it is complete; :class:`Shard` reads one with random access; :class:`ShardSet` reads a
whole output directory as one sequence; :func:`verify_shard` checks one.

An output directory holds ``shard-00000.h5`` …, ``slices/slice-I-of-N.json`` (the state of
each slice of a run: parameters, inputs, progress), and once every slice is complete
``manifest.json`` and ``errors.jsonl``, written by :func:`write_index` (``pgrid index``),
which can also write ``all.h5``: virtual datasets spanning every shard.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import _core
from .box import Box
from .channels import ChannelSpec
from .codec import GridCodec
from .io import Rejection

FORMAT = "pgrid-shard"
FORMAT_VERSION = 1
SHARD_GLOB = "shard-*.h5"
#: Suffix of a shard being written; renamed away only when the shard is complete.
PARTIAL_SUFFIX = ".partial"
#: Dataset of the rejected input records of a shard's range (JSON objects, UTF-8).
REJECTED = "rejected"
#: Files of an output directory.
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
SLICES_DIR = "slices"
VDS_NAME = "all.h5"
MANIFEST_FORMAT = "pgrid-run"
SLICE_FORMAT = "pgrid-slice"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")

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
            self._filters = compression_options(compression)
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
    ) -> None:
        """Append k structures: grids (k, C, nx, ny, nz) and per-structure metadata.

        ``weights[s]`` is (M_s,) per-atom weights (default 1). With a codec, the grids are
        rounded (on a copy) as it says before they are stored. With ``encoded``, ``grids``
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
            if self.codec is not None and self.codec.step:
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
            f.create_dataset("name", data=np.array(self._names, dtype=object), dtype=_STR)
            f.create_dataset("source", data=np.array(self._sources, dtype=object), dtype=_STR)
            f.create_dataset("record", data=np.array(self._records, dtype=np.int64))
            f.create_dataset(REJECTED, data=np.array(self._rejected, dtype=_STR), dtype=_STR)
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
            name=_plain(f["name"][i]),
            source=_plain(f["source"][i]),
            record=int(f["record"][i]),
            weights=weights,
        )

    def rejections(self) -> list[Rejection]:
        """The rejected input records of this shard's range (empty for older shards)."""
        if REJECTED not in self.file:
            return []
        return [Rejection.from_json(json.loads(_plain(t))) for t in self.file[REJECTED][:]]

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
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------- verification
_REQUIRED = (
    "grids",
    "origin",
    "axes",
    "periodic",
    "atom_offset",
    "atomic_numbers",
    "positions",
    "name",
    "source",
    "record",
)


@dataclass
class ShardCheck:
    """The result of :func:`verify_shard`: ``problem`` is empty when the shard is valid."""

    path: Path
    problem: str = ""
    n_structures: int = 0
    n_rejected: int = 0
    n_atoms: int = 0
    dtype: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problem


def verify_shard(
    path: str | os.PathLike[str], *, expect: dict[str, Any] | None = None, deep: bool = False
) -> ShardCheck:
    """Check that a file is a complete, self-consistent shard.

    Checks the format attributes, that every dataset has one entry per structure (or per
    atom), the ``atom_offset`` index, the grid shape against ``channels``/``grid_shape``,
    the counts written when the shard was closed, and that file attributes equal
    ``expect`` (e.g. ``{"run_id": …, "first_item": …}``). ``deep`` also decompresses every
    grid and checks its values are finite (slower: it reads the whole file).
    """
    check = ShardCheck(Path(path))
    try:
        with h5py.File(path, "r") as f:
            check.problem = _shard_problem(f, check, expect or {}, deep)
    except OSError as exc:
        check.problem = f"not a readable HDF5 file ({exc})"
    return check


def _shard_problem(f: h5py.File, check: ShardCheck, expect: dict[str, Any], deep: bool) -> str:
    try:
        check_format(f, check.path.name)
    except ValueError as exc:
        return str(exc).split(": ", 1)[-1]
    missing = [d for d in _REQUIRED if d not in f]
    if missing:
        return f"missing dataset(s) {', '.join(missing)}"
    attrs = {k: _plain(v) for k, v in f.attrs.items()}
    check.attrs = attrs
    n = int(f["grids"].shape[0])
    check.n_structures = n
    check.dtype = str(f["grids"].dtype)
    for d in ("origin", "axes", "periodic", "name", "source", "record"):
        if f[d].shape[0] != n:
            return f"{d} has {f[d].shape[0]} entries for {n} grids"
    try:
        shape = (len(attrs["channels"]), *[int(v) for v in attrs["grid_shape"]])
    except (KeyError, TypeError):
        return "missing channels or grid_shape attribute"
    if tuple(f["grids"].shape[1:]) != shape:
        return f"grids have shape {f['grids'].shape[1:]}, attributes say {shape}"
    offsets = f["atom_offset"][:]
    m = int(f["atomic_numbers"].shape[0])
    check.n_atoms = m
    if len(offsets) != n + 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        return "atom_offset is not a valid index (N+1 non-decreasing offsets from 0)"
    if offsets[-1] != m or f["positions"].shape[0] != m:
        return f"atom_offset ends at {offsets[-1]}, but there are {m} atoms / positions"
    if "weights" in f and f["weights"].shape[0] != m:
        return f"weights has {f['weights'].shape[0]} entries for {m} atoms"
    if "n_structures" not in attrs:
        return "the shard was not closed (no n_structures attribute)"
    if int(attrs["n_structures"]) != n:
        return f"n_structures attribute is {attrs['n_structures']}, but there are {n} grids"
    n_rej = int(f[REJECTED].shape[0]) if REJECTED in f else 0
    check.n_rejected = n_rej
    if int(attrs.get("n_rejected", n_rej)) != n_rej:
        return f"n_rejected attribute is {attrs['n_rejected']}, but {n_rej} are stored"
    if "n_items" in attrs and int(attrs["n_items"]) != n + n_rej:
        return f"holds {n} structures + {n_rej} rejections, but n_items is {attrs['n_items']}"
    for key, want in expect.items():
        got = attrs.get(key)
        if got != want:
            return f"{key} is {got!r}, expected {want!r}"
    if deep:
        g = f["grids"]
        for i in range(n):
            try:
                values = g[i]
            except OSError as exc:
                return f"grid {i} cannot be read ({exc})"
            if not np.all(np.isfinite(values)):
                return f"grid {i} holds non-finite values"
    return ""


# ---------------------------------------------------------------------- output directory
def shard_index(path: str | os.PathLike[str]) -> int | None:
    """Index of a shard file from its name (``shard-00012.h5`` → 12), else None."""
    m = _SHARD_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def slice_state_path(out_dir: str | os.PathLike[str], index: int, count: int) -> Path:
    """Where slice ``index`` of ``count`` keeps its state."""
    return Path(out_dir) / SLICES_DIR / f"slice-{index:05d}-of-{count:05d}.json"


def read_slice_states(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The slice states of an output directory (unreadable ones are skipped)."""
    states = []
    for p in sorted((Path(out_dir) / SLICES_DIR).glob("slice-*.json")):
        try:
            st = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(st, dict) and st.get("format") == SLICE_FORMAT:
            st["_path"] = str(p)
            states.append(st)
    return states


def _complete_slices(out: Path, states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A complete set of slice states (all N slices of one run, each complete)."""
    if not states:
        raise ValueError(
            f"{out}: no {SLICES_DIR}/slice-*.json: not the output directory of a pgrid grid run"
        )
    run_ids = sorted({str(s.get("run_id")) for s in states})
    if len(run_ids) > 1:
        raise ValueError(
            f"{out}: holds slices of {len(run_ids)} different runs (parameters or inputs "
            f"differ); rerun the odd ones with --overwrite"
        )
    by_n: dict[int, dict[int, dict[str, Any]]] = {}
    for st in states:
        by_n.setdefault(int(st["num_slices"]), {})[int(st["slice_index"])] = st
    best_n, best = max(
        by_n.items(), key=lambda kv: sum(bool(s["complete"]) for s in kv[1].values())
    )
    for n, group in sorted(by_n.items()):
        if len(group) == n and all(s["complete"] for s in group.values()):
            return [group[i] for i in range(n)]
    waiting = [str(i) for i in range(best_n) if i not in best or not best[i]["complete"]]
    raise ValueError(
        f"{out}: slice(s) {', '.join(waiting)} of {best_n} have not finished; run them "
        f"(pgrid grid … --shard-index I --num-shards {best_n} --resume), then index again"
    )


def write_index(out_dir: str | os.PathLike[str], *, vds: bool = False) -> dict[str, Any]:
    """Combine the slices of a finished run: write ``manifest.json`` and ``errors.jsonl``
    (and ``all.h5`` with ``vds``). Returns the manifest.

    Every shard of the run must be present and valid; raises ValueError naming what is
    missing otherwise. Safe to run again (the files are replaced atomically).
    """
    out = Path(out_dir)
    states = _complete_slices(out, read_slice_states(out))
    first = states[0]
    run_id = first["run_id"]
    total = int(first["total_items"])
    size = int(first["shard_size"])
    if any(int(s["total_items"]) != total for s in states):
        raise ValueError(f"{out}: the slices disagree on the number of input records")
    problems: list[str] = []
    checks: list[ShardCheck] = []
    for k in range(math.ceil(total / size)):
        path = out / shard_name(k)
        expect = {"run_id": run_id, "first_item": k * size, "n_items": min(size, total - k * size)}
        if not path.exists():
            problems.append(f"{path.name} is missing")
            continue
        check = verify_shard(path, expect=expect)
        if not check.ok:
            problems.append(f"{path.name}: {check.problem}")
        checks.append(check)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{out}: cannot index: {'; '.join(problems[:3])}{more}")

    by_kind: dict[str, int] = {}
    tmp = out / f"{ERRORS}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for check in checks:
            shard = Shard(check.path)
            for r in shard.rejections():
                fh.write(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False) + "\n")
                by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
            shard.close()
    os.replace(tmp, out / ERRORS)

    notes: dict[str, int] = {}
    for st in states:
        for msg, count in st.get("notes", {}).items():
            notes[msg] = notes.get(msg, 0) + int(count)
    written = sum(c.n_structures for c in checks)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "format_version": FORMAT_VERSION,
        "pgrid_version": first.get("pgrid_version", ""),
        "run_id": run_id,
        "parameters": first["parameters"],
        "inputs": first["inputs"],
        "shard_size": size,
        "num_slices": len(states),
        "commands": sorted({str(s.get("command", "")) for s in states}),
        "shards": [
            {
                "file": c.path.name,
                "first_item": int(c.attrs["first_item"]),
                "n_items": int(c.attrs["n_items"]),
                "n_structures": c.n_structures,
                "n_rejected": c.n_rejected,
                "bytes": c.path.stat().st_size,
            }
            for c in checks
        ],
        "counts": {
            "read": total,
            "written": written,
            "rejected": total - written,
            "rejected_by_kind": dict(sorted(by_kind.items())),
        },
        "notes": notes,
        "errors": ERRORS,
        "vds": None,
    }
    if vds:
        if written:
            write_vds(out / VDS_NAME, [c.path for c in checks])
            manifest["vds"] = VDS_NAME
        else:
            (out / VDS_NAME).unlink(missing_ok=True)
    write_json(out / MANIFEST, manifest)
    return manifest


_PER_STRUCTURE = ("grids", "origin", "axes", "periodic", "name", "source", "record")
_PER_ATOM = ("atomic_numbers", "positions", "weights")


def write_vds(path: str | os.PathLike[str], shards: Sequence[str | os.PathLike[str]]) -> Path:
    """One HDF5 file whose datasets are virtual views spanning ``shards`` in order.

    It has the layout of a shard (so :class:`Shard` reads it): per-structure and per-atom
    datasets are virtual; ``atom_offset`` and ``rejected`` are real (offsets must be
    global). Source files are referred to by name relative to ``path``'s directory, so
    the directory can be moved as a whole. Written atomically.
    """
    path = Path(path)
    if not shards:
        raise ValueError("write_vds() needs at least one shard")
    files = [Path(s) for s in shards]
    infos = []
    for f in files:
        with h5py.File(f, "r") as h:
            check_format(h, f)
            infos.append(
                {
                    "n": int(h["grids"].shape[0]),
                    "m": int(h["atomic_numbers"].shape[0]),
                    "shapes": {d: h[d].shape for d in (*_PER_STRUCTURE, *_PER_ATOM) if d in h},
                    "dtypes": {d: h[d].dtype for d in (*_PER_STRUCTURE, *_PER_ATOM) if d in h},
                    "offsets": h["atom_offset"][:],
                    "rejected": h[REJECTED][:] if REJECTED in h else np.array([], dtype=object),
                    "attrs": dict(h.attrs),
                }
            )
    n_total = sum(i["n"] for i in infos)
    m_total = sum(i["m"] for i in infos)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with h5py.File(tmp, "w") as out:
        for k, v in infos[0]["attrs"].items():
            out.attrs[k] = v
        for k in ("first_item", "n_items"):
            if k in out.attrs:
                del out.attrs[k]
        out.attrs["n_structures"] = n_total
        out.attrs["virtual_sources"] = np.array([f.name for f in files], dtype=_STR)
        for name, total, key in [(d, n_total, "n") for d in _PER_STRUCTURE] + [
            (d, m_total, "m") for d in _PER_ATOM
        ]:
            if not all(name in i["shapes"] for i in infos):
                continue
            tail = infos[0]["shapes"][name][1:]
            layout = h5py.VirtualLayout(shape=(total, *tail), dtype=infos[0]["dtypes"][name])
            pos = 0
            for f, info in zip(files, infos, strict=True):
                count = info[key]
                if count:
                    src = h5py.VirtualSource(
                        os.path.relpath(f, path.parent), name, shape=(count, *tail)
                    )
                    layout[pos : pos + count] = src
                pos += count
            out.create_virtual_dataset(name, layout)
        offsets = [np.zeros(1, np.int64)]
        base = 0
        for info in infos:
            offsets.append(info["offsets"][1:] + base)
            base += info["m"]
        out.create_dataset("atom_offset", data=np.concatenate(offsets))
        rejected = np.concatenate([i["rejected"] for i in infos]).astype(object)
        out.create_dataset(REJECTED, data=rejected, dtype=_STR)
        out.attrs["n_rejected"] = len(rejected)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------- description
def describe(path: str | os.PathLike[str], *, deep: bool = False) -> dict[str, Any]:
    """What ``pgrid info`` shows: a shard file or an output directory, validated.

    Returns a JSON-friendly dict: ``kind`` (``shard`` | ``directory``), counts, parameters
    (sigma, channels, grid shape, storage), ``bytes`` on disk, one entry per shard with
    its check, and ``problems`` (empty when everything is valid and complete). ``deep``
    also decompresses every grid (see :func:`verify_shard`).
    """
    p = Path(path)
    if p.is_file():
        check = verify_shard(p, deep=deep)
        return {
            "kind": "shard",
            "path": str(p),
            "bytes": p.stat().st_size,
            "n_structures": check.n_structures,
            "n_rejected": check.n_rejected,
            "n_atoms": check.n_atoms,
            "parameters": _shard_parameters({**check.attrs, "dtype": check.dtype}),
            "attributes": check.attrs,
            "problems": [check.problem] if check.problem else [],
        }
    if not p.is_dir():
        raise ValueError(f"{p}: no such shard file or directory")
    manifest: dict[str, Any] | None = None
    problems: list[str] = []
    if (p / MANIFEST).exists():
        try:
            manifest = json.loads((p / MANIFEST).read_text())
        except ValueError as exc:
            problems.append(f"{MANIFEST} is not valid JSON ({exc})")
    expected: dict[str, dict[str, Any]] = {}
    if manifest:
        for s in manifest.get("shards", []):
            expected[s["file"]] = {
                "run_id": manifest.get("run_id"),
                "first_item": s["first_item"],
                "n_items": s["n_items"],
            }
    files = sorted(p.glob(SHARD_GLOB))
    shards = []
    first_attrs: dict[str, Any] = {}
    for f in files:
        check = verify_shard(f, expect=expected.get(f.name), deep=deep)
        if not check.ok:
            problems.append(f"{f.name}: {check.problem}")
        shards.append(
            {
                "file": f.name,
                "bytes": f.stat().st_size,
                "n_structures": check.n_structures,
                "n_rejected": check.n_rejected,
                "ok": check.ok,
                "problem": check.problem,
            }
        )
        if len(shards) == 1:
            first_attrs = {**check.attrs, "dtype": check.dtype}
    present = {f.name for f in files}
    missing = [name for name in expected if name not in present]
    if missing:
        problems.append(f"{len(missing)} shard(s) of the manifest are missing, e.g. {missing[0]}")
    partial = sorted(f.name for f in p.glob(SHARD_GLOB + PARTIAL_SUFFIX))
    if partial:
        problems.append(
            f"{len(partial)} unfinished shard(s) ({partial[0]} …): an interrupted or running "
            f"run; continue it with --resume"
        )
    states = read_slice_states(p)
    if manifest is None:
        if states:
            done = sum(bool(s.get("complete")) for s in states)
            problems.append(
                f"no {MANIFEST}: {done} of {len(states)} slice(s) finished; run pgrid index "
                f"when all are done"
            )
        elif files:
            problems.append(f"no {MANIFEST} (not written by pgrid grid, or not indexed)")
        else:
            problems.append("no shards and no manifest: not a pgrid output directory")
    if manifest:
        params = dict(manifest.get("parameters", {}))
    elif states:
        params = dict(states[0].get("parameters", {}))
    else:
        params = _shard_parameters(first_attrs) if files else {}
    total_bytes = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return {
        "kind": "directory",
        "path": str(p),
        "bytes": total_bytes,
        "n_shards": len(files),
        "n_structures": sum(s["n_structures"] for s in shards),
        "n_rejected": sum(s["n_rejected"] for s in shards),
        "counts": manifest.get("counts") if manifest else None,
        "parameters": params,
        "run_id": manifest.get("run_id") if manifest else None,
        "manifest": manifest is not None,
        "vds": manifest.get("vds") if manifest else None,
        "slices": [
            {"slice": [s["slice_index"], s["num_slices"]], "complete": bool(s.get("complete"))}
            for s in states
        ],
        "shards": shards,
        "problems": problems,
    }


def _shard_parameters(attrs: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "sigma",
        "channels",
        "grid_shape",
        "box",
        "padding",
        "dtype",
        "compression",
        "compression_level",
        "rounding_step",
        "disorder",
    )
    return {k: attrs[k] for k in keys if k in attrs}


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
