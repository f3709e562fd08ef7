"""Where the benchmarks find their shared inputs."""

from pathlib import Path

#: The repository root.
ROOT = Path(__file__).resolve().parents[1]
#: The ParticleGrid paper's 100 MOSES molecules (shipped in benchmarks/data/).
MOSES100 = ROOT / "benchmarks" / "data" / "moses100.xyz"
