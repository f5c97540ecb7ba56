# Set-up and everyday commands. Each target creates .venv when it is missing and installs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

export MESHLINE_HOME ?= $(CURDIR)/.meshline
export DAGSTER_HOME ?= $(MESHLINE_HOME)/dagster_home

ORDERS ?= 10000

.PHONY: install install-dev demo run test ui webhooks bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamp files reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/meshline demo

run: install
	$(BIN)/meshline run

test: install-dev
	$(BIN)/pytest

# Needs PostgreSQL: MESHLINE_TEST_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres.
bench: install
	$(BIN)/python benchmarks/ingest.py --orders $(ORDERS)

ui: install
	mkdir -p "$(DAGSTER_HOME)"
	test -f "$(DAGSTER_HOME)/dagster.yaml" || printf '# Embedded default: SQLite storage in this folder.\ntelemetry:\n  enabled: false\n' > "$(DAGSTER_HOME)/dagster.yaml"
	$(BIN)/dagster dev -w workspace.yaml

# The webhook receiver on 127.0.0.1:8787; run it beside `make ui`, whose daemon runs the inbox sensor.
webhooks: install
	$(BIN)/meshline webhooks serve

clean:
	rm -rf .meshline
