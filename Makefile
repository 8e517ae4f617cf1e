# Routine jobs. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install deps run test lint typecheck unit integration fmt clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(STAMP) ## Create .venv from the pinned requirements

deps: ## Install missing Debian packages (redis-server, nginx-light, prometheus, chromium)
	@scripts/install-system-deps.sh

run: install deps ## One dev-mode instance on http://$(HOST):$(PORT) with the in-memory broker
	SWITCHBOARD_DEV_MODE=true $(BIN)/python -m app --host $(HOST) --port $(PORT)

lint: install ## ruff
	$(BIN)/ruff check app tests
	$(BIN)/ruff format --check app tests

typecheck: install ## mypy
	$(BIN)/mypy

unit: install ## Unit tests only (no processes)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test: install deps lint typecheck ## Everything CI runs: lint, types, the whole suite
	$(BIN)/pytest $(PYTEST_ARGS)

fmt: install ## Format and autofix
	$(BIN)/ruff format app tests
	$(BIN)/ruff check --fix app tests

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
