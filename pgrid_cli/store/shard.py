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
file names and attributes are :mod:`pgrid_cli.store.layout`'s, the writer lives in
:mod:`pgrid_cli.store.writer`, the output directory around the shards is
:mod:`pgrid_cli.store.rundir`'s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from .. import _core
from ..core.box import Box
from ..core.channels import ChannelSpec
from ..core.structure import Structure
from ..readers.records import Rejection
from .codec import ZSTD_FILTER, load_zstd_filter, zstd_decompressor
from .layout import (
    CAPTURED,
    FORMAT,
    FORMAT_VERSION,
    LATTICE,
    PARTIAL_SUFFIX,
    REJECTED,
    SHARD_GLOB,
    STR_DTYPE,
    STRUCTURES,
    ShardMeta,
    check_format,
    content,
    density_channels,
    energy_channel,
    n_structures,
    partial_index,
    plain,
    shard_index,
    shard_name,
)
from .plugins import PLUGIN_COMPRESSIONS, load_plugins
from .properties import (
    ATOM_PROPERTIES,
    ID,
    PROPERTIES,
    atom_property_names,
    property_names,
    read_property,
)
from .writer import ShardWriter

if TYPE_CHECKING:
    from .verify import ShardCheck

__all__ = [
    "CAPTURED",
    "FORMAT",
    "FORMAT_VERSION",
    "PARTIAL_SUFFIX",
    "REJECTED",
    "SHARD_GLOB",
    "STRUCTURES",
    "STR_DTYPE",
    "Shard",
    "ShardMeta",
    "ShardRecord",
    "ShardSet",
    "ShardWriter",
    "check_format",
    "partial_index",
    "plain",
    "shard_index",
    "shard_name",
]


@dataclass(frozen=True)
class ShardRecord:
    """One structure read back from a shard (of a structures shard: ``grid`` and ``box``
    are None, ``lattice`` is its cell)."""

    grid: np.ndarray  #: (C, nx, ny, nz), the stored dtype
    box: Box
    numbers: np.ndarray  #: (M,) int16 atomic numbers
    positions: np.ndarray  #: (M, 3) float64, Å, the input frame
    name: str
    source: str
    record: int
    weights: np.ndarray | None = None  #: (M,) float64 per-atom weights (None: all 1)
    captured: float | None = None  #: Σ grid ÷ Σ weights (None: not stored)
    id: int | None = None  #: record id unique within the run (None: version 1 shard)
    #: properties (name → float, NaN when missing; str; or array) and per-atom arrays
    properties: dict[str, Any] = field(default_factory=dict)
    atom_properties: dict[str, np.ndarray] = field(default_factory=dict)
    lattice: np.ndarray | None = None  #: structures shards: (3, 3) cell, Å (None: molecule)


