# Two commands on a fresh machine:  `make serve`  and  `make test`.
# Any Python 3.11 or newer: `make test PYTHON=python3.12`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HUB    := $(VENV)/.installed
TOOLS  := $(VENV)/.installed-test

.PHONY: setup serve test lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Parley needs Python 3.11 or newer; run make with PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The hub alone (what `make serve` needs).
$(HUB): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(HUB)

# The hub and the test tools.
$(TOOLS): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(HUB) $(TOOLS)

setup: $(TOOLS)

# The hub on the embedded SQLite store (./parley-data/), asyncio backend, http://127.0.0.1:8080
serve: $(HUB)
	$(BIN)/parley serve $(ARGS)

# Every test, under asyncio and trio, spread over the machine's cores; on PostgreSQL too when
# PARLEY_TEST_POSTGRES_URL is set. One process: make test ARGS="-p no:xdist ..." (or -n 0).
test: $(TOOLS)
	$(BIN)/pytest -n auto $(ARGS)

# ruff, as configured in pyproject.toml (CI runs it before the tests).
lint: $(TOOLS)
	$(BIN)/ruff check .

# Every benchmark scenario (bench/), under asyncio and trio; a smoke run with ARGS=--quick.
bench: $(TOOLS)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) parley-data .pytest_cache
