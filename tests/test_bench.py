"""pgrid bench (pgrid_cli.runs.bench and the CLI): a tiny sweep runs and measures every cell,
its derived figures follow from its raw times, its JSON/CSV round-trip, a wrong
implementation is refused before anything is timed. Nothing here asserts a speed."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from pgrid_cli import Box, ChannelSpec, available_isas, grid_batch, render_batch
from pgrid_cli.cli import app
from pgrid_cli.cli.bench import parse_channel_sets, parse_list
from pgrid_cli.core.reference import reference_grid
from pgrid_cli.runs.bench import machine as bench_machine
from pgrid_cli.runs.bench import sweep as pbench
from pgrid_cli.runs.bench.config import NUMPY, SCHEMA, BenchConfig, VerificationError
from pgrid_cli.runs.bench.endtoend import run_end_to_end
from pgrid_cli.runs.bench.plot import plot_result
from pgrid_cli.runs.bench.results import CSV_COLUMNS, BenchResult
from pgrid_cli.runs.bench.sweep import load_structures, run_sweep, spread

from .conftest import ROOT

SMALL = ROOT / "sample_data" / "small_molecules.xyz"  # 19 molecules, H C N O S P Cl
CRYSTALS = ROOT / "sample_data" / "crystals" / "perovskite.extxyz"  # cubic + triclinic
NATIVE = list(reversed(available_isas()))

TINY = BenchConfig(
    inputs=(str(SMALL),),
    grid_sizes=(8, 12),
    sigmas=(0.5, 1.0),
    channels=("single", "elements"),
    threads=(1, 2),
    limit=5,
    repeat=2,
    verify=2,
    numpy_budget=30.0,
)


@pytest.fixture(scope="module")
def tiny() -> BenchResult:
    return run_sweep(TINY, command="test")


def _structures(limit: int = 5):
    return load_structures([SMALL], channels=["single", "elements"], limit=limit)[0]


# ---------------------------------------------------------------------- the sweep
def test_every_cell_is_measured_and_verified(tiny: BenchResult) -> None:
    per_setting = len(NATIVE) * 2 + 1  # every ISA at 1 and 2 threads, and NumPy
    assert len(tiny.cells) == 2 * 2 * 2 * per_setting
    assert tiny.skipped == []
    for c in tiny.cells:
        assert len(c.times) == TINY.repeat and min(c.times) > 0
        if c.implementation == NUMPY:
            assert c.threads == 1 and 1 <= c.structures <= 5  # BLAS held to one thread
        else:
            assert c.structures == 5 and c.threads in (1, 2)
        assert 0 < c.nonzero_fraction <= 1
    assert tiny.input["structures"] == 5 and tiny.input["rejected"] == []
    assert tiny.input["atoms"] == sum(len(s) for s in _structures())
    # One check per native path, thread count and setting, each inside docs/format.md §3.
    keys = {(k.implementation, k.threads, k.grid_size, k.sigma, k.channels) for k in tiny.checks}
    assert len(keys) == len(tiny.checks) == len(NATIVE) * 2 * 8
    for k in tiny.checks:
        assert len(k.structures) == 2
        assert 0 <= k.max_abs_error <= 1e-6 and k.worst_ratio <= 1.0


def test_derived_figures_follow_from_the_raw_times(tiny: BenchResult) -> None:
    for c in tiny.cells:
        t = float(np.median(c.times))
        assert_allclose(c.structures_per_s, c.structures / t, rtol=1e-12)
        lo, hi = c.structures_per_s_range
        assert_allclose([lo, hi], [c.structures / max(c.times), c.structures / min(c.times)])
        voxels = c.structures * c.n_channels * c.grid_size**3
        assert_allclose(c.ns_per_voxel, t / voxels * 1e9, rtol=1e-12)
        floor = float(np.median(c.floor_times)) / c.floor_structures
        assert_allclose(c.floor_ratio, (t / c.structures) / floor, rtol=1e-12)
        _, threads, n, sigma, ch = c.key
        scalar = tiny.cell("scalar", threads, n, sigma, ch)
        ref = tiny.cell(NUMPY, 1, n, sigma, ch)
        per = t / c.structures
        # NumPy runs single-threaded (BLAS held to one thread), so it has a ratio to
        # scalar like every other cell.
        assert_allclose(c.speedup_vs_scalar, scalar.seconds_per_structure / per, rtol=1e-12)
        assert_allclose(c.speedup_vs_numpy, ref.seconds_per_structure / per, rtol=1e-12)
        if threads is not None:
            one = tiny.cell(c.implementation, 1, n, sigma, ch)
            assert_allclose(c.speedup_vs_1_thread, one.seconds_per_structure / per)
    for c in tiny.cells:
        if c.implementation == "scalar":
            assert c.speedup_vs_scalar == 1.0
        if c.threads == 1:
            assert c.speedup_vs_1_thread == 1.0


def _independent_grids(structures, n, sigma, channels, isa=None, threads=None):
    """The structures' grids made with the public API alone (Box.fit, ChannelSpec,
    grid_batch), not with the bench's own batching."""
    spec = ChannelSpec.parse(channels)
    return grid_batch(
        [s.positions for s in structures],
        [Box.fit(s.positions, n, 2.0) for s in structures],
        sigma,
        channels=[spec.assign(s.numbers) for s in structures],
        n_channels=spec.n_channels,
        isa=isa,
        threads=threads,
    )


