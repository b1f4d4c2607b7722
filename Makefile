# Two commands on a fresh machine:  `make serve`  and  `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup serve test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# The hub on the embedded SQLite store (./parley-data/), asyncio backend, http://127.0.0.1:8080
serve: $(STAMP)
	$(BIN)/parley serve $(ARGS)

# Every test, under asyncio and trio; on PostgreSQL too when PARLEY_TEST_POSTGRES_URL is set.
test: $(STAMP)
	$(BIN)/pytest $(ARGS)

# Every benchmark scenario (bench/), under asyncio and trio; a smoke run with ARGS=--quick.
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) parley-data .pytest_cache
