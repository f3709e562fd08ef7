"""One library's side of ``benchmarks/bench_peers.py``: times its own calls, answers in JSON.

    python benchmarks/peers/runner.py --lib pgrid|particlegrid|molgrid

Runs under the interpreter that has the library (pgrid's venv, a ParticleGrid venv, a
libmolgrid venv) and needs only NumPy and that library. It reads one JSON command per line
on stdin and writes one JSON answer per line on stdout (anything a library prints goes to
stderr instead). The orchestrator sends:

* ``load``: the molecules, as an .npz the orchestrator wrote (``positions`` (M, 3) float64
  Å, ``offsets`` (B+1,), ``elements`` (M,) int32 in 0..7 = C N O S F Cl Br H);
* ``prepare``: a case (``path`` = ``single`` | ``batch`` | ``fixed``, grid ``n``,
  ``channels`` 1 or 8, pgrid's ``threads``). The runner builds its inputs, grids every
  molecule once (the warm-up), checks the grids (finite, right shape, sum > 0; pgrid's sum
  = its number of atoms), saves molecule 0's grid for the orchestrator's cross-check, and
  picks how many passes over the molecules one timed repeat makes (at least ``min_time``
  seconds);
  Several cases can be prepared at once (by ``id``); ``variant`` picks a second form of
  the batch path: pgrid ``prebuilt-boxes`` (the boxes made before timing instead of in
  every timed call), ParticleGrid ``loop`` (``molecule_grid`` copied into a preallocated
  array, which it has no call for); and of the per-molecule paths, pgrid ``recipe``
  (``GridRecipe(...).grid(positions, numbers)``, the box placed natively);
* ``time``: one timed repeat of case ``id`` (``time.perf_counter`` around the passes, and
  the process's CPU time, which shows how much other load stretched the wall time);
  ``recheck`` also sums the grids the timed passes left, against the verified ones;
* ``release``: drop the prepared cases;
* ``profile`` (pgrid only): cProfile of ``calls`` per-molecule calls;
* ``quit``.

Every library gets the same configuration: σ = 0.5 Å, a cubic box around the bounding box
± 2 Å centred on it (pgrid's ``Box.fit(pos, n, 2.0)``), an n³ grid, 1 channel (every atom
in channel 0) or 8 element channels. What each computes differs (docs/benchmarks.md):

* pgrid: exact voxel integrals of normalised Gaussians (float32 output, ``Box.fit``);
* ParticleGrid (``GridGenerator.molecule_grid`` / ``list_grid``): voxel integrals with an
  approximate erf, same box computed inside the library; its width is
  σ = n · variance / 512 Å, so variance = 512 σ / n; output axes (C, z, y, x);
* libmolgrid (``GridMaker.forward``): the density sampled at grid points (not integrated,
  peak 1 per atom): exp(-2 d²/r²) = a Gaussian of σ = r/2, so r = 2σ = 1 Å, with
  ``gaussian_radius_multiple=-1.5`` (pure Gaussian cut at 1.5 r = 3σ, no quadratic tail).
  Its points sit at pgrid's voxel centres: resolution = side / n and dimension =
  side · (n - 1) / n give n points per axis.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

SIGMA = 0.5
PADDING = 2.0
#: The 8 element channels, in the order of the loaded ``elements`` codes 0..7.
ELEMENTS = ("C", "N", "O", "S", "F", "Cl", "Br", "H")
ATOMIC_NUMBERS = np.array([6, 7, 8, 16, 9, 17, 35, 1], dtype=np.int64)


# ------------------------------------------------------------------------ libraries
class Library:
    """A library's per-molecule and batch calls over the loaded molecules."""

    name = "?"

    def __init__(self) -> None:
        self.pos: list[np.ndarray] = []
        self.elements: list[np.ndarray] = []

    def load(self, positions: np.ndarray, offsets: np.ndarray, elements: np.ndarray) -> None:
        b = len(offsets) - 1
        self.pos = [np.ascontiguousarray(positions[offsets[s] : offsets[s + 1]]) for s in range(b)]
        self.elements = [
            np.ascontiguousarray(elements[offsets[s] : offsets[s + 1]]) for s in range(b)
        ]

    def info(self) -> dict[str, Any]:
        return {}

    def channels_of(self, s: int, channels: int) -> np.ndarray:
        return self.elements[s] if channels == 8 else np.zeros(len(self.pos[s]), np.int32)

    def make(self, case: dict[str, Any], mols: list[int]) -> tuple[Any, Any]:
        """(run, result): ``run()`` makes one pass over ``mols``; ``result()`` returns the
        (B, C, n, n, n) grids of the last pass, axes (C, x, y, z)."""
        raise NotImplementedError


