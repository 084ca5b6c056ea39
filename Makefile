# Personal Agent — the two commands are `make up` and `make test`.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= /var/tmp/pa-target
CARGO ?= cargo
BINS := svc-gateway svc-runs svc-models svc-tools svc-memory svc-worker

.PHONY: help bootstrap stack build up down status test test-unit lint fmt verify bench clean-test-dbs web

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

bootstrap: ## install what is missing (apt, Python venv, npm test deps, cargo-nextest)
	@scripts/stack.sh install
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest

stack: bootstrap ## start Postgres+pgvector, Redis and Temporal
	@scripts/stack.sh up

build: bootstrap web ## build the six services (and the web app)
	$(CARGO) build $(addprefix --bin ,$(BINS))

# The web app (served by svc-gateway at /): rebuilt when web/dist is missing or older than a source.
WEB_SRC := $(shell find web/src web/public -type f 2>/dev/null) $(wildcard web/index.html web/package.json web/package-lock.json web/vite.config.ts web/tsconfig.json)

web: web/dist/index.html ## build the web app (npm ci + npm run build in web/) when missing or stale

web/dist/index.html: $(WEB_SRC)
	cd web && { [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund; } && npm run build

up: stack build ## install, build, start the stack and the mesh, print the URL
	@scripts/mesh.sh up

down: ## stop the mesh and the stack
	@scripts/mesh.sh down
	@scripts/stack.sh down

status: ## what runs
	@scripts/stack.sh status
	@scripts/mesh.sh status

clean-test-dbs: ## drop databases left by interrupted test runs (older than two hours)
	@eval "$$(scripts/stack.sh env)"; cutoff=$$(( $$(date +%s) - 7200 )); \
	for db in $$("$$PA_PG_BIN/psql" "$$DATABASE_URL" -Atc "select datname from pg_database where datname ~ '^pa_e2e_[0-9]+_' and split_part(datname, '_', 3)::bigint < $$cutoff" 2>/dev/null); do \
	  "$$PA_PG_BIN/psql" "$$DATABASE_URL" -qc "drop database if exists $$db with (force)" >/dev/null; done

test: stack clean-test-dbs ## run every test against the real stack
	@eval "$$(scripts/stack.sh env)"; export DATABASE_URL REDIS_URL TEMPORAL_ADDRESS; \
	$(CARGO) nextest run --workspace --no-fail-fast --no-tests=fail

lint: ## rustfmt + clippy (warnings are errors) + cargo deny (deny.toml)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@CARGO=$(CARGO) scripts/deny.sh

fmt:
	$(CARGO) fmt --all

verify: lint test ## everything CI should care about

bench: stack ## every benchmark table: first token (inline, durable), costs as work grows, streams, relay, memory search, sizing
	@eval "$$(scripts/stack.sh env)"; export DATABASE_URL REDIS_URL TEMPORAL_ADDRESS PA_EMBED_MODEL_DIR; \
	$(CARGO) build -p pa-bench --release && \
	for table in "first-token --runs 300" "durable --runs 200" "costs --runs 100" "streams" "streams --grpc" "relay --runs 200" "memory" "embed --runs 300" "sizing --streams 100,250,500"; do \
	  echo; echo "## pa-bench $$table ($$(date -u +%F), $$(nproc) cores)"; \
	  $(CARGO) run -q -p pa-bench --release -- $$table || exit 1; \
	done
