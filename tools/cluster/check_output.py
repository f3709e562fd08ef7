"""Check a `pgrid grid` output directory against a single-process reference run.

    python tools/cluster/check_output.py OUT REF INPUT_DIR [--label NAME]

Run after `pgrid index OUT --vds` and `pgrid index REF --vds`. Prints one PASS/FAIL line
per check and exits 1 when any failed:

* records: every record of every file in INPUT_DIR is in exactly one shard (``source``,
  ``record``) or in errors.jsonl, and nothing else is; the manifest's counts agree;
* shards: OUT has the same shard files as REF, with equal datasets (names, dtypes,
  shapes, values, storage filters and chunks, dataset attributes) and equal file
  attributes except those that legitimately differ between runs (IGNORED_ATTRS);
* errors.jsonl is identical; all.h5 (the VDS) reads the same data;
* manifest.json agrees except for what depends on how the run was split (IGNORED_MANIFEST).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# Shard/VDS attributes that differ between a Slurm run and the reference by design: the
# command line that wrote the shard (`pgrid grid … --shard-index/--resume …`). Everything
# else — run_id, parameters, first_item, n_items, counts, codec, versions — must match.
IGNORED_ATTRS = {"command"}
# Manifest keys that depend on how the run was split or indexed: the command lines, the
# number of slices, and each shard's size on disk (its `command` attribute differs).
IGNORED_MANIFEST = {"commands", "num_slices"}
IGNORED_SHARD_FIELDS = {"bytes"}

failures = 0


def report(ok: bool, what: str, detail: str = "") -> None:
    global failures
    failures += not ok
    tail = f" — {detail}" if detail and not ok else ""
    print(f"{'PASS' if ok else 'FAIL'} {LABEL}: {what}{tail}")


def count_records(path: Path) -> int:
    """Input records of one file (SDF: `$$$$` lines; XYZ: frames), independently of pgrid."""
    lines = path.read_text().splitlines()
    if path.suffix in (".sdf", ".mol"):
        return sum(1 for line in lines if line.strip() == "$$$$")
    if path.suffix in (".xyz", ".extxyz"):
        n, i = 0, 0
        while i < len(lines):
            if not lines[i].strip():
                i += 1
                continue
            i += int(lines[i].split()[0]) + 2
            n += 1
        return n
    raise ValueError(f"cannot count the records of {path}")


def attrs_of(obj: Any) -> dict[str, Any]:
    return {k: obj.attrs[k] for k in obj.attrs if k not in IGNORED_ATTRS}


def same_value(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj: Any) -> None:  # (returning a value would stop visititems)
        if isinstance(obj, h5py.Dataset):
            out[name] = obj

    f.visititems(visit)
    return out


def compare_h5(a_path: Path, b_path: Path, storage: bool = True) -> list[str]:
    """Differences between two HDF5 files (empty when equal)."""
    diffs: list[str] = []
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        aa, ba = attrs_of(a), attrs_of(b)
        for k in sorted(set(aa) | set(ba)):
            if k not in aa or k not in ba or not same_value(aa[k], ba[k]):
                diffs.append(f"attribute {k}: {aa.get(k)!r} != {ba.get(k)!r}")
        da, db = datasets(a), datasets(b)
        if set(da) != set(db):
            diffs.append(f"datasets {sorted(da)} != {sorted(db)}")
        for name in sorted(set(da) & set(db)):
            x, y = da[name], db[name]
            if x.shape != y.shape or x.dtype != y.dtype:
                diffs.append(f"{name}: {x.shape} {x.dtype} != {y.shape} {y.dtype}")
                continue
            if storage and (x.compression, x.compression_opts, x.shuffle, x.chunks) != (
                y.compression,
                y.compression_opts,
                y.shuffle,
                y.chunks,
            ):
                diffs.append(f"{name}: storage differs")
            if not np.array_equal(x[()], y[()]):
                diffs.append(f"{name}: values differ")
            if attrs_of(x).keys() != attrs_of(y).keys() or not all(
                same_value(attrs_of(x)[k], attrs_of(y)[k]) for k in attrs_of(x)
            ):
                diffs.append(f"{name}: dataset attributes differ")
    return diffs


def strip_manifest(m: dict[str, Any]) -> dict[str, Any]:
    m = {k: v for k, v in m.items() if k not in IGNORED_MANIFEST}
    m["shards"] = [
        {k: v for k, v in s.items() if k not in IGNORED_SHARD_FIELDS} for s in m.get("shards", [])
    ]
    return m


def main() -> int:
    global LABEL
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("ref", type=Path)
    ap.add_argument("input", type=Path)
    ap.add_argument("--label", default="check")
    args = ap.parse_args()
    LABEL = args.label
    out, ref = args.out, args.ref

    # --- every input record is accounted for, once ---------------------------------------
    expected = {
        (os.path.realpath(p), i)
        for p in sorted(args.input.rglob("*"))
        if p.is_file()
        for i in range(count_records(p))
    }
    got: list[tuple[str, int]] = []
    shard_files = sorted(out.glob("shard-*.h5"))
    for p in shard_files:
        with h5py.File(p, "r") as f:
            got += [
                (os.path.realpath(s.decode() if isinstance(s, bytes) else s), int(r))
                for s, r in zip(f["source"][()], f["record"][()], strict=True)
            ]
    errors_path = out / "errors.jsonl"
    errors = (
        [json.loads(line) for line in errors_path.read_text().splitlines() if line.strip()]
        if errors_path.exists()
        else []
    )
    got += [(os.path.realpath(e["source"]), int(e["record"])) for e in errors]
    dupes = len(got) - len(set(got))
    missing = expected - set(got)
    extra = set(got) - expected
    report(
        not dupes and not missing and not extra,
        f"records: {len(expected)} input records, {len(got) - len(errors)} in shards, "
        f"{len(errors)} in errors.jsonl",
        f"{len(missing)} missing (e.g. {sorted(missing)[:2]}), {len(extra)} unexpected, "
        f"{dupes} duplicated",
    )
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    counts = manifest.get("counts", {})
    report(
        counts.get("read") == len(expected)
        and counts.get("rejected") == len(errors)
        and counts.get("written") == len(expected) - len(errors),
        "manifest counts (read = written + rejected = input records)",
        f"manifest counts {counts or 'missing'}; expected read {len(expected)}, "
        f"rejected {len(errors)}",
    )

    # --- equal to the single-process reference --------------------------------------------
    ref_files = sorted(ref.glob("shard-*.h5"))
    names, ref_names = [p.name for p in shard_files], [p.name for p in ref_files]
    report(
        names == ref_names,
        f"shard files: {len(names)} (reference: {len(ref_names)})",
        f"only in output: {sorted(set(names) - set(ref_names))[:5]}, "
        f"only in reference: {sorted(set(ref_names) - set(names))[:5]}",
    )
    bad = {}
    for name in sorted(set(names) & set(ref_names)):
        diffs = compare_h5(out / name, ref / name)
        if diffs:
            bad[name] = diffs
    first = next(iter(bad.items()), None)
    report(
        not bad and names == ref_names,
        f"shards equal the reference (datasets, storage, attributes but {sorted(IGNORED_ATTRS)})",
        f"{len(bad)} differ, e.g. {first[0]}: {'; '.join(first[1][:3])}" if first else "",
    )
    ref_errors = (ref / "errors.jsonl").read_text() if (ref / "errors.jsonl").exists() else None
    report(
        errors_path.exists() and errors_path.read_text() == ref_errors,
        "errors.jsonl equals the reference",
        "missing" if not errors_path.exists() else "contents differ",
    )
    if (out / "all.h5").exists() and (ref / "all.h5").exists():
        diffs = compare_h5(out / "all.h5", ref / "all.h5", storage=False)
        report(not diffs, "all.h5 (VDS) reads the same as the reference's", "; ".join(diffs[:3]))
    else:
        report(False, "all.h5 (VDS) reads the same as the reference's", "all.h5 missing")
    if manifest:
        ref_manifest = json.loads((ref / "manifest.json").read_text())
        a, b = strip_manifest(manifest), strip_manifest(ref_manifest)
        diff_keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        report(
            not diff_keys,
            f"manifest.json equals the reference's "
            f"(but {sorted(IGNORED_MANIFEST)} and shard bytes)",
            f"differs in {diff_keys}",
        )
    else:
        report(False, "manifest.json equals the reference's", "no manifest.json")
    return 1 if failures else 0


LABEL = "check"
if __name__ == "__main__":
    sys.exit(main())
