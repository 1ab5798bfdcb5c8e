# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
YOLO_ASSETS_HOME ?= $(CURDIR)/.yolo-assets
export YOLO_ASSETS_HOME
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint ui mlflow-ui bench stack clean-home

install: $(STAMP)

# Re-install only when the packaging changes; pip serves torch from local disk here.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/yolo-assets demo

# Static checks, then every test (real Dagster instance and daemon, ultralytics training, MLflow).
test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The unit layer alone: pure functions, no instance, no training; seconds.
test-fast: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

ui: install
	$(BIN)/yolo-assets ui

mlflow-ui: install
	$(BIN)/yolo-assets mlflow-ui

# The production services on this machine, in a home of their own (its instance is PostgreSQL).
stack: install
	YOLO_ASSETS_HOME=$(CURDIR)/.yolo-assets-stack $(BIN)/yolo-assets stack up

bench: install
	$(BIN)/python benchmarks/bench_ingest.py

clean-home:
	rm -rf $(YOLO_ASSETS_HOME)