class PGrid(Library):
    name = "pgrid"

    def __init__(self) -> None:
        super().__init__()
        import pgrid_cli

        self.pg = pgrid_cli

    def info(self) -> dict[str, Any]:
        info = dict(self.pg.kernel_info())
        info["pgrid_version"] = self.pg.__version__
        info["PGRID_ISA"] = os.environ.get("PGRID_ISA")
        return info

    def make(self, case, mols):
        pg, n, c = self.pg, case["n"], case["channels"]
        threads = case.get("threads")
        pos = [self.pos[s] for s in mols]
        ch = [self.channels_of(s, c) if c == 8 else None for s in mols]
        Box, grid = pg.Box, pg.grid
        last: list[Any] = [None]
        if case["path"] in ("single", "fixed") and case.get("variant") == "recipe":
            # The recommended per-call API: a GridRecipe built once, then one native call
            # (box, channels, grid) per molecule.
            recipe = pg.GridRecipe(
                grid_size=n,
                sigma=SIGMA,
                channels="single" if c == 1 else ",".join(ELEMENTS),
                box="fit",
                padding=PADDING,
            )
            zs = [ATOMIC_NUMBERS[self.elements[s]] for s in mols]
            rgrid = recipe.grid

            def run_recipe():
                for p, z in zip(pos, zs, strict=True):
                    last[0] = rgrid(p, z, threads=threads)

            def result_recipe():
                return np.stack([rgrid(p, z) for p, z in zip(pos, zs, strict=True)])

            return run_recipe, result_recipe
        if case["path"] in ("single", "fixed"):

            def run():
                for p, k in zip(pos, ch, strict=True):
                    box = Box.fit(p, n, PADDING)
                    last[0] = grid(p, box, SIGMA, channels=k, n_channels=c, threads=threads)

            def result():
                # Only the last call's grid survives a pass: re-grid for the check.
                return np.stack(
                    [
                        grid(p, Box.fit(p, n, PADDING), SIGMA, channels=k, n_channels=c)
                        for p, k in zip(pos, ch, strict=True)
                    ]
                )

            return run, result
        buf = np.empty((len(mols), c, n, n, n), np.float32)
        chans = None if c == 1 else ch
        grid_batch = pg.grid_batch
        if case.get("variant") == "prebuilt-boxes":  # the boxes made once, outside the timing
            fixed_boxes = [Box.fit(p, n, PADDING) for p in pos]

            def run_prebuilt():
                grid_batch(
                    pos, fixed_boxes, SIGMA, channels=chans, n_channels=c, out=buf, threads=threads
                )

            return run_prebuilt, lambda: buf

        def run_batch():
            boxes = [Box.fit(p, n, PADDING) for p in pos]
            grid_batch(pos, boxes, SIGMA, channels=chans, n_channels=c, out=buf, threads=threads)

        return run_batch, lambda: buf

    def profile(self, case, calls: int, top: int) -> str:
        """Where one per-molecule call's time goes: each layer of ``grid()`` timed alone
        (medians of 5 runs of ``calls`` calls, wall and CPU), then cProfile of the call."""
        import cProfile
        import io
        import pstats

        pg = self.pg
        n, c, threads = case["n"], case["channels"], case.get("threads")
        p = self.pos[case["molecule"]]
        Box, grid, Batch = pg.Box, pg.grid, pg.Batch
        box = Box.fit(p, n, PADDING)
        batch = Batch.from_structures([p], [box], SIGMA, n_channels=c)
        out = np.empty(batch.grid_shape, np.float32)
        arrays = batch.kernel_arrays()
        isa = pg.resolve_isa()
        core = pg.grid.__globals__["_core"]  # the native module grid() calls
        layers = [
            (
                "grid(pos, Box.fit(pos, n, 2.0), 0.5, threads=1): the whole call",
                lambda: grid(p, Box.fit(p, n, PADDING), SIGMA, n_channels=c, threads=1),
            ),
            ("  Box.fit(pos, n, 2.0)", lambda: Box.fit(p, n, PADDING)),
            (
                "  grid(pos, box, 0.5, threads=1), box made before",
                lambda: grid(p, box, SIGMA, n_channels=c, threads=1),
            ),
            (
                "    Batch.from_structures([pos], [box], 0.5)",
                lambda: Batch.from_structures([p], [box], SIGMA, n_channels=c),
            ),
            (
                "    render_batch(batch, threads=1): new array + kernel",
                lambda: pg.render_batch(batch, threads=1),
            ),
            (
                "      _core.grid_batch(..., out, threads=1): kernel into a given array",
                lambda: core.grid_batch(*arrays, out, threads=1, isa=isa),
            ),
            (
                "      _core.grid_batch(..., out, threads=0): same, default threads",
                lambda: core.grid_batch(*arrays, out, threads=0, isa=isa),
            ),
            (
                "grid(pos, Box.fit(...), 0.5): the whole call, default threads",
                lambda: grid(p, Box.fit(p, n, PADDING), SIGMA, n_channels=c),
            ),
        ]
        rows = []
        for title, fn in layers:
            for _ in range(50):
                fn()
            walls, cpus = [], []
            for _ in range(5):
                c0, t0 = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    fn()
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            wall, cpu = sorted(walls)[2] / calls * 1e6, sorted(cpus)[2] / calls * 1e6
            rows.append(f"{title:<70} {wall:9.1f} {cpu:9.1f}")
        head = f"{'layer (' + str(n) + '³, 1 channel, molecule ' + str(case['molecule']) + ')':<70}"
        text = [head + f" {'µs wall':>9} {'µs CPU':>9}", *rows, ""]

        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(calls):
            grid(p, Box.fit(p, n, PADDING), SIGMA, n_channels=c, threads=threads)
        prof.disable()
        wall = time.perf_counter() - t0
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("tottime").print_stats(top)
        table = buf.getvalue()
        # Keep the table (drop the header lines), with paths relative to site-packages/repo.
        table = table[table.find("   ncalls") :] if "   ncalls" in table else table
        roots = {str(Path(pg.__file__).parents[1]), str(Path(np.__file__).parents[1])}
        for root in sorted(roots, key=len, reverse=True):
            table = table.replace(root + "/", "")
        text.append(
            f"cProfile, {calls} calls of grid(pos, Box.fit(pos, {n}, 2.0), 0.5, threads={threads}),"
            f" {wall / calls * 1e6:.1f} µs per call under the profiler, top {top} by own time:"
        )
        text.append(table.rstrip())
        return "\n".join(text)


