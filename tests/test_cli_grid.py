"""The ``pgrid grid``, ``pgrid info``, ``pgrid index`` and ``pgrid show`` commands: exit
codes, one-line errors (never a traceback), the summary and the JSON output."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from pgrid_cli.cli import app
from pgrid_cli.store.shard import ShardSet

from .conftest import ROOT, SAMPLE

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
    for word in ("records read", "218", "written", "throughput", "manifest.json"):
        assert word in r.stdout
    assert len(ShardSet(out)) == 218

    r = pgrid("info", out)
    assert r.exit_code == 0, r.output
    assert "valid" in r.stdout and "H, C, N, O, F, P, S, Cl, Br, I, *" in r.stdout
    r = pgrid("info", out, "--json", "--deep")
    d = json.loads(r.stdout)
    assert d["n_structures"] == 218 and d["problems"] == [] and r.exit_code == 0
    r = pgrid("info", out / "shard-00000.h5", "--json")
    assert json.loads(r.stdout)["kind"] == "shard" and r.exit_code == 0

    png = tmp_path / "g.png"
    r = pgrid("show", out, "--index", 20, "-o", png, "--channels", "C,O", "--mode", "slice")
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_one_line_error(pgrid("show", out, "--index", 999, "-o", png), 2, "out of range")
    assert_one_line_error(pgrid("show", out, "--channels", "Xe", "-o", png), 2, "no channel Xe")

    r = pgrid("index", out, "--vds")
    assert r.exit_code == 0 and "218 structures" in r.stdout
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
        (["--format", "pdbqt"], "unknown format 'pdbqt'"),
        (["--waters", "maybe"], "--waters must be one of drop, keep"),
        (["--center", "receptor"], "--center must be one of ligand"),
        (["--center", "ligand", "--box", "tight"], "--box of a receptor + ligand complex must"),
        (["--shard-index", "3", "--num-shards", "2"], "--shard-index must be in 0..1"),
        (["--workers", "-2"], "Invalid value for '--workers': Input should be greater"),
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
    (tmp_path / "a.pdbqt").write_text("")
    assert_one_line_error(
        pgrid("grid", tmp_path / "a.pdbqt", "-o", tmp_path / "o"), 2, "use --format"
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


def test_a_resubmitted_task_and_missing_on_the_command_line(tmp_path, monkeypatch):
    out = tmp_path / "o"
    base = ["grid", SAMPLE / "drugs.sdf", "-o", out, "--grid-size", "8", "--shard-size", "20"]
    base += ["--workers", "0", "--json", "--resume"]
    first = {"SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"}
    for k, v in {**first, "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "3"}.items():
        monkeypatch.setenv(k, v)  # task 3 of --array=1-4: slice 2 of 4
    assert json.loads(pgrid(*base).stdout)["slice"] == [2, 4]
    again = {"SLURM_ARRAY_JOB_ID": "8", "SLURM_ARRAY_TASK_COUNT": "1", "SLURM_ARRAY_TASK_ID": "2"}
    again |= {"SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_MAX": "2"}
    for k, v in again.items():
        monkeypatch.setenv(k, v)  # --array=2 resubmitted: slice 1 of the run's 4
    assert json.loads(pgrid(*base).stdout)["slice"] == [1, 4]
    r = pgrid(*base, "--missing")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["slices_run"] == [0, 3] and s["manifest"] is True
    assert json.loads(pgrid("info", out, "--json").stdout)["n_structures"] == 126


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


# ---------------------------------------------------------------------- many processes
#: ``pgrid`` in a process of its own.
PGRID = [sys.executable, "-c", "from pgrid_cli.cli import main; main()"]
#: A ``pgrid grid`` run (one worker process) that stops at its first progress report, with
#: a shard half written, until the file ``go`` appears; it tells when it is there.
HOLDER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from pgrid_cli.runs.grid import GridOptions, grid_files
    ready, go, src, out, index, count = sys.argv[1:]
    def hold(progress):
        if not Path(ready).exists():
            Path(ready).write_text(str(os.getpid()))
        while not Path(go).exists():
            time.sleep(0.05)
    opts = GridOptions(grid_size=8, shard_size=20)
    grid_files([src], out, opts, workers=1, threads=1, shard_index=int(index),
               num_shards=int(count), resume=True, progress=hold)
    """
)
DRUGS = SAMPLE / "drugs.sdf"
GRID_ARGS = ["grid", DRUGS, "--grid-size", "8", "--shard-size", "20", "--workers", "0", "-q"]


def _pgrid_process(*args: object) -> subprocess.CompletedProcess[str]:
    cmd = [*PGRID, *[str(a) for a in args]]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _holder(tmp_path: Path, out: Path, index: int = 0, count: int = 1) -> subprocess.Popen:
    ready, go = tmp_path / f"ready{index}", tmp_path / "go"
    args = [ready, go, DRUGS, out, index, count]
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, args)], cwd=ROOT)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, "the holder ended before holding the directory"
        assert time.monotonic() < deadline, "the holder never got going"
        time.sleep(0.05)
    return proc


