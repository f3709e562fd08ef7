"""Every benchmark script still runs (on a few molecules): the scripts call the library,
so a change to it that breaks one is caught here, not the next time figures are made.
Nothing is timed against a target here (benchmarks report; tests check)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import MOSES100, ROOT


@pytest.fixture(scope="module")
def ten_molecules(tmp_path_factory: pytest.TempPathFactory):
    lines = MOSES100.read_text().splitlines(keepends=True)
    out, i = [], 0
    for _ in range(10):
        k = int(lines[i])
        out += lines[i : i + k + 2]
        i += k + 2
    path = tmp_path_factory.mktemp("bench") / "moses10.xyz"
    path.write_text("".join(out))
    return path


SCRIPTS = {
    "bench_kernel.py": ["--molecules", "{mols}", "--repeat", "1"],
    # the libmolgrid side runs when its venv exists (/work/scratch/peers/mg), else it is
    # reported "not available"
    "bench_complexes.py": ["--molecules", "{mols}", "--repeat", "1", "--receptor-atoms", "500"],
    "bench_pipeline.py": ["--records", "200", "--grid-size", "16", "--workers", "0"],
    "bench_smiles.py": ["--molecules", "6", "--grid-size", "16", "--workers", "0", "--relax"],
    "bench_invert.py": ["--data", "{mols}", "--molecules", "2", "--shape", "24"],
    "bench_dataloader.py": [
        "--molecules",
        "{mols}",
        "--samples",
        "8",
        "--batch-size",
        "4",
        "--grid-size",
        "16",
        "--workers",
        "0",
    ],
    "bench_peers.py": [
        "--molecules",
        "{mols}",
        "--repeat",
        "1",
        "--min-time",
        "0.01",
        "--sizes",
        "8",
        "--channels",
        "1",
        "--fixed-calls",
        "5",
        "--no-avx2",
        "--profile-calls",
        "0",
    ],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_script_runs(script, ten_molecules, tmp_path):
    if script == "bench_dataloader.py":
        pytest.importorskip("torch")
    args = [a.replace("{mols}", str(ten_molecules)) for a in SCRIPTS[script]]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip()
