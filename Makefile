# segstream: the verbs a newcomer looks for. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup system-deps demo test lint format bench services-up services-down rules dashboard clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

system-deps: ## Install Java, Maven, redis-server, PostgreSQL, kcat, chromium and prometheus when missing (Debian)
	@scripts/install-system-deps.sh

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

setup: system-deps $(BIN)/.installed ## Create .venv with segstream (editable) and its dev tools

demo: setup ## Run the whole product end to end on this machine, then stop everything
	$(BIN)/segstream demo

test: setup ## Lint, then the whole test suite (starts and stops the Kafka and Redis it needs)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup ## Print the training and streaming benchmarks' figures
	$(BIN)/segstream bench training
	$(BIN)/segstream bench stream

services-up: setup ## Start the local Kafka and Redis (segstream services up)
	$(BIN)/segstream services up

services-down: setup ## Stop them
	$(BIN)/segstream services down

rules: setup ## Check and unit-test the Prometheus rules with promtool (also part of `make test`)
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts.test.yml

dashboard: setup ## Regenerate deploy/grafana/segstream.json from deploy/grafana/build.py
	$(BIN)/python deploy/grafana/build.py

clean: ## Remove local data, models and caches (not the venv)
	rm -rf .segstream .pytest_cache .ruff_cache models data test-artifacts
