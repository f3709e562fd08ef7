"""The ``pgrid grid``, ``pgrid info``, ``pgrid index`` and ``pgrid show`` commands: exit
codes, one-line errors (never a traceback), the summary and the JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pgrid_cli.cli import app
from pgrid_cli.store.shard import ShardSet

from .conftest import SAMPLE

CORPUS = Path(__file__).parent / "data" / "malformed"

runner = CliRunner()


def pgrid(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, code, text):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert text in lines[0]


def test_grid_then_info_show_and_index(tmp_path):
    out = tmp_path / "out"
    r = pgrid("grid", SAMPLE, "-o", out, "--grid-size", "16", "--workers", "0")
    assert r.exit_code == 0, r.output
    for word in ("records read", "154", "written", "throughput", "manifest.json"):
        assert word in r.stdout
    assert len(ShardSet(out)) == 154

    r = pgrid("info", out)
    assert r.exit_code == 0, r.output
    assert "valid" in r.stdout and "H, C, N, O, F, P, S, Cl, Br, I, *" in r.stdout
    r = pgrid("info", out, "--json", "--deep")
    d = json.loads(r.stdout)
    assert d["n_structures"] == 154 and d["problems"] == [] and r.exit_code == 0
    r = pgrid("info", out / "shard-00000.h5", "--json")
    assert json.loads(r.stdout)["kind"] == "shard" and r.exit_code == 0

    png = tmp_path / "g.png"
    r = pgrid("show", out, "--index", 20, "-o", png, "--channels", "C,O", "--mode", "slice")
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_one_line_error(pgrid("show", out, "--index", 999, "-o", png), 2, "out of range")
    assert_one_line_error(pgrid("show", out, "--channels", "Xe", "-o", png), 2, "no channel Xe")

    r = pgrid("index", out, "--vds")
    assert r.exit_code == 0 and "154 structures" in r.stdout
    assert (out / "all.h5").exists()


def test_json_summary_and_strict_exit_codes(tmp_path):
    args = ["grid", CORPUS, "--grid-size", "8", "--workers", "0", "--json"]
    r = pgrid(*args, "-o", tmp_path / "a")
    assert r.exit_code == 0, r.output  # rejected records are not a failure by default …
    s = json.loads(r.stdout)
    assert s["written"] == 13 and s["rejected"] == s["read"] - 13 == 29
    assert s["rejected_by_kind"]["parse error"] == 5
    errors = (tmp_path / "a" / "errors.jsonl").read_text().splitlines()
    assert len(errors) == 29
    r = pgrid(*args, "-o", tmp_path / "b", "--strict")
    assert r.exit_code == 1  # … unless --strict


def test_nothing_written_exits_3(tmp_path):
    r = pgrid("grid", CORPUS / "no_blocks.cif", "-o", tmp_path / "o", "--workers", "0", "-q")
    assert r.exit_code == 3 and r.stdout == ""
    r = pgrid("grid", CORPUS / "empty.xyz", "-o", tmp_path / "e", "--workers", "0", "-q")
    assert r.exit_code == 3


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--grid-size", "abc"], "--grid-size must be N or NX,NY,NZ"),
        (["--grid-size", "8,8"], "--grid-size must be N or NX,NY,NZ"),
        (["--sigma", "-1"], "sigma must be a positive width"),
        (["--channels", "C,Q"], "'Q' is not a chemical element"),
        (["--box", "cube:x"], "cube box must look like cube:24"),
        (["--compression", "zip"], "unknown compression"),
        (["--dtype", "float64"], "float32 or float16"),
        (["--disorder", "drop"], "unknown disorder policy"),
        (["--format", "pdb"], "unknown format 'pdb'"),
        (["--shard-index", "3", "--num-shards", "2"], "--shard-index must be in 0..1"),
        (["--workers", "-2"], "Invalid value for '--workers': Input should be greater than or equal to 0"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_options_are_one_line(tmp_path, args, text):
    r = pgrid("grid", SAMPLE / "crystals", "-o", tmp_path / "o", *args)
    assert_one_line_error(r, 2, text)


def test_bad_inputs_and_output_directories(tmp_path):
    assert_one_line_error(
        pgrid("grid", tmp_path / "nope.sdf", "-o", tmp_path / "o"), 2, "no such file or directory"
    )
    (tmp_path / "a.pdb").write_text("")
    assert_one_line_error(
        pgrid("grid", tmp_path / "a.pdb", "-o", tmp_path / "o"), 2, "use --format"
    )
    out = tmp_path / "used"
    out.mkdir()
    (out / "x.txt").write_text("")
    assert_one_line_error(pgrid("grid", SAMPLE / "crystals", "-o", out), 2, "is not empty")
    assert_one_line_error(pgrid("info", tmp_path / "missing"), 2, "no such shard file")
    assert_one_line_error(pgrid("index", tmp_path / "used"), 2, "not the output directory")


def test_info_reports_damage_with_exit_4(tmp_path):
    out = tmp_path / "o"
    r = pgrid("grid", SAMPLE / "crystals", "-o", out, "--grid-size", "8", "--workers", "0", "-q")
    assert r.exit_code == 0
    (out / "shard-00000.h5").write_bytes(b"not hdf5")
    r = pgrid("info", out)
    assert r.exit_code == 4
    assert "problem" in r.stdout and "not a readable HDF5 file" in r.stdout


def test_slurm_array_variables_select_the_slice(tmp_path, monkeypatch):
    out = tmp_path / "o"
    base = [
        "grid",
        SAMPLE / "drugs.sdf",
        "-o",
        out,
        "--grid-size",
        "8",
        "--shard-size",
        "50",
        "--workers",
        "0",
        "--json",
    ]
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    for task in ("1", "0"):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task)
        s = json.loads(pgrid(*base).stdout)
        assert s["slice"] == [int(task), 2]
    assert s["manifest"] is True  # the last slice to finish wrote it
    assert sorted(p.name for p in out.glob("shard-*.h5")) == [
        "shard-00000.h5",
        "shard-00001.h5",
        "shard-00002.h5",
    ]
    r = pgrid("info", out, "--json")
    assert json.loads(r.stdout)["n_structures"] == 126 and r.exit_code == 0


def test_workers_run_in_processes(tmp_path):
    r = pgrid(
        "grid",
        SAMPLE / "drugs.sdf",
        "-o",
        tmp_path / "o",
        "--grid-size",
        "8",
        "--workers",
        "2",
        "--json",
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["written"] == 126
