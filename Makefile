# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# `make demo PORT=8011` (or CLINICSYNC_PORT=8011) serves on another port.
demo: $(STAMP)
	@$(BIN)/clinicsync demo $(if $(PORT),--port $(PORT))

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The browser tests drive Debian's Chromium and inject axe-core (from the npm registry, pinned by
# tests/e2e/package-lock.json). Installing Chromium needs root, as in CI and the dev container.
CHROMIUM := /usr/bin/chromium
AXE := tests/e2e/node_modules/axe-core/axe.min.js

browser: $(AXE)
	@test -x $(CHROMIUM) || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

$(AXE): tests/e2e/package.json tests/e2e/package-lock.json
	cd tests/e2e && npm ci --no-audit --no-fund
	touch $(AXE)

# The browser tests run on their own: Playwright's sync API keeps an event loop running in the
# worker's thread for as long as the browser lives, which the asyncio tests cannot share.
pytest: $(STAMP) browser
	$(BIN)/pytest -n $${PYTEST_WORKERS:-auto} --ignore=tests/e2e $(PYTEST_ARGS)
	$(BIN)/pytest -n $${PYTEST_WORKERS:-auto} tests/e2e $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.speed

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
