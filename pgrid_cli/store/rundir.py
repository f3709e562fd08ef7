"""The output directory of a run: slice states, manifest, errors, index and virtual view.

An output directory holds ``shard-00000.h5`` … (:mod:`pgrid_cli.store.shard`),
``slices/slice-I-of-N.json`` (the state of each slice of a run: parameters, inputs,
progress), and once every slice is complete ``manifest.json`` and ``errors.jsonl``,
written by :func:`write_index` (``pgrid index``), which can also write ``all.h5``:
virtual datasets spanning every shard (:mod:`pgrid_cli.store.vds`). :func:`describe` is
what ``pgrid info`` shows.

Several processes may share a directory (the slices of a split run), so it has locks
(:class:`~pgrid_cli.store.files.FileLock`): ``.pgrid-lock``, held briefly around the
steps that touch shared files (claiming a slice, writing the manifest and ``all.h5``),
and ``slices/slice-I-of-N.lock``, held by the process running that slice for as long as
it runs (:mod:`pgrid_cli.store.claim`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from ..core.errors import ParameterError
from .files import FileLock, atomic_file, atomic_write, lock_holder, stale_temps
from .properties import summarize as summarize_properties
from .properties import voxel_range
from .shard import FORMAT_VERSION, SHARD_GLOB, Shard, partial_index, shard_name
from .vds import write_vds
from .verify import CAPTURED_THRESHOLD, ShardCheck, verify_shard

#: Files of an output directory.
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
SLICES_DIR = "slices"
#: ``slices/slicing.json``: how a run is divided (N, and the Slurm task id of slice 0 and
#: the step), recorded by its first sliced process (see :mod:`pgrid_cli.runs.slicing`).
SLICING = "slicing.json"
SLICING_FORMAT = "pgrid-slicing"
VDS_NAME = "all.h5"
MANIFEST_FORMAT = "pgrid-run"
SLICE_FORMAT = "pgrid-slice"
#: The lock around the steps that touch files every slice shares.
LOCK_NAME = ".pgrid-lock"
#: Files only :func:`write_index` writes (under the directory lock).
RUN_FILES = (MANIFEST, ERRORS, VDS_NAME)
#: Characters ``str.splitlines`` breaks at that JSON leaves unescaped.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (an exclusive temporary file, then a rename; the temporary
    is removed and the error is one line when writing fails)."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def json_line(data: Any) -> str:
    """``data`` as one line of JSON Lines: UTF-8 kept readable, but U+0085, U+2028 and
    U+2029 escaped, since line-based readers (``str.splitlines``) break lines there."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False).translate(_LINE_BREAKS)


def directory_lock(out_dir: str | os.PathLike[str]) -> FileLock:
    """The lock around the steps that touch shared files of ``out_dir`` (it must exist)."""
    return FileLock(Path(out_dir) / LOCK_NAME)


def slice_lock_path(out_dir: str | os.PathLike[str], index: int, count: int) -> Path:
    """The lock file held by the process running slice ``index`` of ``count``."""
    return Path(out_dir) / SLICES_DIR / f"slice-{index:05d}-of-{count:05d}.lock"


def running_slices(out_dir: str | os.PathLike[str]) -> dict[tuple[int, int], int]:
    """{(slice index, slice count): pid} of the slices running in ``out_dir`` now."""
    out: dict[tuple[int, int], int] = {}
    for p in sorted((Path(out_dir) / SLICES_DIR).glob("slice-*-of-*.lock")):
        pid = lock_holder(p)
        if pid is not None:
            i, _, n = p.stem.removeprefix("slice-").partition("-of-")
            out[(int(i), int(n))] = pid
    return out


def slice_state_path(out_dir: str | os.PathLike[str], index: int, count: int) -> Path:
    """Where slice ``index`` of ``count`` keeps its state."""
    return Path(out_dir) / SLICES_DIR / f"slice-{index:05d}-of-{count:05d}.json"


def slicing_path(out_dir: str | os.PathLike[str]) -> Path:
    """Where a run records how it is divided into slices."""
    return Path(out_dir) / SLICES_DIR / SLICING


