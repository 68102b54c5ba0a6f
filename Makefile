# One command for everything CI checks: `make check`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install check fmt lint types test bench demo

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

fmt: install
	$(BIN)/ruff format daemon tests bench

lint: install
	$(BIN)/ruff format --check daemon tests bench
	$(BIN)/ruff check daemon tests bench

types: install
	$(BIN)/mypy

test: install
	$(BIN)/pytest -q

check: lint types test

bench: install
	$(PY) bench/run_all.py

demo: install
	$(BIN)/loyaltyd demo
