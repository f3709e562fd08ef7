"""Where the benchmarks find their shared inputs."""

from pathlib import Path

#: The repository root.
ROOT = Path(__file__).resolve().parents[1]
#: The ParticleGrid paper's 100 MOSES molecules, in ../shared beside the repository.
MOSES100 = ROOT.parent / "shared" / "data" / "moses100.xyz"
