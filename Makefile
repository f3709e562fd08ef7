# pgrid — set-up and everyday commands. On a fresh machine (Python 3.10+, pip, g++):
#   make demo   create .venv, build + install pgrid, run the main job on sample_data/
#   make test   same install, then the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.pgrid-installed
TEST_STAMP := $(VENV)/.pgrid-test-installed
# Re-install when the build or the native sources change, or when a package module is added
# or removed (the editable install maps the modules it knew; edits need no reinstall).
NATIVE := pyproject.toml CMakeLists.txt $(wildcard native/include/pgrid/*.hpp native/src/*)
MODULES := $(VENV)/.modules-$(shell find pgrid_cli -name '*.py' | sort | cksum | cut -d' ' -f1)

.PHONY: help install install-test demo test test-cluster lint format bench bench-pipeline bench-invert \
	bench-results bench-peers peers-venv clean

help:
	@echo "make demo    install and run the main job on sample_data/"
	@echo "make test    install and run every test"
	@echo "make test-cluster   opt-in, root: a real one-node Slurm runs docs/grid-array.sbatch (about 3 min)"
	@echo "make lint    ruff + clang-format checks"
	@echo "make bench   the kernel benchmark (docs/benchmarks.md)"
	@echo "make bench-pipeline   SDF -> shards throughput against the kernel alone"
	@echo "make bench-invert     inversion quality and speed table (docs/benchmarks.md)"
	@echo "make bench-results  re-measure docs/bench/ with pgrid bench (about 4 min)"
	@echo "make bench-peers    pgrid against ParticleGrid / libmolgrid (PG_PY=... MG_PY=...)"
	@echo "make peers-venv     a libmolgrid venv from PyPI in $(MG_VENV) (MG_VENV=...)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(MODULES): | $(PY)
	@rm -f $(VENV)/.modules-*
	@touch $@

# What the demo needs: pgrid and its dependencies (no torch, no test tools).
$(STAMP): $(PY) $(NATIVE) $(MODULES)
	$(PIP) install --quiet -e .
	@touch $@

# The tests also need pytest, ruff, clang-format and torch (CPU build, a local wheel).
$(TEST_STAMP): $(STAMP)
	$(PIP) install --quiet -e ".[test,dev]"
	$(PIP) install --quiet torch==2.13.0
	@touch $@

install: $(STAMP)

install-test: $(TEST_STAMP)

demo: install
	$(VENV)/bin/pgrid grid sample_data -o demo_out --overwrite
	$(VENV)/bin/pgrid info demo_out
	$(VENV)/bin/pgrid invert demo_out --index 0:4,-4: -o demo_out/inverted.xyz --report demo_out/inverted.json

test: install-test
	$(VENV)/bin/pytest

# Opt-in, not part of `make test`; needs root (installs slurm-wlm and munge when missing).
# Brings up a one-node Slurm (tools/cluster/slurm-up.sh, state in /tmp/pgrid-slurm), runs
# docs/grid-array.sbatch end to end in several scenarios, stops the cluster again and
# exits with the test's status.
test-cluster: install
	tools/cluster/slurm-up.sh && tools/cluster/test-recipe.sh; status=$$?; \
	  tools/cluster/slurm-down.sh; exit $$status

lint: install-test
	$(VENV)/bin/ruff check pgrid_cli tests tools examples benchmarks
	$(VENV)/bin/clang-format --dry-run --Werror native/include/pgrid/*.hpp native/src/*.cpp native/src/*.hpp

format: install-test
	$(VENV)/bin/ruff check --fix pgrid_cli tests tools examples benchmarks
	$(VENV)/bin/clang-format -i native/include/pgrid/*.hpp native/src/*.cpp native/src/*.hpp

bench: install
	$(PY) benchmarks/bench_kernel.py

bench-pipeline: install
	$(PY) benchmarks/bench_pipeline.py

bench-invert: install
	$(PY) benchmarks/bench_invert.py

# The committed pgrid bench results (docs/benchmarks.md, "pgrid bench").
bench-results: install
	$(VENV)/bin/pgrid bench --end-to-end --report docs/bench/bench.json --csv docs/bench/bench.csv \
	  --plot docs/bench/bench.png > docs/bench/bench.txt

# pgrid against its peers (docs/benchmarks.md, "Against ParticleGrid and libmolgrid").
# Only pgrid unless interpreters that import the peers are given:
#   make bench-peers PG_PY=/path/to/particlegrid/venv/bin/python MG_PY=$(MG_VENV)/bin/python
# PEERS_ARGS passes more options, e.g. PEERS_ARGS="--json docs/bench/peers.json".
PG_PY ?=
MG_PY ?=
PEERS_ARGS ?=
MG_VENV ?= build/venv-molgrid
bench-peers: install
	$(PY) benchmarks/bench_peers.py $(if $(PG_PY),--particlegrid-python $(PG_PY)) \
	  $(if $(MG_PY),--molgrid-python $(MG_PY)) $(PEERS_ARGS)

# libmolgrid's CPU build from PyPI (its wheels need numpy < 2).
peers-venv:
	$(PYTHON) -m venv $(MG_VENV)
	$(MG_VENV)/bin/python -m pip --disable-pip-version-check install --quiet molgrid 'numpy<2'
	$(MG_VENV)/bin/python -c "import molgrid; print('molgrid', molgrid.__version__)"

clean:
	rm -rf $(VENV) build dist *.egg-info