def test_per_call_rows_report_what_users_pay(tiny: BenchResult) -> None:
    """Issue 11, item 7: one call per structure beside the batch rows, and the fixed cost
    of a call, for every grid size and channel set at the σ nearest 0.5 Å."""
    assert {(p.grid_size, p.channels) for p in tiny.per_call} == {
        (n, ch) for n in TINY.grid_sizes for ch in TINY.channels
    }
    for p in tiny.per_call:
        assert p.sigma == 0.5 and p.structures == 5 and len(p.times) == TINY.repeat
        assert p.structures_per_s > 0 and 0 < p.fixed_cost_us < 1e5
        best = min(
            c.seconds_per_structure
            for c in tiny.cells
            if c.implementation in NATIVE
            and (c.grid_size, c.sigma, c.channels, c.threads) == (p.grid_size, 0.5, p.channels, 2)
        )
        assert p.batch_s_per_structure == best
        assert_allclose(p.ratio_to_batch, best / p.seconds_per_structure, rtol=1e-12)
    again = BenchResult.from_json(json.loads(json.dumps(tiny.to_json())))
    assert [q.to_json() for q in again.per_call] == [q.to_json() for q in tiny.per_call]


def test_nonzero_fraction_counts_the_kernel_output(tiny: BenchResult) -> None:
    structures = _structures()
    for c in tiny.cells:
        if c.implementation == NUMPY:
            chosen = [structures[i] for i in spread(len(structures), c.structures)]
            spec = ChannelSpec.parse(c.channels)
            grids = [
                reference_grid(
                    s.positions,
                    Box.fit(s.positions, c.grid_size, 2.0),
                    c.sigma,
                    spec.assign(s.numbers),
                    spec.n_channels,
                ).astype(np.float32)
                for s in chosen
            ]
            expected = sum(np.count_nonzero(g) for g in grids) / sum(g.size for g in grids)
        else:
            grids = _independent_grids(
                structures, c.grid_size, c.sigma, c.channels, c.implementation, c.threads
            )
            expected = np.count_nonzero(grids) / grids.size
        assert c.nonzero_fraction == pytest.approx(expected, abs=1e-12), c.key


def test_small_batches_give_the_same_voxels(tmp_path: Path) -> None:
    """A buffer smaller than one structure still grids (and verifies) every structure."""
    cfg = BenchConfig(
        inputs=(str(SMALL),),
        grid_sizes=(16,),
        sigmas=(0.5,),
        channels=("elements",),
        threads=(1,),
        limit=3,
        repeat=1,
        verify=1,
        implementations=(NATIVE[0],),
        batch_mb=1e-3,
    )
    result = run_sweep(cfg)
    (cell,) = result.cells
    grids = _independent_grids(_structures(3), 16, 0.5, "elements", NATIVE[0])
    assert cell.structures == 3
    assert cell.nonzero_fraction == pytest.approx(np.count_nonzero(grids) / grids.size, abs=0)


