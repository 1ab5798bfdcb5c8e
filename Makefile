# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
YOLO_ASSETS_HOME ?= $(CURDIR)/.yolo-assets
export YOLO_ASSETS_HOME
STAMP := $(VENV)/.installed

.PHONY: install lock demo test test-fast lint ui mlflow-ui bench stack clean-home

install: $(STAMP)

# Re-install only when the packaging or the locked versions change; pip serves torch from local disk here.
# constraints.txt pins every package to the versions tested (the Docker images install the same).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e '.[test]'
	touch $(STAMP)

# After changing dependencies in pyproject.toml: install, test, then write the versions down.
lock: install
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^yolo-assets'; } > constraints.lock.tmp
	mv constraints.lock.tmp constraints.txt

demo: install
	$(BIN)/yolo-assets demo

# Static checks, then every test (real Dagster instance and daemon, ultralytics training, MLflow); the 15
# slowest tests are listed at the end. The files are spread over 4 pytest-xdist workers, one file per worker
# at a time, the longest first (tests/conftest.py); PYTEST_WORKERS=0 runs them in one process.
PYTEST_WORKERS ?= 4
# The tests' scratch (homes, stores, SQLite instances, the test PostgreSQL) goes to memory when /dev/shm has
# 4 GB free (a run peaks at ~2.5 GB there): every SQLite commit of the suite's Dagster instances is an
# fsync, and the suite writes ~11 GB. Otherwise, and with TEST_TMPDIR= (empty), it stays in $$TMPDIR or /tmp.
TEST_TMPDIR ?= $(shell df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 && $$4 > 4000000 {print "/dev/shm/yolo-assets-tests"}')
test: lint
	$(if $(TEST_TMPDIR),mkdir -p $(TEST_TMPDIR) && TMPDIR=$(TEST_TMPDIR)) $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

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
