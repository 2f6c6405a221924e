# The README's two commands: `make demo` and `make test`. Each creates .venv if missing and
# installs torch==2.13.0 (the CPU wheel) *before* the package, so pip never resolves a bare
# `torch` (which would download a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.torchssm-installed

.PHONY: demo test install

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Train the default LRU model on MNIST-1D (generated offline) and print test accuracy.
demo: $(STAMP)
	$(PY) -m torchssm train --config configs/mnist1d_lru.yaml

## Run the default test suite (slow tests excluded; `make test PYTEST_ARGS="-m slow"` for those).
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
