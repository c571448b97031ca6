# Two commands for a newcomer on a fresh machine:
#   make demo   — install meterdesk into .venv and run the demo (SQLite, no external services)
#   make test   — install with the test tools and run the whole test suite
# `make lint` runs ruff, mypy --strict and the import contracts (CI runs it too).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/meterdesk demo

# One pytest worker per core (at most 4): the suite waits on fsync, PostgreSQL and sockets as much
# as on Python, and every test has its own SQLite file, PostgreSQL schema and MQTT topics.
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist worksteal

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) meterdesk-data .pytest_cache .mypy_cache .ruff_cache .hypothesis
