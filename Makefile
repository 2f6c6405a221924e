# The README's two commands: `make demo` and `make test`. Each creates .venv if missing and
# installs torch==2.13.0 (the CPU wheel) *before* the package, so pip never resolves a bare
# `torch` (which would download a multi-GB CUDA build).
#
# The two install different things, each recorded by its own stamp file:
#   demo: the package alone (torch, numpy, numba, mnist1d, ...: all MNIST-1D training needs)
#   test: the package with the `dev` extra (pytest and every application extra, so no test skips)
# `dev` includes the core, so a test install also satisfies the demo.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.torchssm-core
TEST_STAMP := $(VENV)/.torchssm-dev
DEMO_ARGS ?=

.PHONY: demo test install

$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@ $(DEMO_STAMP)

install: $(TEST_STAMP)

## Train the default LRU model on MNIST-1D (generated offline) and print test accuracy
## (`make demo DEMO_ARGS="--set train.epochs=2"` for a shorter run).
demo: $(DEMO_STAMP)
	$(PY) -m torchssm train --preset mnist1d_lru $(DEMO_ARGS)

## Run the default test suite (slow tests excluded; `make test PYTEST_ARGS="-m slow"` for those).
test: $(TEST_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
