# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gsr-installed

.PHONY: install demo test test-all lint benchmark gpu-wheels clean

install: $(STAMP)

# Order matters: torch first (unpinned: a CUDA build where pip resolves one), then basicsr, whose
# sdist imports torch at build time (hence --no-build-isolation), then gsr itself with its test extras.
$(STAMP): setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install torch torchvision
	$(BIN)/pip install cython numpy
	$(BIN)/pip install --no-build-isolation basicsr==1.4.2
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gsr demo

# Two tiers: `make test` leaves out the tests marked slow (end-to-end runs, training, subprocesses: each over about
# 3 s on 2 quiet cores) and takes under 3 minutes there; `make test-all` runs every test, names the 15 slowest, and is
# what CI runs.
test: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=15

# The style gate CI runs before the tests: flake8 and isort with the settings of setup.cfg (`isort gsr tests benchmarks
# scripts` applies the import order).
lint: $(STAMP)
	$(BIN)/python -m flake8 gsr tests benchmarks scripts
	$(BIN)/python -m isort --check-only --diff gsr tests benchmarks scripts

benchmark: $(STAMP)
	$(BIN)/python benchmarks/degradation_throughput.py
	$(BIN)/python benchmarks/train_step.py

# What a GPU machine without network lacks (docs/BENCHMARKS.md, "GPU rows"): BasicSR built here (pure Python),
# lmdb and lpips for that machine's Python. Into .whl/ (ignored), which travels with the tree and which
# benchmarks/gpu_check.sh installs into a temporary site. GPU_PYTHON=3.11 makes the set for this machine (the
# rehearsal in tests/test_gpu_check.py, into WHEEL_DIR).
GPU_PYTHON ?= 3.12
WHEEL_DIR ?= .whl
gpu-wheels: $(STAMP)
	mkdir -p $(WHEEL_DIR)
	$(BIN)/pip wheel --no-deps --no-build-isolation -w $(WHEEL_DIR) basicsr==1.4.2
	$(BIN)/pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d $(WHEEL_DIR) lmdb==3.0.0 lpips==0.1.4

clean:
	rm -rf experiments results tb_logger .pytest_cache
