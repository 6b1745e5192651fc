# energy-ledger: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ROOT ?= demo-results

.PHONY: demo test lint typecheck unit bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[report]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@ $(VENV)/.installed-dev $(VENV)/.installed

demo: $(VENV)/.installed
	rm -rf $(DEMO_ROOT)
	$(BIN)/energy-ledger simulate $(DEMO_ROOT) --experiments 6 --processes 4 --requests 300 --sweep
	$(BIN)/energy-ledger replay --report $(DEMO_ROOT)
	$(BIN)/energy-ledger show $(DEMO_ROOT)
	@echo "report: $(abspath $(DEMO_ROOT))/aggregated/sim-0000.report.html"
	@echo "comparison: $(abspath $(DEMO_ROOT))/aggregated/report.html"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(VENV)/.installed-bench
	$(BIN)/python scripts/bench.py

bench-quick: $(VENV)/.installed-bench
	$(BIN)/python scripts/bench.py --quick

clean:
	rm -rf $(VENV) $(DEMO_ROOT) .mypy_cache .pytest_cache .ruff_cache
