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
from .properties import ATOM_PROPERTIES, ID, PROPERTIES, atom_property_names, property_names
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
    per_structure, per_atom = list(_PER_STRUCTURE), list(_PER_ATOM)
    for f in files:
        with h5py.File(f, "r") as h:
            check_format(h, f)
            props = [f"{PROPERTIES}/{n}" for n in property_names(h)]
            atoms = [f"{ATOM_PROPERTIES}/{n}" for n in atom_property_names(h)]
            per_structure += [d for d in [ID, *props] if d not in per_structure]
            per_atom += [d for d in atoms if d not in per_atom]
            names = [*per_structure, *per_atom]
            infos.append(
                {
                    "n": n_structures(h),
                    "m": int(h["atomic_numbers"].shape[0]),
                    "shapes": {d: h[d].shape for d in names if d in h},
                    "dtypes": {d: h[d].dtype for d in names if d in h},
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
        bound = "max_rounding_error"  # structures shards have none
        bounds = [float(i["attrs"][bound]) for i in infos if bound in i["attrs"]]
        if bounds:
            out.attrs["max_rounding_error"] = max(bounds)  # the largest of the sources'
        for name, total, key in [(d, n_total, "n") for d in per_structure] + [
            (d, m_total, "m") for d in per_atom
        ]:
            # A property is in all.h5 when every shard has it, as the same kind of column
            # (not variable-length arrays, which virtual datasets cannot map).
            if not all(name in i["shapes"] for i in infos):
                continue
            kinds = {(i["dtypes"][name], i["shapes"][name][1:]) for i in infos}
            dtype = infos[0]["dtypes"][name]
            if len(kinds) > 1 or (
                h5py.check_vlen_dtype(dtype) is not None and h5py.check_string_dtype(dtype) is None
            ):
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
