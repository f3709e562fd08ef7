"""The names and attributes of shard files (docs/format.md §6), shared by the writer
(:mod:`pgrid_cli.store.writer`) and the reader (:mod:`pgrid_cli.store.shard`)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.version import __version__

FORMAT = "pgrid-shard"
FORMAT_VERSION = 1
#: The format versions this code reads: version 2 adds ``id``, ``properties/<name>`` and
#: ``atom_properties/<name>`` (docs/format.md §6); a shard without them is version 1.
READ_VERSIONS = (1, 2)
SHARD_GLOB = "shard-*.h5"
#: Suffix of a shard being written (``shard-00012.h5.<pid>-<random>.partial``); renamed
#: to its final name only when the shard is complete.
PARTIAL_SUFFIX = ".partial"
#: Dataset of the rejected input records of a shard's range (JSON objects, UTF-8).
REJECTED = "rejected"
#: Dataset of the fraction of each structure's weight that its grid holds.
CAPTURED = "captured"
#: The ``content`` attribute of a shard without grids (``pgrid grid --store structures``):
#: atoms, cells and provenance only, gridded later (``pgrid_cli.torch.StructureShardDataset``).
#: Shards with grids have no ``content`` attribute (or ``content = "grids"``).
STRUCTURES = "structures"
GRIDS = "grids"
#: Atom property of a structures shard written with a typer (``pgrid grid --store
#: structures --channels pharmacophore``): each atom's (C,) channel memberships, float64;
#: the file attributes ``typer`` and ``typer_channels`` name the typer and its channels.
TYPED_MEMBERSHIPS = "typed_memberships"

#: Per-structure datasets of a structures shard: the cell (rows a, b, c; zeros for a
#: molecule) and whether it is periodic.
LATTICE = "lattice"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")
_PARTIAL_RE = re.compile(r"^shard-(\d{5,})\.h5(?:\.\d+(?:-[0-9a-f]+)?)?\.partial$")

STR_DTYPE = h5py.string_dtype("utf-8")


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00000.h5``."""
    return f"shard-{index:05d}.h5"


def shard_index(path: str | os.PathLike[str]) -> int | None:
    """Index of a shard file from its name (``shard-00012.h5`` → 12), else None."""
    m = _SHARD_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def partial_index(path: str | os.PathLike[str]) -> int | None:
    """Index of the shard a partial file was becoming
    (``shard-00012.h5.4711-9f3a0c1d.partial`` → 12), else None."""
    m = _PARTIAL_RE.match(Path(path).name)
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
    content: str = GRIDS  #: ``grids``, or ``structures`` (no grids, no gridding attributes)

    @classmethod
    def structures(cls, command: str = "", extra: dict[str, Any] | None = None) -> ShardMeta:
        """The attributes of a shard without grids (``content = "structures"``)."""
        return cls(0.0, (), (0, 0, 0), command=command, extra=dict(extra or {}), content=STRUCTURES)

    def attrs(self) -> dict[str, Any]:
        if self.content == STRUCTURES:
            out: dict[str, Any] = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "content": STRUCTURES,
                "pgrid_version": __version__,
                "command": str(self.command),
            }
            out.update(self.extra)
            return out
        out = {
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


def density_channels(attrs: Any) -> list[str]:
    """The density channels' names of a grids shard (its ``attrs``): every channel but a
    computed one, which follows them (the energy channel ``lj:CH4`` when the shard has
    the attribute ``energy``; docs/format.md §6)."""
    names = [str(c) for c in plain(attrs["channels"])]
    return names[:-1] if attrs.get("energy") is not None else names


def energy_channel(attrs: Any) -> str | None:
    """The name of a grids shard's energy channel (``lj:CH4``, stored after the density
    channels), or None."""
    if attrs.get("energy") is None:
        return None
    return str(plain(attrs["channels"])[-1])


def check_format(f: h5py.File, path: Path | str) -> None:
    """Raise ValueError unless ``f`` is a pgrid shard of a version this code reads."""
    fmt = plain(f.attrs.get("format", ""))
    if fmt != FORMAT:
        raise ValueError(f"{path}: not a pgrid shard (format attribute is {fmt!r})")
    version = int(f.attrs.get("format_version", -1))
    if version not in READ_VERSIONS:
        raise ValueError(
            f"{path}: shard format version {version}; this pgrid reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}"
        )


def content(f: h5py.File) -> str:
    """``grids`` or ``structures``: what an open shard holds."""
    return str(plain(f.attrs.get("content", GRIDS)))


def n_structures(f: h5py.File) -> int:
    """The number of structures of an open shard (of either content)."""
    return int(f[GRIDS].shape[0]) if GRIDS in f else int(f["record"].shape[0])


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
