"""pgrid against ParticleGrid and libmolgrid, measured side by side in one run.

    python benchmarks/bench_peers.py [--particlegrid-python PY] [--molgrid-python PY]
                                     [--repeat 5] [--json out.json]

The three libraries live in three environments, so this script is an orchestrator: it runs
``benchmarks/peers/runner.py`` under each interpreter (pgrid under this one, or
``--pgrid-python``), once more for pgrid with ``PGRID_ISA=avx2`` forced, and talks to the
runners over pipes. A peer whose interpreter is not given, or cannot import its library, is
reported "not available" and skipped, so the script runs from a clean clone with pgrid
alone. Every runner gets OMP_NUM_THREADS=1 (and the BLAS equivalents): single thread for
everyone, and pgrid's ``threads=1``; pgrid's per-molecule path is also timed with its
default ``threads`` (every core), the call users make.

Same configuration everywhere: the paper's 100 MOSES molecules (benchmarks/data/
moses100.xyz), σ = 0.5 Å, a cubic box = bounding box ± 2 Å centred on it (pgrid's
``Box.fit(pos, n, 2.0)``, computed inside every timed call), an n³ grid, 1 channel (every
atom in channel 0) or 8 element channels (C N O S F Cl Br H). Paths:

* ``per molecule``: one call per molecule returning a new array
  (pgrid ``grid(pos, Box.fit(pos, n, 2.0), 0.5, channels=..., n_channels=C)``, and
  ``GridRecipe(grid_size=n, channels=...).grid(pos, numbers)``, the recommended call, which
  places the same box natively; ParticleGrid ``molecule_grid``; libmolgrid
  ``GridMaker.forward`` into a new array);
* ``batch``: all 100 molecules at once (pgrid ``grid_batch(..., out=buf)`` into a
  preallocated array; ParticleGrid ``list_grid``, its batch call, which returns a new
  array; libmolgrid: a loop of ``forward`` into views of one preallocated buffer, since its
  batched forward takes one box for all);
* ``fixed cost``: an ``--fixed-n``³ (8³) grid of the smallest molecule, 1 channel, one call
  returning a new array: µs per call.

Before anything is timed, each runner grids every molecule once (the warm-up) and checks
the grids: finite, right shape, sum > 0 (pgrid: each grid sums to its number of atoms within
1e-3); molecule 0's grids are compared across libraries. Then ``--repeat`` repeats are
interleaved (pgrid, pgrid avx2, ParticleGrid, libmolgrid, pgrid, ...), each over all the
molecules (as many passes as make ``--min-time`` seconds); the tables give medians.
The load average is recorded at the start, at the end and per case.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _paths import MOSES100, ROOT

RUNNER = ROOT / "benchmarks" / "peers" / "runner.py"
#: The paper's channel order (moses100.xyz's channel_map).
ELEMENTS = ("C", "N", "O", "S", "F", "Cl", "Br", "H")
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
PEER_LABEL = {"particlegrid": "ParticleGrid", "molgrid": "libmolgrid"}


# ------------------------------------------------------------------------ inputs
def read_molecules(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions (M, 3) Å, offsets (B+1,), elements (M,) in 0..7) from an XYZ file."""
    from ase.io import iread

    positions, offsets, elements = [], [0], []
    for atoms in iread(str(path), index=":"):
        order = list(ELEMENTS)
        cmap = atoms.info.get("channel_map")
        if cmap:  # "0:C,1:N,..."
            pairs = dict(item.split(":")[::-1] for item in str(cmap).split(","))
            order = [k for k, _ in sorted(pairs.items(), key=lambda kv: int(kv[1]))]
        index = {e: i for i, e in enumerate(order)}
        try:
            elements.append(np.array([index[s] for s in atoms.get_chemical_symbols()], np.int32))
        except KeyError as exc:
            raise SystemExit(f"{path}: element {exc} is not one of {order}") from None
        positions.append(atoms.get_positions())
        offsets.append(offsets[-1] + len(atoms))
    return np.concatenate(positions), np.array(offsets, np.int64), np.concatenate(elements)


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or "?", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model in ("?", "", platform.machine()):
            model = value.strip()
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {
        "model": model,
        "cores": os.cpu_count(),
        "avx512f": "avx512f" in flags,
        "avx2": "avx2" in flags,
        "fma": "fma" in flags,
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(map(str, load_average()))


# ------------------------------------------------------------------------ runners
class RunnerError(RuntimeError):
    pass


@dataclass
class Runner:
    """One runner process: a library under its interpreter (and environment)."""

    key: str  # pgrid, pgrid-avx2, particlegrid, molgrid
    lib: str
    python: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def start(self) -> bool:
        env = {**os.environ, **SINGLE_THREAD_ENV, **self.env}
        if "PGRID_ISA" not in self.env:
            env.pop("PGRID_ISA", None)
        try:
            self.proc = subprocess.Popen(
                [self.python, str(RUNNER), "--lib", self.lib],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=tempfile.gettempdir(),  # never import a library from this checkout by accident
            )
        except OSError as exc:
            self.error = f"cannot run {self.python}: {exc}"
            return False
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            self.error = err[-1] if err else f"{self.python} exited"
            self.stop()
            return False
        hello = json.loads(line)
        if not hello.get("ok"):
            self.error = hello.get("error", "?")
            self.stop()
            return False
        self.info = hello["info"]
        return True

    def ask(self, cmd: str, **kw: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RunnerError(f"{self.key}: runner died during {cmd}\n{err[-2000:]}")
        ans = json.loads(line)
        if not ans.get("ok"):
            raise RunnerError(
                f"{self.key}: {cmd} failed: {ans.get('error')}\n{ans.get('trace', '')}"
            )
        return ans

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None and self.proc.stdin:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@dataclass(frozen=True)
class Contestant:
    """One timed column: a runner, for pgrid a thread setting, and a variant of a path."""

    runner: str
    threads: int | None = None  # pgrid only: 1, or None = its default (every core)
    variant: str = ""  # batch: pgrid "prebuilt-boxes", ParticleGrid "loop"; pgrid "recipe"

    @property
    def label(self) -> str:
        if self.runner.startswith("pgrid"):
            name = f"{self.runner} threads={'default' if self.threads is None else self.threads}"
        else:
            name = PEER_LABEL[self.runner]
        return f"{name} ({self.variant})" if self.variant else name


# ------------------------------------------------------------------------ measuring
def measure_case(
    case: dict[str, Any],
    contestants: list[Contestant],
    runners: dict[str, Runner],
    args: argparse.Namespace,
    dump_dir: Path,
) -> dict[str, Any]:
    """Prepare + verify every contestant, then interleave ``repeat`` timed repeats."""
    result: dict[str, Any] = {"case": case, "load_before": load_average(), "contestants": {}}
    prepared = []
    for i, c in enumerate(contestants):
        r = runners[c.runner]
        spec = dict(case, variant=c.variant)
        if c.runner.startswith("pgrid"):
            spec["threads"] = c.threads
        dump = dump_dir / f"{case['name']}-{i}.npy"
        ans = r.ask("prepare", id=c.label, case=spec, min_time=args.min_time, dump=str(dump))
        check = ans["check"]
        entry = {"label": c.label, "check": check, "passes": ans["passes"], "dump": str(dump)}
        entry["repeats"] = []
        result["contestants"][c.label] = entry
        if not check["did_work"]:
            raise SystemExit(f"{c.label}, {case['name']}: no grid was made: {check}")
        if not check["correct"]:
            if c.runner.startswith("pgrid"):
                raise SystemExit(f"{c.label}, {case['name']}: grids failed the check: {check}")
            print(f"warning: {c.label}, {case['name']}: wrong grids: {check}", file=sys.stderr)
        prepared.append((c, r, entry))
    for rep in range(args.repeat):
        for c, r, entry in prepared:
            last = rep == args.repeat - 1 and case["path"] == "batch"
            ans = r.ask("time", id=c.label, recheck=last)
            per_call = ans["seconds"] / ans["calls"]
            entry["repeats"].append(
                {
                    "seconds": ans["seconds"],
                    "cpu_seconds": ans["cpu_seconds"],
                    "calls": ans["calls"],
                }
            )
            entry.setdefault("per_call_s", []).append(per_call)
            if "recheck_ok" in ans:
                entry["recheck_ok"] = ans["recheck_ok"]
                entry["recheck_total"] = ans["recheck_total"]
    for key in {c.runner for c in contestants}:
        runners[key].ask("release")
    for _, _, entry in prepared:
        med = statistics.median(entry["per_call_s"])
        entry["median_us_per_call"] = med * 1e6
        entry["molecules_per_s"] = 1.0 / med
        cpu = statistics.median(r["cpu_seconds"] / r["calls"] for r in entry["repeats"])
        entry["median_cpu_us_per_call"] = cpu * 1e6
        entry["wall_over_cpu"] = med / cpu if cpu > 0 else None
        entry["min_max_us_per_call"] = [
            min(entry["per_call_s"]) * 1e6,
            max(entry["per_call_s"]) * 1e6,
        ]
    result["load_after"] = load_average()
    return result


def agreement(case_result: dict[str, Any], reference_label: str) -> dict[str, Any]:
    """Molecule 0's grid of each library against pgrid's (same axes, same box)."""
    ents = case_result["contestants"]
    if reference_label not in ents:
        return {}
    ref = np.load(ents[reference_label]["dump"]).astype(np.float64)
    out = {}
    for label, e in ents.items():
        if label == reference_label:
            continue
        g = np.load(e["dump"]).astype(np.float64)
        if g.shape != ref.shape:
            out[label] = {"shape": list(g.shape)}
            continue
        corr = float(np.corrcoef(g.ravel(), ref.ravel())[0, 1])
        scale = float(g.sum() / ref.sum())
        out[label] = {
            "max_abs_diff": float(np.abs(g - ref).max()),
            "max_abs_diff_rel_to_max": float(np.abs(g - ref).max() / ref.max()),
            "sum_ratio": scale,
            "correlation": corr,
        }
    return out


# ------------------------------------------------------------------------ report
def rate(case_result: dict[str, Any], label: str, cpu: bool = False) -> float | None:
    """Molecules (calls) per second, from the median wall-clock or CPU time per call."""
    e = case_result["contestants"].get(label)
    if e is None:
        return None
    return 1e6 / e["median_cpu_us_per_call"] if cpu else e["molecules_per_s"]


def wrong(case_result: dict[str, Any], label: str) -> bool:
    """Did this contestant's grids fail the check (before or after timing)?"""
    e = case_result["contestants"].get(label)
    return e is not None and (not e["check"]["correct"] or not e.get("recheck_ok", True))


def cell(case_result: dict[str, Any], label: str) -> str:
    """``wall (CPU)`` molecules/s."""
    w, c = rate(case_result, label), rate(case_result, label, cpu=True)
    if w is None or c is None:
        return "—"
    return f"{w:,.0f} ({c:,.0f})" + (" †" if wrong(case_result, label) else "")


def ratio_cell(case_result: dict[str, Any], mine: str, peer: str) -> str:
    parts = []
    for cpu in (False, True):
        a, b = rate(case_result, mine, cpu), rate(case_result, peer, cpu)
        if a is None or b is None:
            return "—"
        parts.append(a / b)
    return f"{parts[0]:.2f}× ({parts[1]:.2f}×)"


PATHS = (
    ("single", 1, "recipe", "per molecule, new array, 1 thread, `GridRecipe.grid`"),
    ("single", 1, "", "per molecule, new array, 1 thread"),
    ("single", None, "", "per molecule, new array, pgrid default threads"),
    ("batch", 1, "", "batch, 1 thread (boxes made in the timed call)"),
)


def report(results: dict[str, Any], peers: list[str], isas: list[str]) -> str:
    lines: list[str] = []
    cases = results["cases"]
    peer_labels = [PEER_LABEL[p] for p in peers]
    any_wrong = False
    for isa_key in isas:
        isa = results["runners"][isa_key]["info"].get("isa", "?")
        forced = " (PGRID_ISA=avx2 forced)" if isa_key == "pgrid-avx2" else " (its default ISA)"
        lines += [
            f"\n### Molecules/s, pgrid on {isa}{forced}",
            "",
            "Each cell: from the median wall-clock time (from the median CPU time of the same"
            " repeats).",
            "",
        ]
        head = "| path | grid | channels | pgrid |"
        sep = "|---|---|---:|---:|"
        for p in peer_labels:
            head += f" {p} |"
            sep += "---:|"
        for p in peer_labels:
            head += f" pgrid ÷ {p} |"
            sep += "---:|"
        lines += [head, sep]
        for path, threads, variant, title in PATHS:
            for cr in cases:
                case = cr["case"]
                if case["path"] != path:
                    continue
                label = Contestant(isa_key, threads, variant).label
                row = f"| {title} | {case['n']}³ | {case['channels']} | {cell(cr, label)} |"
                for p in peer_labels:
                    row += f" {cell(cr, p)} |"
                    any_wrong |= wrong(cr, p)
                for p in peer_labels:
                    row += f" {ratio_cell(cr, label, p)} |"
                lines.append(row)
    batch = [cr for cr in cases if cr["case"]["path"] == "batch"]
    if batch:
        lines += [
            "\n### Batch variants, molecules/s (wall-clock (CPU)), 1 thread",
            "",
            "The batch rows above make each molecule's box inside the timed call (as ParticleGrid"
            " does inside list_grid); here pgrid's boxes are made before timing.",
            "",
        ]
        labels = [Contestant(k, 1, "prebuilt-boxes").label for k in isas]
        titles = [f"{k} threads=1, boxes made before timing" for k in isas]
        if "particlegrid" in peers:
            labels.append(Contestant("particlegrid", None, "loop").label)
            titles.append("ParticleGrid, molecule_grid copied into a preallocated array")
        lines.append("| grid | channels | " + " | ".join(titles) + " |")
        lines.append("|---|---:|" + "---:|" * len(titles))
        for cr in batch:
            row = f"| {cr['case']['n']}³ | {cr['case']['channels']} |"
            row += "".join(f" {cell(cr, lab)} |" for lab in labels)
            lines.append(row)
    if any_wrong:
        lines.append(
            "\n† the grids this call returned failed the check (before or after timing): "
            "see the checks below. Timed as is."
        )
    fixed = [cr for cr in cases if cr["case"]["path"] == "fixed"]
    if fixed:
        cr = fixed[0]
        case = cr["case"]
        lines.append(
            f"\n### Fixed cost of one call: {case['n']}³, 1 channel, molecule "
            f"{case['molecule']} ({case['atoms']} atoms), a new array each call"
        )
        lines += [
            "",
            "| library | µs per call (median, wall) | min–max over repeats | µs CPU per call |",
            "|---|---:|---:|---:|",
        ]
        for label, e in cr["contestants"].items():
            lo, hi = e["min_max_us_per_call"]
            lines.append(
                f"| {label} | {e['median_us_per_call']:,.1f} | {lo:,.1f}–{hi:,.1f} | "
                f"{e['median_cpu_us_per_call']:,.1f} |"
            )
    lines += [
        "\n### Wall time ÷ CPU time of the timed repeats (medians)",
        "",
        "1.0: the runner had a core to itself; more: other processes took turns on its core"
        " (pgrid threads=default: CPU time of all its threads, so below 1 when both cores work).",
        "",
    ]
    labels = list(dict.fromkeys(lab for cr in cases for lab in cr["contestants"]))
    lines.append("| case | " + " | ".join(labels) + " |")
    lines.append("|---|" + "---:|" * len(labels))
    for cr in cases:
        vals = []
        for lab in labels:
            e = cr["contestants"].get(lab)
            w = None if e is None else e.get("wall_over_cpu")
            vals.append("" if w is None else f"{w:.2f}")
        lines.append(f"| {cr['case']['name']} | " + " | ".join(vals) + " |")
    lines += [
        "\n### Checks before timing, and molecule 0 against pgrid x1",
        "",
        "| case | library | correct | sum / atoms | max abs(sum − atoms) | non-zero voxels "
        "| vs pgrid: max abs diff | correlation | sum ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cr in cases:
        agree = cr.get("agreement", {})
        for label, e in cr["contestants"].items():
            ch = e["check"]
            a = agree.get(label, {})
            diff = f"{a['max_abs_diff']:.1e}" if "max_abs_diff" in a else ""
            corr = f"{a['correlation']:.4f}" if "correlation" in a else ""
            ratio = f"{a['sum_ratio']:.3f}" if "sum_ratio" in a else ""
            verdict = "yes" if ch["correct"] else "**no**"
            if not e.get("recheck_ok", True):
                verdict += f"; after timing **no** (sum {e['recheck_total']:.4g})"
            lines.append(
                f"| {cr['case']['name']} | {label} | {verdict} | {ch['sum_per_atom']:.4g} | "
                f"{ch['max_abs_sum_minus_atoms']:.1e} | {ch['nonzero_fraction']:.1%} | "
                f"{diff} | {corr} | {ratio} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--molecules", type=Path, default=MOSES100)
    ap.add_argument("--pgrid-python", default=sys.executable)
    ap.add_argument("--particlegrid-python", help="interpreter that imports GridGenerator")
    ap.add_argument("--molgrid-python", help="interpreter that imports molgrid")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per timed repeat")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--channels", type=int, nargs="+", default=[1, 8], choices=[1, 8])
    ap.add_argument("--fixed-n", type=int, default=8)
    ap.add_argument("--fixed-calls", type=int, default=1000, help="calls per fixed-cost pass")
    ap.add_argument("--no-avx2", action="store_true", help="skip the PGRID_ISA=avx2 rows")
    ap.add_argument("--profile-calls", type=int, default=1000, help="0: no cProfile section")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    started = datetime.datetime.now(datetime.timezone.utc)
    results: dict[str, Any] = {
        "schema": "pgrid-bench-peers",
        "version": 1,
        "started_utc": started.isoformat(timespec="seconds"),
        "cpu": cpu_info(),
        "uptime_start": uptime(),
        "load_start": load_average(),
        "molecules": str(args.molecules),
        "sigma": 0.5,
        "padding": 2.0,
        "repeat": args.repeat,
        "min_time": args.min_time,
        "runners": {},
        "cases": [],
    }
    positions, offsets, elements = read_molecules(args.molecules)
    n_atoms = np.diff(offsets)
    results["n_molecules"] = len(n_atoms)
    results["mean_atoms"] = float(n_atoms.mean())

    runners = {"pgrid": Runner("pgrid", "pgrid", args.pgrid_python)}
    runners["pgrid-avx2"] = Runner("pgrid-avx2", "pgrid", args.pgrid_python, {"PGRID_ISA": "avx2"})
    if args.particlegrid_python:
        runners["particlegrid"] = Runner("particlegrid", "particlegrid", args.particlegrid_python)
    if args.molgrid_python:
        runners["molgrid"] = Runner("molgrid", "molgrid", args.molgrid_python)

    out_lines = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        out_lines.append(text)

    cpu = results["cpu"]
    say("# pgrid against ParticleGrid and libmolgrid")
    say("")
    say(f"date: {results['started_utc']}")
    say(
        f"CPU: {cpu['model']}, {cpu['cores']} cores; avx512f: {'yes' if cpu['avx512f'] else 'no'}"
        f", avx2: {'yes' if cpu['avx2'] else 'no'}, fma: {'yes' if cpu['fma'] else 'no'}"
    )
    say(f"uptime at start: {results['uptime_start']}")
    say(
        f"molecules: {len(n_atoms)} from {args.molecules.name} ({n_atoms.mean():.1f} atoms on "
        f"average), sigma = 0.5 Å, cubic fit box (bounding box ± 2 Å), single-threaded "
        f"(OMP_NUM_THREADS=1, pgrid threads=1) unless marked; medians of {args.repeat} "
        f"interleaved repeats, each >= {args.min_time} s over all molecules"
    )
    say("")
    with tempfile.TemporaryDirectory(prefix="pgrid-peers-") as tmp:
        tmpdir = Path(tmp)
        npz = tmpdir / "molecules.npz"
        np.savez(npz, positions=positions, offsets=offsets, elements=elements)
        started_runners = []
        try:
            for key in list(runners):
                r = runners[key]
                ok = r.start()
                if ok and key == "pgrid-avx2":
                    isas = r.info.get("available_isas", [])
                    default = runners["pgrid"].info.get("isa")
                    if args.no_avx2 or "avx2" not in isas or default == "avx2":
                        r.stop()
                        ok, r.error = False, "skipped (--no-avx2, or avx2 is already the default)"
                if ok:
                    r.ask("load", path=str(npz))
                    started_runners.append(key)
                results["runners"][key] = {
                    "python": r.python,
                    "available": ok,
                    "info": r.info,
                    "error": r.error,
                }
                label = PEER_LABEL.get(key, key)
                if ok:
                    extra = {k: v for k, v in r.info.items() if k not in ("executable",)}
                    say(f"{label}: {r.python}: {json.dumps(extra)}")
                else:
                    say(f"{label}: not available ({r.error})")
            for peer in ("particlegrid", "molgrid"):
                if peer not in runners:
                    say(f"{PEER_LABEL[peer]}: not available (no --{peer}-python given)")
                    results["runners"][peer] = {"available": False, "error": "no interpreter given"}
            if "pgrid" not in started_runners:
                raise SystemExit(f"pgrid runner failed: {runners['pgrid'].error}")
            peers = [p for p in ("particlegrid", "molgrid") if p in started_runners]
            isas = [k for k in ("pgrid", "pgrid-avx2") if k in started_runners]

            cases = []
            for path in ("single", "batch"):
                for n in args.sizes:
                    for c in args.channels:
                        cases.append(
                            {"name": f"{path}-{n}-{c}", "path": path, "n": n, "channels": c}
                        )
            smallest = int(np.argmin(n_atoms))
            cases.append(
                {
                    "name": f"fixed-{args.fixed_n}",
                    "path": "fixed",
                    "n": args.fixed_n,
                    "channels": 1,
                    "molecule": smallest,
                    "atoms": int(n_atoms[smallest]),
                    "calls": args.fixed_calls,
                }
            )
            for case in cases:
                contestants = []
                for key in isas:
                    contestants.append(Contestant(key, 1))
                    if case["path"] == "batch":
                        contestants.append(Contestant(key, 1, "prebuilt-boxes"))
                    else:
                        contestants.append(Contestant(key, None))
                        contestants.append(Contestant(key, 1, "recipe"))
                for p in peers:
                    contestants.append(Contestant(p))
                    if p == "particlegrid" and case["path"] == "batch":
                        contestants.append(Contestant(p, None, "loop"))
                names = ", ".join(c.label for c in contestants)
                print(f"... {case['name']}: {names}", file=sys.stderr)
                cr = measure_case(case, contestants, runners, args, tmpdir)
                cr["agreement"] = agreement(cr, Contestant("pgrid", 1).label)
                for e in cr["contestants"].values():
                    e.pop("dump", None)
                results["cases"].append(cr)

            say(report(results, peers, isas))

            if args.profile_calls > 0:
                fixed = cases[-1]
                say(
                    f"\n### Where pgrid's per-call time goes ({fixed['n']}³, molecule "
                    f"{fixed['molecule']}, {runners['pgrid'].info.get('isa')}; "
                    f"{args.profile_calls} calls per run)"
                )
                prof = runners["pgrid"].ask(
                    "profile", case={**fixed, "threads": 1}, calls=args.profile_calls, top=15
                )
                results["profile"] = prof["text"]
                say("\n```\n" + prof["text"].rstrip() + "\n```")
        finally:
            for key in started_runners:
                runners[key].stop()

    results["uptime_end"] = uptime()
    results["load_end"] = load_average()
    results["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    say(f"\nuptime at end: {results['uptime_end']}")
    per_case = ", ".join(f"{cr['case']['name']} {cr['load_before'][0]}" for cr in results["cases"])
    say(f"1-minute load average before each case: {per_case}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
