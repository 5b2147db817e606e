# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gsr-installed

.PHONY: install demo test benchmark clean

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

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

benchmark: $(STAMP)
	$(BIN)/python benchmarks/degradation_throughput.py
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf experiments results tb_logger .pytest_cache