def read_slicing(out_dir: str | os.PathLike[str], run: str | None = None) -> dict[str, Any] | None:
    """The slicing record of ``out_dir`` (of run ``run`` when given), or None."""
    try:
        rec = json.loads(slicing_path(out_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("format") != SLICING_FORMAT:
        return None
    if run is not None and rec.get("run_id") != run:
        return None
    return rec


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
    missing otherwise. Safe to run again (the files are replaced atomically). Holds the
    directory lock while it works, and removes the temporaries of these files that a
    killed process left.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise ValueError(f"{out}: no such output directory")
    _complete_slices(out, read_slice_states(out))  # not a finished run: say so, touch nothing
    with directory_lock(out):
        return write_index_locked(out, vds=vds)


def write_index_locked(out: Path, *, vds: bool = False) -> dict[str, Any]:
    """:func:`write_index` for a caller that holds the directory lock."""
    for p in stale_temps(out, set(RUN_FILES)):
        p.unlink(missing_ok=True)
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
    with atomic_file(out / ERRORS) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for check in checks:
            shard = Shard(check.path)
            for r in shard.rejections():
                fh.write(json_line(r.to_json()) + "\n")
                by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
            shard.close()

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


# ---------------------------------------------------------------------- description
def describe(
    path: str | os.PathLike[str], *, deep: bool = False, checksums: bool = True
) -> dict[str, Any]:
    """What ``pgrid info`` shows: a shard file or an output directory, validated.

    Returns a JSON-friendly dict: ``kind`` (``shard`` | ``directory``), counts, parameters
    (sigma, channels, grid shape, storage, the largest error bound of what is stored),
    ``bytes`` on disk, the smallest ``captured`` fraction and how many structures are
    below :data:`~pgrid_cli.store.verify.CAPTURED_THRESHOLD`, one entry per shard with
    its check, ``notes`` (e.g. shards without checksums) and ``problems`` (empty when
    everything is valid and complete). ``checksums`` (default) checks every shard's
    checksums, ``deep`` also decompresses every grid (see :func:`verify_shard`); a
    virtual ``all.h5`` is checked against its source shards.
    """
    p = Path(path)
    if p.is_file():
        check = verify_shard(p, deep=deep, checksums=checksums)
        return {
            "kind": "shard",
            "path": str(p),
            "bytes": p.stat().st_size,
            "n_structures": check.n_structures,
            "n_rejected": check.n_rejected,
            "n_atoms": check.n_atoms,
            "parameters": _shard_parameters({**check.attrs, "dtype": check.dtype}),
            "attributes": check.attrs,
            **_quality([check]),
            **summarize_properties([p]),
            **voxel_range([p]),
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
    checks = []
    first_attrs: dict[str, Any] = {}
    for f in files:
        check = verify_shard(f, expect=expected.get(f.name), deep=deep, checksums=checksums)
        checks.append(check)
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
                "checksums": check.checksums,
            }
        )
        if len(shards) == 1:
            first_attrs = {**check.attrs, "dtype": check.dtype}
    present = {f.name for f in files}
    missing = [name for name in expected if name not in present]
    if missing:
        problems.append(f"{len(missing)} shard(s) of the manifest are missing, e.g. {missing[0]}")
    vds = manifest.get("vds") if manifest else None
    if vds or (p / VDS_NAME).exists():
        check = verify_shard(p / (vds or VDS_NAME))
        if not check.ok:
            problems.append(f"{vds or VDS_NAME}: {check.problem}")
    partial = sorted(f.name for f in p.glob("shard-*.partial") if partial_index(f) is not None)
    running = running_slices(p)
    if running:
        (i, n), pid = sorted(running.items())[0]
        problems.append(
            f"a pgrid grid run is writing here (slice {i} of {n}, process {pid}); "
            f"its shards are not all there yet"
        )
    elif partial:
        problems.append(
            f"{len(partial)} unfinished shard(s) ({partial[0]} …) of an interrupted run; "
            f"continue it with pgrid grid --resume"
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
    bounds = [
        float(c.attrs["max_rounding_error"]) for c in checks if "max_rounding_error" in c.attrs
    ]
    if bounds:
        params["max_rounding_error"] = max(bounds)
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
        "vds": vds,
        "slices": [
            {"slice": [s["slice_index"], s["num_slices"]], "complete": bool(s.get("complete"))}
            for s in states
        ],
        "shards": shards,
        **_quality(checks),
        **summarize_properties(files),
        **voxel_range(files),
        "problems": problems,
    }


def _quality(checks: list[ShardCheck]) -> dict[str, Any]:
    """The checksum status and the ``captured`` figures of some shards."""
    status = {c.checksums for c in checks if c.ok}
    notes = []
    absent = sum(c.checksums == "absent" for c in checks)
    if absent:
        notes.append(
            f"no checksums in {absent} shard(s) (written by an older pgrid): their contents "
            f"could not be checked"
        )
    lows = [c.captured_min for c in checks if c.captured_min is not None]
    return {
        "checksums": status.pop() if len(status) == 1 else ("mixed" if status else None),
        "captured_min": min(lows) if lows else None,
        "captured_below": sum(c.captured_low for c in checks),
        "captured_threshold": CAPTURED_THRESHOLD,
        "notes": notes,
    }


def _shard_parameters(attrs: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "content",
        "sigma",
        "channels",
        "grid_shape",
        "box",
        "padding",
        "dtype",
        "compression",
        "compression_level",
        "hdf5_filters",
        "reading",
        "rounding_step",
        "max_rounding_error",
        "disorder",
    )
    return {k: attrs[k] for k in keys if k in attrs}


# ---------------------------------------------------------------------- a run's identity
def canonical_path(path: str | os.PathLike[str]) -> Path:
    """The one spelling of an input file that a run stores and is identified by: its
    absolute path with symbolic links resolved (so ``in/a.sdf``, ``./in/a.sdf`` and
    ``/data/in/a.sdf`` are the same input)."""
    return Path(os.path.realpath(path))


def input_meta(path: Path, fmt: str) -> dict[str, Any]:
    """What a run records of an input file: its canonical path, format, size, mtime."""
    try:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime = None, None
    return {"path": str(canonical_path(path)), "format": fmt, "bytes": size, "mtime_ns": mtime}


def run_id(params: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    """Fingerprint of a run: its parameters and its inputs (canonical path, size, mtime)."""
    key = {
        "parameters": params,
        "inputs": [
            [str(canonical_path(m["path"])), m["format"], m["bytes"], m["mtime_ns"]] for m in inputs
        ],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