def test_crystals_verify_with_the_spec_tolerances() -> None:
    """Periodic cells: the cubic one at 1e-6 absolute, the triclinic one at 1e-4 · max."""
    cfg = BenchConfig(
        inputs=(str(CRYSTALS),),
        grid_sizes=(8,),
        sigmas=(0.5,),
        channels=("single",),
        threads=(1,),
        repeat=1,
        verify=2,
        numpy_budget=30.0,
    )
    result = run_sweep(cfg)
    assert result.input["structures"] == 2 and result.input["periodic"] == 2
    assert len(result.checks) == len(NATIVE)
    for k in result.checks:
        assert len(k.structures) == 2 and k.worst_ratio <= 1.0
    assert {c.implementation for c in result.cells} == {*NATIVE, NUMPY}


# ---------------------------------------------------------------------- refusing wrong answers
def _wrong_on(bad: str, delta: float = 2e-6):
    """render_batch, but the ``bad`` path adds ``delta`` to the densest voxel of each grid."""

    def wrong(batch, out=None, *, threads=None, isa=None):
        grids = render_batch(batch, out, threads=threads, isa=isa)
        if isa == bad:
            for g in grids:
                g.flat[np.argmax(g)] += np.float32(delta)
        return grids

    return wrong


@pytest.mark.parametrize("bad", ["scalar", NATIVE[0]])
def test_a_wrong_implementation_is_refused_before_timing(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    calls: list[int] = []
    real_time_runs = pbench.time_runs

    def spy(*args, **kw):
        calls.append(1)
        return real_time_runs(*args, **kw)

    monkeypatch.setattr(pbench, "render_batch", _wrong_on(bad))
    monkeypatch.setattr(pbench, "time_runs", spy)
    with pytest.raises(VerificationError, match=rf"^{bad} \(1 thread\) disagrees") as err:
        run_sweep(TINY)
    assert "tolerance 1e-06 absolute" in str(err.value)
    assert calls == []  # nothing was timed


def test_quick_verification_on_a_window_still_refuses_a_wrong_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--quick compares a window around each structure's first atom (bounded work on any
    input, triclinic cells included); an error there is still refused before timing."""
    cfg = BenchConfig(
        inputs=(str(CRYSTALS),),
        grid_sizes=(16,),
        sigmas=(0.5,),
        channels=("single",),
        threads=(1,),
        repeat=1,
        verify=2,
        verify_window=4,
        numpy_budget=0.0,
    )
    result = run_sweep(cfg)  # the right answer passes on windows of both cells
    assert len(result.checks) == len(NATIVE) and all(k.worst_ratio <= 1 for k in result.checks)

    def wrong_near_atoms(batch, out=None, *, threads=None, isa=None):
        grids = render_batch(batch, out, threads=threads, isa=isa)
        if isa == "scalar":
            grids += np.float32(1e-5) * (grids > 1e-3)  # every dense voxel a little off
        return grids

    monkeypatch.setattr(pbench, "render_batch", wrong_near_atoms)
    with pytest.raises(VerificationError, match=r"^scalar \(1 thread\) disagrees"):
        run_sweep(cfg)


def test_a_nan_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pbench, "render_batch", _wrong_on(NATIVE[-1], float("nan")))
    with pytest.raises(VerificationError, match=re.escape("max |error| nan >")):
        run_sweep(TINY)


def test_an_error_within_tolerance_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is docs/format.md §3's bound, not equality: 5e-7 on one voxel is accepted."""
    monkeypatch.setattr(pbench, "render_batch", _wrong_on("scalar", 5e-7))
    cfg = BenchConfig(
        inputs=(str(SMALL),),
        grid_sizes=(8,),
        sigmas=(0.5,),
        channels=("single",),
        threads=(1,),
        limit=2,
        repeat=1,
        implementations=("scalar",),
    )
    (check,) = run_sweep(cfg).checks
    assert 4e-7 < check.max_abs_error < 6e-7 and check.worst_ratio < 1


