"""``all.h5``: one HDF5 file of virtual datasets spanning every shard of a run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from .checksums import shard_digest
from .files import atomic_file
from .layout import CAPTURED, LATTICE, REJECTED, STR_DTYPE, check_format, n_structures
from .verify import VIRTUAL_DIGESTS, VIRTUAL_SOURCES

_PER_STRUCTURE = (
    *("grids", "origin", "axes", LATTICE, "periodic", "name", "source", "record", CAPTURED),
)
_PER_ATOM = ("atomic_numbers", "positions", "weights")


def write_vds(path: str | os.PathLike[str], shards: Sequence[str | os.PathLike[str]]) -> Path:
    """One HDF5 file whose datasets are virtual views spanning ``shards`` in order.

    It has the layout of a shard (so :class:`Shard` reads it): per-structure and per-atom
    datasets are virtual; ``atom_offset`` and ``rejected`` are real (offsets must be
    global). Source files are referred to by name relative to ``path``'s directory, so
    the directory can be moved as a whole. A digest of each source
    (:func:`~pgrid_cli.store.checksums.shard_digest`) is kept with its name, so that
    :func:`~pgrid_cli.store.verify.verify_shard` finds a source that is missing or has
    changed (HDF5 itself reads a missing source as zeros). Written atomically.
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
                    "n": n_structures(h),
                    "m": int(h["atomic_numbers"].shape[0]),
                    "shapes": {d: h[d].shape for d in (*_PER_STRUCTURE, *_PER_ATOM) if d in h},
                    "dtypes": {d: h[d].dtype for d in (*_PER_STRUCTURE, *_PER_ATOM) if d in h},
                    "offsets": h["atom_offset"][:],
                    "rejected": h[REJECTED][:] if REJECTED in h else np.array([], dtype=object),
                    "attrs": dict(h.attrs),
                    "digest": shard_digest(h),
                }
            )
    n_total = sum(i["n"] for i in infos)
    m_total = sum(i["m"] for i in infos)
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as out:
        for k, v in infos[0]["attrs"].items():
            out.attrs[k] = v
        for k in ("first_item", "n_items"):
            if k in out.attrs:
                del out.attrs[k]
        out.attrs["n_structures"] = n_total
        out.attrs[VIRTUAL_SOURCES] = np.array([f.name for f in files], dtype=STR_DTYPE)
        out.attrs[VIRTUAL_DIGESTS] = np.array([i["digest"] for i in infos], dtype=np.uint32)
        key = "max_rounding_error"  # structures shards have none
        bounds = [float(i["attrs"][key]) for i in infos if key in i["attrs"]]
        if bounds:
            out.attrs["max_rounding_error"] = max(bounds)  # the largest of the sources'
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
        out.create_dataset(REJECTED, data=rejected, dtype=STR_DTYPE)
        out.attrs["n_rejected"] = len(rejected)
    return path
