# Fresh machine: `make tune` (set up + quick tune) or `make test` (set up + tests).
# torch is installed first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
export TORCHINDUCTOR_CACHE_DIR ?= $(CURDIR)/.inductor-cache

.PHONY: setup test tune bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,ray]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

tune: setup
	$(BIN)/xlstm-autotune tune --quick

bench: setup
	$(BIN)/python benchmarks/cpu_prefill.py

clean:
	rm -rf $(VENV) .inductor-cache .pytest_cache