# ---------------------------------------------------------------------- NumPy budget
def test_numpy_is_skipped_and_said_so_when_over_budget() -> None:
    cfg = BenchConfig(
        inputs=(str(SMALL),),
        grid_sizes=(8,),
        sigmas=(0.5, 1.0),
        channels=("single",),
        threads=(1,),
        limit=3,
        repeat=1,
        numpy_budget=1e-9,
    )
    result = run_sweep(cfg)
    assert [s.sigma for s in result.skipped] == [0.5, 1.0]
    for s in result.skipped:
        assert s.implementation == NUMPY and "exceed the 1e-09 s budget" in s.reason
    assert all(c.implementation != NUMPY and c.speedup_vs_numpy is None for c in result.cells)
    off = run_sweep(BenchConfig(**{**cfg.__dict__, "numpy_budget": 0.0}))
    assert all("off" in s.reason for s in off.skipped) and len(off.skipped) == 2


def test_numpy_budget_bounds_the_subset(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock makes each reference structure cost 1 s (× 8 at 16³). With 4.5 s for
    2 runs, the warm-up takes structures until 2.25 s are spent: 3 of them, spread over
    the input; the 16³ cell is skipped on the estimate scaled from 8³, without running."""
    clock = {"t": 0.0}
    real = pbench.reference_structure
    ran: list[int] = []

    def slow(batch, s):
        ran.append(batch.shape[0])
        clock["t"] += 1.0 * (batch.shape[0] / 8) ** 3
        return real(batch, s)

    fake_clock = SimpleNamespace(perf_counter=lambda: clock["t"])
    monkeypatch.setattr(pbench, "time", fake_clock)
    monkeypatch.setattr(bench_machine, "time", fake_clock)
    monkeypatch.setattr(pbench, "reference_structure", slow)
    cfg = BenchConfig(
        inputs=(str(SMALL),),
        grid_sizes=(8, 16),
        sigmas=(0.5,),
        channels=("single",),
        threads=(1,),
        limit=8,
        repeat=2,
        numpy_budget=4.5,
        implementations=(NUMPY,),
    )
    result = run_sweep(cfg)
    (cell,) = result.cells
    assert cell.grid_size == 8 and cell.structures == 3
    assert cell.times == [3.0, 3.0]
    assert ran.count(16) == 0
    (skip,) = result.skipped
    assert skip.grid_size == 16 and "about 8 s per structure (scaled from 8³)" in skip.reason
    # A budget below one structure per run skips on the first structure.
    result = run_sweep(BenchConfig(**{**cfg.__dict__, "numpy_budget": 1.5}))
    assert result.cells == [] and "one structure took 1 s" in result.skipped[0].reason


@pytest.mark.parametrize("n", [1, 2, 5, 8, 19, 100])
def test_spread_order_visits_every_index_once(n: int) -> None:
    order = list(pbench.spread_order(n))
    assert sorted(order) == list(range(n))
    assert order[:2] == [0, n // 2][: min(n, 2)]


def test_spread_order_is_van_der_corput() -> None:
    assert list(pbench.spread_order(8)) == [0, 4, 2, 6, 1, 5, 3, 7]
    assert list(pbench.spread_order(5)) == [0, 2, 1, 3, 4]


# ---------------------------------------------------------------------- input
def test_records_without_a_channel_are_reported_not_dropped() -> None:
    structures, rejected = load_structures([SMALL], channels=["single", "C,H,O"])
    assert len(structures) + len(rejected) == 19
    assert {r.name for r in rejected} >= {"ammonia", "pyridine", "thiophene", "phosphine"}
    assert all("no channel" in r.reason for r in rejected)
    for s in structures:
        assert set(s.numbers) <= {1, 6, 8}


def test_limit_takes_the_first_structures() -> None:
    structures, rejected = load_structures([SMALL], limit=3)
    assert [s.record for s in structures] == [0, 1, 2] and rejected == []
    assert [s.name for s in structures] == ["water", "methane", "ammonia"]


def test_no_usable_structure_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"no structure to benchmark.*19 record"):
        run_sweep(BenchConfig(inputs=(str(SMALL),), channels=("He",), grid_sizes=(8,)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid_sizes": (0,)}, "grid size must be at least 1"),
        ({"grid_sizes": (8.5,)}, "grid size must be a whole number"),
        ({"sigmas": (-0.5,)}, "sigma must be a positive width"),
        ({"sigmas": (float("nan"),)}, "sigma must be a positive width"),
        ({"channels": ("C,Xx",)}, "not a chemical element"),
        ({"threads": (0,)}, "thread count must be at least 1"),
        ({"box": "sphere"}, "unknown box 'sphere'"),
        ({"box": "cube:-3"}, "cube"),
        ({"implementations": ("avx1024",)}, "unknown implementation 'avx1024'"),
        ({"repeat": 0}, "repeat must be at least 1"),
        ({"verify": 0}, "verify must be at least 1"),
        ({"numpy_budget": -1.0}, "numpy budget"),
        ({"batch_mb": 0.0}, "batch size"),
        ({"inputs": ("/nonexistent/x.xyz",)}, "no such file"),
    ],
)
def test_bad_options_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_sweep(BenchConfig(**{**TINY.__dict__, **change}))


def test_defaults_resolve() -> None:
    cfg = BenchConfig().resolved()
    assert Path(cfg.inputs[0]).name == "drugs.sdf"
    assert cfg.threads[0] == 1
    assert cfg.implementations == (*NATIVE, NUMPY)
    quick = BenchConfig.quick(grid_sizes=(8,)).resolved()
    assert quick.grid_sizes == (8,) and quick.repeat == 3 and quick.limit == 32
    # duplicates collapse; 'elements' and its explicit spelling are one channel set
    cfg = BenchConfig(
        sigmas=(0.5, 0.5), channels=("elements", "H,C,N,O,F,P,S,Cl,Br,I,*")
    ).resolved()
    assert cfg.sigmas == (0.5,) and cfg.channels == ("elements",)


# ---------------------------------------------------------------------- outputs
def test_json_schema_and_round_trip(tiny: BenchResult, tmp_path: Path) -> None:
    path = tiny.write_json(tmp_path / "bench.json")
    d = json.loads(path.read_text())
    assert d["schema"] == SCHEMA and d["schema_version"] == 1 and d["command"] == "test"
    assert set(d) == {
        "schema",
        "schema_version",
        "command",
        "seconds",
        "header",
        "config",
        "input",
        "cells",
        "skipped",
        "checks",
        "end_to_end",
        "per_call",
    }
    h = d["header"]
    for key in (
        "cpu",
        "cores",
        "isa_detected",
        "isa_available",
        "implementations",
        "compiler",
        "flags",
        "pgrid_version",
        "numpy_version",
        "date",
    ):
        assert h[key] not in (None, "", []), key
    assert h["isa_detected"] in h["isa_available"]
    assert d["config"]["grid_sizes"] == [8, 12] and d["config"]["threads"] == [1, 2]
    numeric = ("structures_per_s", "ns_per_voxel", "floor_ratio", "median_s")
    for c in d["cells"]:
        for key in numeric:
            assert isinstance(c[key], float) and math.isfinite(c[key]) and c[key] > 0
        assert isinstance(c["times"], list) and len(c["times"]) == 2
        assert c["structures_per_s_min"] <= c["structures_per_s"] <= c["structures_per_s_max"]
    again = BenchResult.from_json(d)
    assert json.loads(json.dumps(again.to_json())) == d
    with pytest.raises(ValueError, match="not a pgrid-bench version 1"):
        BenchResult.from_json({**d, "schema_version": 2})


def test_csv_has_a_row_per_cell(tiny: BenchResult, tmp_path: Path) -> None:
    path = tiny.write_csv(tmp_path / "bench.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(tiny.cells) + len(tiny.skipped)
    for row, c in zip(rows, tiny.cells, strict=False):
        assert row["implementation"] == c.implementation
        assert float(row["structures_per_s"]) == pytest.approx(c.structures_per_s, rel=1e-5)
        assert row["threads"] == ("" if c.threads is None else str(c.threads))


def test_plot_writes_a_png(tiny: BenchResult, tmp_path: Path) -> None:
    from matplotlib.image import imread

    path = plot_result(tiny, tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 1000 and image.shape[1] > 1000
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_result(BenchResult(tiny.header, tiny.config, tiny.input), tmp_path / "x.png")


# ---------------------------------------------------------------------- end to end
def test_end_to_end_splits_the_pipeline_time(tmp_path: Path) -> None:
    e = run_end_to_end([SMALL], grid_size=8, sigma=0.5, workers=0, threads=1, scratch=tmp_path)
    assert e.structures == 19 and e.rejected == 0
    assert set(e.stages) == {"parse", "grid", "compress", "write"}
    assert all(v > 0 for v in e.stages.values())
    assert sum(e.stages.values()) <= e.seconds  # one process: the stages are inside the run
    assert e.bytes_per_structure > 0
    assert list(tmp_path.iterdir()) == []  # the shards are cleaned up


# ---------------------------------------------------------------------- the command line
runner = CliRunner()


def _tiny_args(tmp_path: Path) -> list[str]:
    return [
        "bench",
        str(SMALL),
        "--grid-sizes",
        "8",
        "--sigmas",
        "0.5",
        "--channels",
        "single,elements",
        "--threads",
        "1",
        "--limit",
        "3",
        "--repeat",
        "1",
    ]


def test_cli_runs_and_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "r"
    out.mkdir()
    args = [
        *_tiny_args(tmp_path),
        "--end-to-end",
        "--report",
        str(out / "b.json"),
        "--csv",
        str(out / "b.csv"),
        "--plot",
        str(out / "b.png"),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    for text in ("CPU", "compiler", "8³ σ=0.5 single", "verified", "end to end"):
        assert text in res.output
    d = json.loads((out / "b.json").read_text())
    assert d["config"]["channels"] == ["single", "elements"]
    assert [(e["grid_size"], e["channels"]) for e in d["end_to_end"]] == [
        (8, "single"),
        (8, "elements"),
    ]
    assert all(e["structures"] == 19 for e in d["end_to_end"])
    assert (out / "b.csv").stat().st_size > 0 and (out / "b.png").stat().st_size > 0


def test_cli_quick_takes_explicit_options(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    args = ["bench", str(SMALL), "--quick", "--grid-sizes", "8", "--limit", "2", "-q"]
    res = runner.invoke(app, [*args, "--report", str(path)])
    assert res.exit_code == 0, res.output
    assert res.output == ""
    # --json: the same results as JSON on stdout, nothing else
    res = runner.invoke(app, ["bench", str(SMALL), "--quick", "--grid-sizes", "8", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["config"]["grid_sizes"] == [8]
    cfg = json.loads(path.read_text())["config"]
    assert cfg["grid_sizes"] == [8] and cfg["limit"] == 2
    assert cfg["repeat"] == 3 and cfg["sigmas"] == [0.5]  # from --quick


def test_cli_refuses_a_wrong_implementation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pbench, "render_batch", _wrong_on("scalar", 1e-3))
    res = runner.invoke(app, [*_tiny_args(tmp_path), "--report", str(tmp_path / "x.json")])
    assert res.exit_code == 1
    assert "scalar (1 thread) disagrees with the float64 reference" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid-sizes", "a,b"], "--grid-sizes must be a comma-separated list of whole"),
        (["--sigmas", ""], "--sigmas needs at least one value"),
        (["--channels", "C,Xx"], "'Xx' is not a chemical element"),
        (["--implementations", "avx1024"], "unknown implementation"),
        (["--report", "/nonexistent/dir/x.json"], "is not a directory"),
        (["--plot", "bench.xyz"], "must end in an image format"),
    ],
)
def test_cli_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    res = runner.invoke(app, [*_tiny_args(tmp_path), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_channel_and_list_parsing() -> None:
    assert parse_channel_sets(["single,elements"]) == ("single", "elements")
    assert parse_channel_sets(["C,H,N,O,*"]) == ("C,H,N,O,*",)
    assert parse_channel_sets(["Single", "C,H,*"]) == ("single", "C,H,*")
    assert parse_list("16, 32,64", int, "x") == (16, 32, 64)
    with pytest.raises(ValueError, match="x must be a comma-separated list of numbers"):
        parse_list("0.5,abc", float, "x")
