# segstream: the verbs a newcomer looks for. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
PYTEST_ARGS ?=
# `make test` runs the suite on this many pytest-xdist workers, each with a Kafka and a Redis of
# its own; the tests sharing an expensive fixture (Kafka Connect, the clusters) go to one worker
# (tests/parallel.py). 0 runs it serially in one process. How to pick it: README, Development.
TEST_WORKERS ?= 3
# The unit tier is CPU-bound: one worker per core of this 2-core machine halves its minute.
UNIT_WORKERS ?= 2
XDIST = -n $(TEST_WORKERS) $(if $(filter 0,$(TEST_WORKERS)),,--dist loadgroup)
LOCK := requirements.lock
# `make lock LOCK_ARGS=--upgrade` moves every pin to the newest release pyproject.toml allows.
LOCK_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup system-deps lock lock-check demo demo-cdc test test-unit lint format bench services-up \
	services-up-cdc services-down rules dashboard clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

system-deps: ## Install Java, Maven, redis-server, PostgreSQL, kcat, chromium and prometheus when missing (Debian)
	@scripts/install-system-deps.sh

# Every third-party package comes from the lock, hash-checked; the project itself goes on top
# with --no-deps, so nothing outside the lock is resolved. Re-made when the lock changes.
$(BIN)/.installed: $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

setup: system-deps $(BIN)/.installed ## Create .venv with segstream (editable) and its dev tools

demo: setup ## Run the whole product end to end on this machine, then stop everything
	$(BIN)/segstream demo

demo-cdc: setup ## The same from a PostgreSQL shop through Debezium (docs/cdc.md), then stop
	$(BIN)/segstream demo --cdc

test: lint ## Lint, then the whole suite on TEST_WORKERS workers (default 3), each with its own Kafka and Redis
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

test-unit: lock-check ## The unit tier only, on UNIT_WORKERS workers (default 2; 0: serial), no server started
	$(BIN)/pytest tests/unit -n $(UNIT_WORKERS) $(PYTEST_ARGS)

lint: lock-check ## Lock check, ruff check and format check, mypy (strict) on segstream/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

lock: $(BIN)/.installed ## Re-resolve pyproject.toml's ranges into requirements.lock (hashed)
	$(BIN)/uv pip compile -q pyproject.toml --extra dev --generate-hashes $(LOCK_ARGS) \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu -o $(LOCK)
	@$(MAKE) --no-print-directory setup

lock-check: setup ## Fail when the venv's packages differ from requirements.lock
	$(BIN)/python scripts/check_lock.py $(LOCK)

format: setup ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup ## Print the training and streaming benchmarks' figures
	$(BIN)/segstream bench training
	$(BIN)/segstream bench stream

services-up: setup ## Start the local Kafka and Redis (segstream services up)
	$(BIN)/segstream services up

services-up-cdc: setup ## Also PostgreSQL and Kafka Connect with Debezium (docs/cdc.md)
	$(BIN)/segstream services up --cdc

services-down: setup ## Stop them
	$(BIN)/segstream services down

rules: setup ## Check and unit-test the Prometheus rules with promtool (also part of `make test`)
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts.test.yml

dashboard: setup ## Regenerate deploy/grafana/segstream.json from deploy/grafana/build.py
	$(BIN)/python deploy/grafana/build.py

clean: ## Remove local data, models and caches (not the venv)
	rm -rf .segstream .pytest_cache .ruff_cache .mypy_cache models data test-artifacts