class Shard:
    """Random access to one shard file. Opens lazily, so it can be created in one process
    and used in another (the handle itself is never pickled)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._offsets: np.ndarray | None = None
        self._fast: str | None = None  # grids readable by the fast path (set on first read)
        self._columns: dict[str, Any] = {}
        f = self.file  # validate now, so a bad file fails early and clearly
        self._len = n_structures(f)
        self.content = content(f)  #: ``grids``, or ``structures`` (no grids)

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                why = " ".join(str(exc).split())  # HDF5's messages can span lines
                raise OSError(f"{self.path}: not a readable HDF5 file ({why})") from None
            self._pid = os.getpid()
            check_format(self._file, self.path)
            compression = plain(self._file.attrs.get("compression", ""))
            if compression == "zstd":
                load_zstd_filter()  # lets h5py decode the chunks too (other datasets, VDS)
            elif compression in PLUGIN_COMPRESSIONS:
                load_plugins(compression)  # h5py decodes these chunks (hdf5plugin's filters)
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_len": self._len, "content": self.content}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._len = state["_len"]
        self.content = state.get("content", "grids")
        self._file = None
        self._pid = None
        self._offsets = None
        self._fast = None
        self._columns = {}

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
    def has_grids(self) -> bool:
        """False for a structures shard (``pgrid grid --store structures``)."""
        return self.content != STRUCTURES

    def _require_grids(self, what: str) -> None:
        if not self.has_grids:
            raise ValueError(
                f"{self.path}: a structures shard (pgrid grid --store structures) has no "
                f"{what}; grid its structures with a GridRecipe, e.g. "
                f"pgrid_cli.torch.StructureShardDataset"
            )

    @property
    def sigma(self) -> float:
        self._require_grids("grids (no sigma)")
        return float(self.file.attrs["sigma"])

    @property
    def channels(self) -> ChannelSpec:
        """The density channels: element channels, or named ones (typed channels,
        ``receptor:*`` / ``ligand:*`` of complexes), without an energy channel."""
        self._require_grids("grids (no channels)")
        return ChannelSpec.from_names(density_channels(self.file.attrs))

    @property
    def energy_channel(self) -> str | None:
        """The name of the energy channel stored after the density ones (docs/energy.md),
        or None."""
        self._require_grids("grids (no channels)")
        return energy_channel(self.file.attrs)

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        self._require_grids("grids (no grid shape)")
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
        self._require_grids("grids")
        ds = self.file["grids"]
        if self._fast is None:
            self._fast = _fast_layout(ds)
        if not self._fast:
            return ds[i]
        # Standard shuffle + gzip (or zstd) chunks, what pgrid grid writes: inflate with
        # ISA-L (or zstandard) and unshuffle in native code, several times faster than
        # HDF5's own filters.
        mask, chunk = ds.id.read_direct_chunk((i, *(0,) * (ds.ndim - 1)))
        if self._fast == "zstd":
            raw = zstd_decompressor().decompress(chunk)
        else:
            raw = chunk if mask & 0b10 else _inflate(chunk)
        out = np.empty(ds.shape[1:], dtype=np.float32)
        if len(raw) != out.nbytes:
            raise ValueError(f"{self.path}: chunk {i} of grids is damaged ({len(raw)} bytes)")
        _core.unshuffle4(np.frombuffer(raw, dtype=np.uint8), out.reshape(-1))
        return out

    def box(self, i: int) -> Box:
        i = self._index(i)
        self._require_grids("grid boxes")
        f = self.file
        return Box(f["origin"][i], f["axes"][i], self.grid_shape, bool(f["periodic"][i]))

    def voxel_size(self, i: int) -> np.ndarray:
        """(3,) voxel edge lengths of structure ``i``, Å: derived from ``axes`` (each box
        edge ÷ the voxels along it), not stored separately."""
        axes = self.file["axes"][self._index(i)]
        return np.linalg.norm(axes, axis=1) / np.asarray(self.grid_shape)

    def lattice(self, i: int) -> np.ndarray | None:
        """(3, 3) cell of structure ``i`` of a structures shard (rows a, b, c, Å); None
        for a molecule."""
        i = self._index(i)
        if self.has_grids:
            raise ValueError(f"{self.path}: a shard with grids stores grid boxes, not cells")
        if not bool(self.file["periodic"][i]):
            return None
        return np.asarray(self.file[LATTICE][i], dtype=np.float64)

    def structure(self, i: int) -> Structure:
        """Structure ``i`` as a :class:`pgrid_cli.Structure` (atoms, weights, cell of a
        structures shard, provenance)."""
        rec = self[i]
        return Structure(
            numbers=rec.numbers.astype(np.int64),
            positions=np.asarray(rec.positions, dtype=np.float64),
            lattice=rec.lattice,
            weights=rec.weights,
            name=rec.name,
            source=rec.source,
            record=rec.record,
        )

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

    def captured(self, i: int) -> float | None:
        """The fraction of structure ``i``'s weight that its grid holds (Σ grid ÷ Σ
        weights of the kernel's grid); None for shards written before it was stored."""
        if CAPTURED not in self.file:
            return None
        return float(self.file[CAPTURED][self._index(i)])

    @property
    def property_names(self) -> list[str]:
        """Names of the stored properties (``properties/<name>``; empty for version 1)."""
        return property_names(self.file)

    @property
    def atom_property_names(self) -> list[str]:
        return atom_property_names(self.file)

    def property_column(self, name: str) -> np.ndarray:
        """Every structure's value of property ``name`` (read once, then cached)."""
        if name not in self._columns:
            if f"{PROPERTIES}/{name}" not in self.file:
                raise KeyError(f"{self.path.name} has no property {name!r}")
            self._columns[name] = read_property(self.file, name)
        return self._columns[name]  # type: ignore[no-any-return]

    def properties(self, i: int) -> dict[str, Any]:
        """The properties of structure ``i`` (name → float, str or float64 array)."""
        i = self._index(i)
        return {n: self.property_column(n)[i] for n in self.property_names}

    def atom_properties(self, i: int) -> dict[str, np.ndarray]:
        """The per-atom properties of structure ``i`` (name → (M_i, …) array)."""
        a0, a1 = self._atom_range(self._index(i))
        return {n: self.file[f"{ATOM_PROPERTIES}/{n}"][a0:a1] for n in self.atom_property_names}

    def id(self, i: int) -> int | None:
        """The run-wide id of structure ``i`` (None for version 1 shards)."""
        if ID not in self.file:
            return None
        key = "\0" + ID  # not a property name: read once (N int64), then cached
        if key not in self._columns:
            self._columns[key] = self.file[ID][()]
        return int(self._columns[key][self._index(i)])

    def verify(self) -> ShardCheck:
        """Check this shard, checksums included: a
        :class:`~pgrid_cli.store.verify.ShardCheck` (``.ok``, ``.problem``)."""
        from .verify import verify_shard  # verify reads shards: imported when used

        return verify_shard(self.path, checksums=True)

    def __getitem__(self, i: int) -> ShardRecord:
        i = self._index(i)
        f = self.file
        numbers, positions = self.atoms(i)
        weights = self.weights(i)
        grids = self.has_grids  # a structures shard: no grid, no box, its cell instead
        return ShardRecord(
            grid=self.grid(i) if grids else None,  # type: ignore[arg-type]
            box=self.box(i) if grids else None,  # type: ignore[arg-type]
            numbers=numbers,
            positions=positions,
            name=plain(f["name"][i]),
            source=plain(f["source"][i]),
            record=int(f["record"][i]),
            weights=weights,
            captured=self.captured(i) if grids else None,
            lattice=None if grids else self.lattice(i),
            id=self.id(i),
            properties=self.properties(i),
            atom_properties=self.atom_properties(i),
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


def _fast_layout(ds: h5py.Dataset) -> str:
    """``"gzip"`` or ``"zstd"`` when ``ds`` stores float32 grids one structure per chunk
    through exactly HDF5's shuffle then deflate (or Zstandard) filters — the layouts
    :meth:`Shard.grid` decodes itself —, else ``""``."""
    if ds.dtype != np.float32 or ds.chunks != (1, *ds.shape[1:]) or ds.is_virtual:
        return ""
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
    if filters == [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]:
        return "gzip"
    if filters == [h5py.h5z.FILTER_SHUFFLE, ZSTD_FILTER]:
        return "zstd"
    return ""


def _inflate(chunk: bytes) -> bytes:
    try:
        from isal import isal_zlib as z
    except ImportError:  # pragma: no cover - isal is a dependency
        import zlib as z
    return z.decompress(chunk)
