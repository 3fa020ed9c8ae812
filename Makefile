# The two commands: `make demo` and `make test`. Each sets up what it needs on a fresh clone.
# For developers, `make test-fast`: ruff, then the unit and in-process web tests (no lab, no browser).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: demo test test-fast lint clean help

help:
	@echo "make demo [ARGS=--no-serve]   stand MovR up, load it, measure it, show it"
	@echo "make test                     ruff and the whole pytest suite"
	@echo "make test-fast                ruff, unit and in-process web tests: no lab, browser or server process"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "MovR needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-runtime

demo: $(VENV)/.installed-runtime
	$(BIN)/movr demo $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

test: lint
	$(BIN)/pytest

# Markers (pyproject.toml): `slow` starts a server process or runs for seconds; `lab`, `browser` and
# `cockroach` need a whole lab, chromium or a cluster. tests/web runs the app in-process on one embedded
# PostgreSQL (tests/conftest.py).
FAST_TESTS := tests/unit tests/web
FAST_MARKERS := not slow and not lab and not browser and not cockroach

test-fast: lint
	$(BIN)/pytest $(FAST_TESTS) -m "$(FAST_MARKERS)"

clean:
	rm -rf $(VENV) run build *.egg-info
