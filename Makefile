# Routine jobs. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
# The suite mostly waits on the processes it starts: two workers (one test module each at a time,
# so a module's fixtures stay in one process) halve its time on two cores.
PYTEST_WORKERS ?= 2
USERS ?= 100
SPAWN_RATE ?= 50
DURATION ?= 30s
INSTANCES ?= 3
CLUSTER_PORT ?= 8080
SCENARIO ?= mixed
LOCUSTFILE = $(if $(filter mixed,$(SCENARIO)),loadtest/locustfile.py,loadtest/$(SCENARIO).py)

.DEFAULT_GOAL := help
.PHONY: help install deps run test lint typecheck unit fmt clean cluster cluster-down up down k8s-validate hadolint observability-sync loadtest bench bench-peers bench-delivery bench-api bench-cluster bench-auth bench-tracing bench-delta

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(STAMP) ## Create .venv from the pinned requirements

deps: ## Install missing Debian packages (redis-server, nginx-light, prometheus, chromium, nodejs, npm)
	@scripts/install-system-deps.sh

run: install deps ## One dev-mode instance on http://$(HOST):$(PORT) with the in-memory broker
	SWITCHBOARD_DEV_MODE=true $(BIN)/python -m app --host $(HOST) --port $(PORT)

lint: install ## ruff
	$(BIN)/ruff check app clients/python tests scripts bench loadtest gunicorn.conf.py
	$(BIN)/ruff format --check app clients/python tests scripts bench loadtest gunicorn.conf.py

typecheck: install ## mypy
	$(BIN)/mypy

unit: install ## Unit tests only (no processes)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test: install deps lint typecheck ## Everything CI runs: lint, types, the whole suite
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

cluster: install deps ## Local cluster, no Docker: redis + $(INSTANCES) instances + nginx on :$(CLUSTER_PORT) (OUTBOX=1: + PostgreSQL, relaying)
	$(BIN)/python scripts/cluster.py up --instances $(INSTANCES) --port $(CLUSTER_PORT) $(if $(filter 1,$(OUTBOX)),--outbox)

cluster-down: ## Stop exactly what `make cluster` started
	$(BIN)/python scripts/cluster.py down

.env:
	@umask 077; sed "s|^SWITCHBOARD_JWT_SECRET=.*|SWITCHBOARD_JWT_SECRET=$$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')|; s|^SWITCHBOARD_API_KEYS=.*|SWITCHBOARD_API_KEYS=$$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')|; s|^GRAFANA_ADMIN_PASSWORD=.*|GRAFANA_ADMIN_PASSWORD=$$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')|; s|^POSTGRES_PASSWORD=.*|POSTGRES_PASSWORD=$$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')|" .env.example > .env
	@echo "created .env with a random JWT secret, server API key, Grafana and PostgreSQL passwords"

up: .env ## docker compose: redis, app1-3, nginx on :8080, Prometheus :9090, Grafana :3000
	docker compose up --build -d

down: ## docker compose down
	docker compose down

k8s-validate: install ## Render both overlays and validate them (strict schemas + cross-references)
	$(BIN)/pytest -q tests/deploy/test_k8s.py

loadtest: install deps ## Locust vs `make cluster` (started if not running); SCENARIO=mixed|churn|storm
	@mkdir -p loadtest/results
	@started=0; if [ ! -f .cluster/state.json ]; then $(BIN)/python scripts/cluster.py up --instances $(INSTANCES) --port $(CLUSTER_PORT) || exit 1; started=1; fi; \
	PYTHONPATH=$(CURDIR) $(BIN)/locust -f $(LOCUSTFILE) --headless -u $(USERS) -r $(SPAWN_RATE) -t $(DURATION) \
	  --host http://127.0.0.1:$(CLUSTER_PORT) --only-summary \
	  --html loadtest/results/$(SCENARIO).html --json-file loadtest/results/$(SCENARIO); rc=$$?; \
	if [ $$started = 1 ]; then $(BIN)/python scripts/cluster.py down; fi; \
	$(BIN)/python -m loadtest.summary loadtest/results/$(SCENARIO).json --users $(USERS) || rc=1; \
	echo "report: loadtest/results/$(SCENARIO).html, summary: loadtest/results/$(SCENARIO).json"; exit $$rc

bench: install deps bench-peers ## Fan-out vs the two ceilings and peers, other transports, gunicorn workers; then bench-auth, bench-tracing, bench-delta -> docs/benchmarks.md, charts (~25 min)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.auth
	$(BIN)/python -m bench.tracing
	$(BIN)/python -m bench.delta

bench-delta: install deps ## Fossil deltas on a 4 KB dashboard stream: bytes per publication and server CPU per delivery, delta vs none -> docs/benchmarks.md (~1 min)
	$(BIN)/python -m bench.delta

bench-tracing: install deps ## Fan-out per app CPU-second with traces off, on at 1% sampling, and on for every message -> docs/benchmarks.md (~2 min)
	$(BIN)/python -m bench.tracing

bench-auth: install ## Handshake CPU per token algorithm (RS256, PS256, ES256, EdDSA) vs HS256 -> docs/benchmarks.md (~1 min)
	$(BIN)/python -m bench.auth

bench-peers: ## npm ci the Node peers from bench/peers/package-lock.json (skipped with a note without npm)
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix bench/peers --no-audit --no-fund --loglevel=error; \
	else echo "note: npm not found; make bench will skip the Node peers"; fi

bench-api: install deps ## Server API: presence of 10,000 members, disconnect on 3 instances -> docs/benchmarks.md; a 1,000-client storm through the connect proxy -> docs/proxies.md (~2 min)
	$(BIN)/python -m bench.server_api
	$(BIN)/python -m bench.proxy_storm

bench-cluster: install deps ## One Redis vs a 3-shard Redis Cluster: Redis CPU per shard, fan-out -> docs/benchmarks.md (~2 min)
	$(BIN)/python -m bench.cluster

bench-delivery: install deps ## History cost, crash recovery, churn and storms at scale, the outbox relay -> docs/delivery.md (~12 min)
	$(BIN)/python -m bench.delivery
	$(BIN)/python -m bench.churn
	$(BIN)/python -m bench.outbox

observability-sync: install ## Regenerate the Grafana dashboard and its k8s copies from scripts/observability.py
	$(BIN)/python scripts/observability.py

hadolint: install ## Lint the Dockerfile
	$(BIN)/hadolint Dockerfile

fmt: install ## Format and autofix
	$(BIN)/ruff format app clients/python tests scripts bench loadtest gunicorn.conf.py
	$(BIN)/ruff check --fix app clients/python tests scripts bench loadtest gunicorn.conf.py

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache clients/js/node_modules clients/js/dist
