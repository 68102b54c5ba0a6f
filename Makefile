# One command for everything CI checks: `make check`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install check fmt lint types test test-systemd bench demo run diagrams

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
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

# The unit under a real systemd (PID 1 in a systemd-nspawn container); needs root,
# systemd-container and debootstrap. CI runs it as its own step.
test-systemd: install
	$(BIN)/pytest -q -m systemd tests/system/test_systemd_boot.py

# Every benchmark, with its printed figures; LOYALTYD_BENCH_DATABASE_URL (an admin DSN) to use a
# server instead of an embedded Postgres.
bench: install
	$(PY) -m bench.bench_passkit
	$(PY) -m bench.bench_sync $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_import $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_birthday_explain $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_campaign $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_fairness $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_takeover $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_fleet $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_messages $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_wallet $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_console $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_history $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))
	$(PY) -m bench.bench_units $(if $(LOYALTYD_BENCH_DATABASE_URL),--database-url $(LOYALTYD_BENCH_DATABASE_URL))

demo: install
	$(BIN)/loyaltyd demo

run: install
	$(BIN)/loyaltyd run

diagrams: install
	$(PY) docs/diagrams/row_path.py

# docs/schema.sql, the schema the migrations in sql/ build, dumped from a temporary embedded
# Postgres; tests/store/test_schema_file.py fails until it is rewritten after a new migration.
.PHONY: schema
schema: install
	$(PY) -m daemon.store.schema
