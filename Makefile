# One command for everything CI checks: `make check`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install check fmt lint types test bench demo run

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

# Every benchmark, with its printed figures; LOYALTYD_BENCH_DATABASE_URL (an admin DSN) to use a
# server instead of an embedded Postgres.
bench: install
	$(PY) -m bench.bench_passkit
	$(PY) -m bench.bench_sync $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_import $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_birthday_explain $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_campaign $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))

demo: install
	$(BIN)/loyaltyd demo

run: install
	$(BIN)/loyaltyd run