def _one_line(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert text in lines[0], lines[0]


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_second_writer_is_refused_and_a_killed_one_blocks_nothing(tmp_path):
    """Two `--resume` runs on one directory corrupted shards; now the second is refused
    with one line while the first holds the directory, and a `kill -9`'d holder (whose
    worker process lives on) does not block the next `--resume`."""
    out = tmp_path / "o"
    holder = _holder(tmp_path, out)
    orphans = _children(holder.pid)
    try:
        second = _pgrid_process(*GRID_ARGS, "-o", out, "--resume")
        _one_line(second, 2, f"is in use by another pgrid grid run (process {holder.pid})")
        _one_line(_pgrid_process(*GRID_ARGS, "-o", out, "--overwrite"), 2, "is in use")
        assert list(out.glob("shard-*.partial"))  # the holder's shard, untouched
        holder.kill()
        holder.wait()
        resumed = _pgrid_process(*GRID_ARGS, "-o", out, "--resume")
        assert resumed.returncode == 0, resumed.stderr
    finally:
        holder.kill()
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    info = _pgrid_process("info", out)
    assert info.returncode == 0, info.stdout
    assert len(ShardSet(out)) == 126 and not list(out.glob("*.partial"))


def test_slices_of_a_split_run_write_one_directory_at_once(tmp_path):
    """Slices of a split run still run concurrently (a lock per slice); the same slice
    twice, or another slicing of the directory, is refused."""
    out = tmp_path / "o"
    holder = _holder(tmp_path, out, 0, 2)
    try:
        other = _pgrid_process(*GRID_ARGS, "-o", out, "--shard-index", "1", "--num-shards", "2")
        assert other.returncode == 0, other.stderr
        same = ["--shard-index", "0", "--num-shards", "2", "--resume"]
        _one_line(_pgrid_process(*GRID_ARGS, "-o", out, *same), 2, f"{holder.pid}, slice 0 of 2)")
        _one_line(_pgrid_process(*GRID_ARGS, "-o", out, "--resume"), 2, "in 2 slice(s)")
        (tmp_path / "go").touch()
        assert holder.wait(timeout=300) == 0
    finally:
        holder.kill()
    assert (out / "manifest.json").exists()  # the last slice to finish wrote it
    info = _pgrid_process("info", out)
    assert info.returncode == 0, info.stdout
    assert len(ShardSet(out)) == 126


def test_a_full_disk_is_one_line_and_leaves_no_temporaries(tmp_path):
    """A full disk printed HDF5's multi-line text (and a traceback) and left temporaries."""

    def small_files() -> None:  # the child can write no file over 200 kB: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    out = tmp_path / "o"
    cmd = [*PGRID, "grid", str(DRUGS), "-o", str(out), "--grid-size", "32", "--workers", "0"]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=small_files
    )
    _one_line(proc, 2, "shard-00000.h5: cannot write the shard: File too large")
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing was written: the directory is as it was


@pytest.mark.parametrize("target", ["slice-00000-of-00001.json", "manifest.json"])
def test_a_failed_json_write_removes_its_temporary(tmp_path, monkeypatch, target):
    """A full disk while writing the slice state or the manifest left `*.tmp` files."""
    real = os.replace

    def full(src, dst):
        if Path(dst).name == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    out = tmp_path / "o"
    with monkeypatch.context() as m:
        m.setattr(os, "replace", full)
        r = pgrid(*GRID_ARGS, "-o", out)
    assert_one_line_error(r, 2, "No space left on device")
    assert target in r.stderr
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    r = pgrid(*GRID_ARGS, "-o", out, "--resume")  # space freed: carry on
    assert r.exit_code == 0, r.output
    assert (out / "manifest.json").exists()


def test_a_failure_before_any_shard_lets_the_corrected_command_run(tmp_path, monkeypatch):
    """`--grid-size 2000` failed with a traceback and left slices/ that refused the
    corrected command."""
    import pgrid_cli.runs.gridtask as task

    out = tmp_path / "o"
    # Over the memory cap: refused before anything is read or written.
    r = pgrid(*GRID_ARGS[:-1], "-o", out, "--grid-size", "2000")
    assert_one_line_error(r, 2, "one grid of shape (11, 2000, 2000, 2000) needs")
    assert not out.exists()

    # Under the cap, but the machine has less: the failure leaves nothing behind either.
    def too_big(*args, **kw):
        raise MemoryError("Unable to allocate 328. GiB for an array with shape (1, 11, 2000, …)")

    with monkeypatch.context() as m:
        m.setattr(task, "render_batch", too_big)
        r = pgrid(*GRID_ARGS[:-1], "-o", out, "--shard-size", "5")
    assert_one_line_error(r, 2, "not enough memory (Unable to allocate 328. GiB")
    assert not out.exists()
    r = pgrid(*GRID_ARGS, "-o", out)
    assert r.exit_code == 0, r.output


def test_info_shows_checksums_captured_and_the_storage_error(tmp_path):
    out = tmp_path / "o"
    r = pgrid(*GRID_ARGS, "-o", out, "--dtype", "float16", "--box", "cube:9")
    assert r.exit_code == 0, r.output
    r = pgrid("info", out)
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    assert "checksums │ match" in text
    assert "(rounding + float16 cast)" in text
    assert re.search(r"captured │ min 0\.\d+; [1-9]\d* of 79 structures below 0\.99", text)
    shard = out / "shard-00002.h5"
    with h5py.File(shard) as f:
        offset = f["positions"].id.get_offset() + 5
    data = bytearray(shard.read_bytes())
    data[offset] ^= 0x04
    shard.write_bytes(bytes(data))
    r = pgrid("info", out)
    assert r.exit_code == 4 and "positions fails its checksum" in r.stdout
    assert pgrid("info", out, "--no-checksums").exit_code == 0
