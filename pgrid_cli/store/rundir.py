"""The output directory of a run: slice states, manifest, errors, index and virtual view.

An output directory holds ``shard-00000.h5`` … (:mod:`pgrid_cli.store.shard`),
``slices/slice-I-of-N.json`` (the state of each slice of a run: parameters, inputs,
progress), and once every slice is complete ``manifest.json`` and ``errors.jsonl``,
written by :func:`write_index` (``pgrid index``), which can also write ``all.h5``:
virtual datasets spanning every shard. :func:`describe` is what ``pgrid info`` shows.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.errors import ParameterError
from .shard import (
    FORMAT_VERSION,
    PARTIAL_SUFFIX,
    REJECTED,
    SHARD_GLOB,
    STR_DTYPE,
    Shard,
    check_format,
    shard_index,
    shard_name,
)
from .verify import ShardCheck, verify_shard

#: Files of an output directory.
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
SLICES_DIR = "slices"
VDS_NAME = "all.h5"
MANIFEST_FORMAT = "pgrid-run"
SLICE_FORMAT = "pgrid-slice"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)



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
        raise ParameterError(
            f"{out}: holds slices of {len(run_ids)} different runs (parameters or inputs "
            f"differ); rerun the odd ones with {{overwrite}}"
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
    raise ParameterError(
        f"{out}: slice(s) {', '.join(waiting)} of {best_n} have not finished; run them "
        f"({{shard_index}} I {{num_shards}} {best_n} {{resume}}), then index again"
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
        out.attrs["virtual_sources"] = np.array([f.name for f in files], dtype=STR_DTYPE)
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
            f"run; continue it with pgrid grid --resume"
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


# ---------------------------------------------------------------------- a run's identity
def input_meta(path: Path, fmt: str) -> dict[str, Any]:
    try:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime = None, None
    return {"path": str(path), "format": fmt, "bytes": size, "mtime_ns": mtime}


def run_id(params: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    """Fingerprint of a run: its parameters and its inputs (absolute path, size, mtime)."""
    key = {
        "parameters": params,
        "inputs": [
            [os.path.abspath(m["path"]), m["format"], m["bytes"], m["mtime_ns"]] for m in inputs
        ],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def prepare_output(
    out: Path,
    run_id: str,
    params: dict[str, Any],
    shard_size: int,
    index: int,
    count: int,
    resume: bool,
    overwrite: bool,
) -> dict[int, ShardCheck]:
    """Make ``out`` ready for slice ``index`` of ``count``; returns the shards to keep.

    ``resume`` keeps the valid shards of the same run (``run_id``) and removes the rest of
    this slice's; ``overwrite`` removes pgrid's files of this slice (of every slice when
    ``count`` is 1). Raises ParameterError when the directory holds another run or
    foreign files.
    """
    if resume and overwrite:
        raise ParameterError("{resume} and {overwrite} cannot be combined")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(out.iterdir())
    shards: dict[int, Path] = {}
    partials: dict[int, Path] = {}
    foreign: list[Path] = []
    for p in entries:
        k = shard_index(p)
        if k is not None:
            shards[k] = p
        elif (
            p.name.endswith(PARTIAL_SUFFIX)
            and shard_index(p.name[: -len(PARTIAL_SUFFIX)]) is not None
        ):
            partials[int(shard_index(p.name[: -len(PARTIAL_SUFFIX)]) or 0)] = p
        elif p.name not in (MANIFEST, ERRORS, SLICES_DIR, VDS_NAME) and not p.name.endswith(".tmp"):
            foreign.append(p)
    states = read_slice_states(out)
    other_states = [s for s in states if s.get("run_id") != run_id]
    # Other slices' shards left by a different run (only a sliced run can meet them).
    stale_other = {
        k: p
        for k, p in shards.items()
        if count > 1 and k % count != index and shard_run_id(p) != run_id
    }
    mine = {k: p for k, p in shards.items() if k % count == index}
    my_partials = [p for k, p in partials.items() if k % count == index]
    state_path = slice_state_path(out, index, count)
    run_files = [out / MANIFEST, out / ERRORS, out / VDS_NAME]

    if overwrite:
        doomed = [*mine.values(), *my_partials, *run_files, state_path]
        doomed += [Path(s["_path"]) for s in other_states] + list(stale_other.values())
        if count == 1:
            doomed += [*shards.values(), *partials.values()]
            doomed += [Path(s["_path"]) for s in states]
        for p in doomed:
            p.unlink(missing_ok=True)
        return {}
    if other_states or stale_other:
        raise ParameterError(different_run(out, params, other_states))
    if resume:
        for p in my_partials:
            p.unlink(missing_ok=True)
        kept: dict[int, ShardCheck] = {}
        for k, p in sorted(mine.items()):
            check = verify_shard(p, expect={"run_id": run_id, "first_item": k * shard_size})
            if check.ok:
                kept[k] = check
            else:
                p.unlink()
        return kept
    if count == 1:
        if entries:
            raise ParameterError(
                f"output directory {out} is not empty ({len(entries)} entries); use "
                f"{{resume}} to continue the run there or {{overwrite}} to replace it"
            )
        return {}
    if foreign:
        raise ValueError(
            f"output directory {out} holds files pgrid did not write (e.g. {foreign[0].name}); "
            f"use an empty directory"
        )
    if mine or my_partials or state_path.exists():
        raise ParameterError(
            f"slice {index} of {count} has already run in {out}; use {{resume}} to continue "
            f"it or {{overwrite}} to redo it"
        )
    return {}


def shard_run_id(path: Path) -> str | None:
    """The ``run_id`` attribute of a shard file (None if unreadable or absent)."""
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("run_id")
    except OSError:
        return None
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def different_run(out: Path, params: dict[str, Any], states: list[dict[str, Any]]) -> str:
    what = "the input files differ (paths, sizes or modification times)"
    if states:
        old = states[0].get("parameters", {})
        diffs = [
            f"{k} {old.get(k)!r} → {params.get(k)!r}"
            for k in sorted(set(old) | set(params))
            if old.get(k) != params.get(k)
        ]
        if diffs:
            what = "parameters differ: " + ", ".join(diffs[:4])
    return (
        f"output directory {out} holds a different run ({what}); use {{overwrite}} to "
        f"replace it or choose another directory"
    )