class ParticleGrid(Library):
    name = "particlegrid"

    def __init__(self) -> None:
        super().__init__()
        import GridGenerator

        self.gg = GridGenerator

    def info(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("ParticleGrid")
        except PackageNotFoundError:
            v = getattr(self.gg, "__version__", "?")
        return {"particlegrid_version": v, "module": self.gg.__file__}

    def make(self, case, mols):
        gg, n, c = self.gg, case["n"], case["channels"]
        variance = 512.0 * SIGMA / n  # its width: sigma = n * variance / 512 Å
        # Points as the library takes them: (M, 4) float32 rows (channel, x, y, z).
        pts = [
            np.ascontiguousarray(
                np.column_stack([self.channels_of(s, c), self.pos[s]]), dtype=np.float32
            )
            for s in mols
        ]
        last: list[Any] = [None]
        if case["path"] in ("single", "fixed"):
            molecule_grid = gg.molecule_grid

            def run():
                for p in pts:
                    last[0] = molecule_grid(p, n, c, variance)

            def result():
                return np.stack([molecule_grid(p, n, c, variance) for p in pts]).transpose(
                    0, 1, 4, 3, 2
                )

            return run, result
        if case.get("variant") == "loop":
            # No call writes into a given array: copy each molecule_grid into one buffer.
            buf = np.empty((len(mols), c, n, n, n), np.float32)
            molecule_grid = gg.molecule_grid

            def run_loop():
                for i, p in enumerate(pts):
                    buf[i] = molecule_grid(p, n, c, variance)

            return run_loop, lambda: buf.transpose(0, 1, 4, 3, 2)
        # Its batch call: returns a new (B, C, n, n, n) array. It does not zero that array
        # (molecule_grid does): where malloc reuses memory the grids start from garbage.
        list_grid = gg.list_grid

        def run_batch():
            last[0] = list_grid(pts, n, c, variance)

        def result_batch():
            return last[0].transpose(0, 1, 4, 3, 2)

        return run_batch, result_batch


class MolGrid(Library):
    name = "molgrid"

    def __init__(self) -> None:
        super().__init__()
        import molgrid

        molgrid.set_gpu_enabled(False)  # CPU: forward() into CPU grids
        self.mg = molgrid

    def info(self) -> dict[str, Any]:
        return {
            "molgrid_version": getattr(self.mg, "__version__", "?"),
            "gpu_enabled": bool(self.mg.get_gpu_enabled()),
            "radius": 2 * SIGMA,
            "gaussian_radius_multiple": -1.5,
        }

    def make(self, case, mols):
        mg, n, c = self.mg, case["n"], case["channels"]
        gm = mg.GridMaker(
            resolution=1.0,
            dimension=float(n - 1),
            binary=False,
            radius_type_indexed=False,
            radius_scale=1.0,
            gaussian_radius_multiple=-1.5,
        )
        pos = [self.pos[s] for s in mols]
        # Inputs as its CPU forward() takes them (Grid views of float32 NumPy arrays).
        arrays = [
            (
                np.ascontiguousarray(self.pos[s], dtype=np.float32),
                np.ascontiguousarray(self.channels_of(s, c), dtype=np.float32),
                np.full(len(self.pos[s]), 2 * SIGMA, np.float32),
            )
            for s in mols
        ]
        # Grid views do not own their memory: ``keep`` holds the arrays for the closures.
        grids = [(mg.Grid2f(a), mg.Grid1f(t), mg.Grid1f(r)) for a, t, r in arrays]
        keep: list[Any] = [arrays]
        float3, Grid4f = mg.float3, mg.Grid4f
        set_resolution, set_dimension, forward = gm.set_resolution, gm.set_dimension, gm.forward
        shape = (c, n, n, n)
        last: list[Any] = [None]

        def fit(p):
            # pgrid's Box.fit: cube of side max extent + 2 padding, centred on the atoms.
            lo, hi = p.min(axis=0), p.max(axis=0)
            side = float((hi - lo).max()) + 2 * PADDING
            centre = (lo + hi) / 2
            set_resolution(side / n)
            set_dimension(side * (n - 1) / n)  # n points per axis, at pgrid's voxel centres
            return float3(float(centre[0]), float(centre[1]), float(centre[2]))

        if case["path"] in ("single", "fixed"):

            def run():
                assert keep
                for p, (g, t, r) in zip(pos, grids, strict=True):
                    centre = fit(p)
                    out = np.empty(shape, np.float32)  # forward() zeroes it first
                    forward(centre, g, t, r, Grid4f(out))
                    last[0] = out

            def result():
                outs = []
                for p, (g, t, r) in zip(pos, grids, strict=True):
                    out = np.empty(shape, np.float32)
                    forward(fit(p), g, t, r, Grid4f(out))
                    outs.append(out)
                return np.stack(outs)

            return run, result
        # No batch call takes one box per molecule (its 5-D forward shares one resolution
        # and dimension): loop into views of one preallocated buffer.
        buf = np.empty((len(mols), *shape), np.float32)
        views = [Grid4f(buf[i]) for i in range(len(mols))]
        keep.append(buf)

        def run_batch():
            assert keep
            for p, (g, t, r), v in zip(pos, grids, views, strict=True):
                forward(fit(p), g, t, r, v)

        return run_batch, lambda: buf


LIBRARIES = {"pgrid": PGrid, "particlegrid": ParticleGrid, "molgrid": MolGrid}


# ------------------------------------------------------------------------ protocol
class Runner:
    def __init__(self, lib: Library, out) -> None:
        self.lib = lib
        self.out = out
        self.cases: dict[str, dict[str, Any]] = {}

    def reply(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

    def load(self, cmd):
        with np.load(cmd["path"]) as z:
            self.n_atoms = np.diff(z["offsets"])
            self.lib.load(z["positions"], z["offsets"], z["elements"])
        return {"molecules": len(self.lib.pos)}

    def prepare(self, cmd):
        case = cmd["case"]
        if case["path"] == "fixed":
            mols = [case["molecule"]] * case["calls"]
        else:
            mols = list(range(len(self.lib.pos)))
        run, result = self.lib.make(case, mols)
        t0 = time.perf_counter()
        run()  # warm-up
        t_warm = time.perf_counter() - t0
        grids = result()
        check = check_grids(grids, case, [int(self.n_atoms[s]) for s in mols], self.lib.name)
        if cmd.get("dump"):
            np.save(cmd["dump"], grids[0])
        total = float(np.sum(grids, dtype=np.float64))
        del grids
        # One timed repeat = enough passes over the molecules to last min_time.
        t0 = time.perf_counter()
        run()
        t_pass = max(time.perf_counter() - t0, 1e-6)
        passes = max(1, min(int(np.ceil(cmd.get("min_time", 0.3) / t_pass)), 100_000))
        self.cases[cmd["id"]] = {
            "run": run,
            "result": result,
            "passes": passes,
            "calls": len(mols),
            "total": total,
        }
        return {"check": check, "passes": passes, "warmup_s": t_warm, "pass_s": t_pass}

    def time(self, cmd):
        prepared = self.cases[cmd["id"]]
        run, passes = prepared["run"], prepared["passes"]
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(passes):
            run()
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0  # every thread of this process, user + system
        ans = {"seconds": seconds, "cpu_seconds": cpu, "passes": passes}
        ans["calls"] = passes * prepared["calls"]
        if cmd.get("recheck"):
            # Are the grids the timed passes left the ones verified before timing?
            total = float(np.sum(prepared["result"](), dtype=np.float64))
            ref = prepared["total"]
            ans["recheck_ok"] = bool(abs(total - ref) <= 1e-4 * max(1.0, abs(ref)))
            ans["recheck_total"] = total
            ans["verified_total"] = ref
        return ans

    def release(self, _cmd):
        self.cases.clear()
        return {}

    def profile(self, cmd):
        if not hasattr(self.lib, "profile"):
            raise ValueError(f"{self.lib.name} has no profile command")
        return {"text": self.lib.profile(cmd["case"], cmd["calls"], cmd.get("top", 15))}


def check_grids(grids: np.ndarray, case: dict[str, Any], n_atoms: list[int], lib: str) -> dict:
    """``did_work``: right shape and not all zero (nothing timed is a no-op); ``correct``:
    finite, every grid sums to > 0 and, for the two libraries whose voxel integrals are
    normalised, to its number of atoms (pgrid within 1e-3, ParticleGrid within 1e-2)."""
    n, c = case["n"], case["channels"]
    shape = (len(n_atoms), c, n, n, n)
    with np.errstate(all="ignore"):
        sums = grids.reshape(len(n_atoms), -1).sum(axis=1, dtype=np.float64)
    atoms = np.asarray(n_atoms, dtype=np.float64)
    ok_shape = tuple(grids.shape) == shape
    finite = bool(np.isfinite(grids).all())
    err = np.abs(sums - atoms)
    check = {
        "shape": list(grids.shape),
        "expected_shape": list(shape),
        "finite": finite,
        "min_sum": float(sums.min()),
        "sum_per_atom": float(sums.sum() / atoms.sum()),
        "max_abs_sum_minus_atoms": float(err.max()),
        "nonzero_fraction": float(np.count_nonzero(grids) / grids.size),
    }
    check["did_work"] = ok_shape and bool(np.any(grids != 0))
    correct = check["did_work"] and finite and bool((sums > 0).all())
    tolerance = {"pgrid": 1e-3, "particlegrid": 1e-2}.get(lib)
    if tolerance is not None:
        correct = correct and bool(err.max() <= tolerance)
    check["correct"] = correct
    return check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lib", choices=sorted(LIBRARIES), required=True)
    args = ap.parse_args()
    # Our answers own stdout; whatever the libraries print goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        lib = LIBRARIES[args.lib]()
    except Exception as exc:  # the orchestrator reports the library as not available
        out.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return
    runner = Runner(lib, out)
    info = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "numpy": np.__version__,
        **lib.info(),
    }
    runner.reply({"ok": True, "info": info})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        try:
            ans = getattr(runner, cmd["cmd"])(cmd)
            runner.reply({"ok": True, **ans})
        except Exception as exc:
            runner.reply(
                {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "trace": traceback.format_exc(),
                }
            )


if __name__ == "__main__":
    main()
