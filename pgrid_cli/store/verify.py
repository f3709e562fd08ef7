"""Checking a shard: complete, self-consistent, its checksums (with ``checksums``) and
(with ``deep``) every grid readable; a virtual ``all.h5`` also has its sources checked."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .checksums import checksum_problem, has_checksums, shard_digest
from .layout import CAPTURED, LATTICE, REJECTED, STRUCTURES, check_format, content, plain

#: ``pgrid info`` counts the structures whose grid holds less than this fraction of their
#: weight (docs/grid.md: atoms near a molecule box's faces, or outside a fixed cube).
CAPTURED_THRESHOLD = 0.99
#: Attributes of a virtual ``all.h5``: its source shards and a digest of each.
VIRTUAL_SOURCES = "virtual_sources"
VIRTUAL_DIGESTS = "virtual_source_digests"

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
#: A structures shard (``content = "structures"``) has no grids and no grid boxes.
_REQUIRED_STRUCTURES = (
    *(d for d in _REQUIRED if d not in ("grids", "origin", "axes")),
    LATTICE,
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
    #: ``verified``, ``absent`` (a shard written before pgrid stored checksums) or
    #: ``not checked``
    checksums: str = "not checked"
    captured_min: float | None = None  #: smallest ``captured`` (None: not stored / empty)
    captured_low: int = 0  #: structures with ``captured`` < :data:`CAPTURED_THRESHOLD`

    @property
    def ok(self) -> bool:
        return not self.problem


def verify_shard(
    path: str | os.PathLike[str],
    *,
    expect: dict[str, Any] | None = None,
    deep: bool = False,
    checksums: bool = False,
) -> ShardCheck:
    """Check that a file is a complete, self-consistent shard.

    Checks the format attributes, that every dataset has one entry per structure (or per
    atom), the ``atom_offset`` index, the grid shape against ``channels``/``grid_shape``,
    the counts written when the shard was closed, and that file attributes equal
    ``expect`` (e.g. ``{"run_id": …, "first_item": …}``). ``checksums`` also checks every
    stored grid chunk and every other dataset against the shard's checksums (reading the
    raw chunks: at disk speed, nothing is decompressed); a shard without checksums
    (written by an older pgrid) passes with ``checksums = "absent"``. ``deep`` also
    decompresses every grid and checks its values are finite (slower). A virtual
    ``all.h5`` (``pgrid index --vds``) fails when a source shard is missing or changed.
    """
    check = ShardCheck(Path(path))
    try:
        with h5py.File(path, "r") as f:
            check.problem = _shard_problem(f, check, expect or {}, deep)
            if not check.problem and VIRTUAL_SOURCES in f.attrs:
                check.problem = _sources_problem(check.path, f, checksums)
            elif not check.problem and checksums:
                check.problem = _checksums(f, check)
    except OSError as exc:
        check.problem = f"not a readable HDF5 file ({' '.join(str(exc).split())})"
    return check


def _checksums(f: h5py.File, check: ShardCheck) -> str:
    if not has_checksums(f):
        check.checksums = "absent"
        return ""
    problem = checksum_problem(f)
    check.checksums = "failed" if problem else "verified"
    return problem


def _sources_problem(path: Path, f: h5py.File, checksums: bool) -> str:
    """What is wrong with the source shards of a virtual file ("" when nothing); with
    ``checksums``, each source's checksums are checked too."""
    names = [str(n) for n in plain(f.attrs[VIRTUAL_SOURCES])]
    digests = f.attrs.get(VIRTUAL_DIGESTS)
    for k, name in enumerate(names):
        src = path.parent / name
        if not src.is_file():
            return f"source shard {name} of the virtual dataset is missing (it reads as zeros)"
        try:
            with h5py.File(src, "r") as s:
                digest = shard_digest(s)
                damage = checksum_problem(s) if checksums and has_checksums(s) else ""
        except (OSError, KeyError) as exc:
            return f"source shard {name} cannot be read ({' '.join(str(exc).split())})"
        if digests is not None and int(digests[k]) != digest:
            return f"source shard {name} changed since the virtual dataset was written"
        if damage:
            return f"source shard {name}: {damage}"
    return ""


def _shard_problem(f: h5py.File, check: ShardCheck, expect: dict[str, Any], deep: bool) -> str:
    try:
        check_format(f, check.path.name)
    except ValueError as exc:
        return str(exc).split(": ", 1)[-1]
    structures = content(f) == STRUCTURES
    missing = [d for d in (_REQUIRED_STRUCTURES if structures else _REQUIRED) if d not in f]
    if missing:
        return f"missing dataset(s) {', '.join(missing)}"
    attrs = {k: plain(v) for k, v in f.attrs.items()}
    check.attrs = attrs
    if structures:
        n = int(f["record"].shape[0])
        per_structure: tuple[str, ...] = (LATTICE, "periodic", "name", "source")
    else:
        n = int(f["grids"].shape[0])
        check.dtype = str(f["grids"].dtype)
        per_structure = ("origin", "axes", "periodic", "name", "source", "record")
    check.n_structures = n
    for d in per_structure:
        if f[d].shape[0] != n:
            return f"{d} has {f[d].shape[0]} entries for {n} {'records' if structures else 'grids'}"
    if not structures:
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
    for group, count, what in (("properties", n, "grids"), ("atom_properties", m, "atoms")):
        for name, ds in f[group].items() if group in f else []:
            if ds.shape[0] != count:
                return f"{group}/{name} has {ds.shape[0]} entries for {count} {what}"
    if "id" in f and f["id"].shape != (n,):
        return f"id has {f['id'].shape[0]} entries for {n} grids"
    if CAPTURED in f:
        captured = f[CAPTURED][()]
        if captured.shape != (n,):
            return f"{CAPTURED} has {captured.shape[0]} entries for {n} grids"
        if n:
            check.captured_min = float(np.nanmin(captured)) if np.isfinite(captured).any() else None
            check.captured_low = int(np.sum(captured < CAPTURED_THRESHOLD))
    if "n_structures" not in attrs:
        return "the shard was not closed (no n_structures attribute)"
    if int(attrs["n_structures"]) != n:
        return f"n_structures attribute is {attrs['n_structures']}, but there are {n} grids"
    n_rej = int(f[REJECTED].shape[0]) if REJECTED in f else 0
    check.n_rejected = n_rej
    if int(attrs.get("n_rejected", n_rej)) != n_rej:
        return f"n_rejected attribute is {attrs['n_rejected']}, but {n_rej} are stored"
    n_parents = n
    if "tile" in attrs and "properties/parent_id" in f:  # a tile run: records per item
        n_parents = len(np.unique(f["properties/parent_id"][()]))
    if "n_items" in attrs and int(attrs["n_items"]) != n_parents + n_rej:
        return (
            f"holds {n_parents} structures + {n_rej} rejections, but n_items is {attrs['n_items']}"
        )
    for key, want in expect.items():
        got = attrs.get(key)
        if got != want:
            return f"{key} is {got!r}, expected {want!r}"
    if deep and not structures:
        g = f["grids"]
        for i in range(n):
            try:
                values = g[i]
            except OSError as exc:
                return f"grid {i} cannot be read ({exc})"
            if not np.all(np.isfinite(values)):
                return f"grid {i} holds non-finite values"
    return ""
