# Developer entry points. The local infrastructure (Redis, Kafka, two FerretDB
# shards) is run by the launcher in deploy/local (`python -m deploy.local`);
# its state, data and logs live in .local/.
#
#   make setup   venv + redis-server + Kafka jars + FerretDB build (cached)
#   make up      start the infrastructure in the background (idempotent)
#   make run     setup, up, then all services in the foreground (Procfile, supervised:
#                a crashed service restarts); Ctrl-C stops them, the infrastructure stays
#   make test    setup, up, pytest
#   make down    stop the infrastructure
#   make bench-media  attachment store and upload/download figures (docs/media.md)
#   make dlq-replay TOPIC=...  replay a dead-letter topic into its source topic
#   make run-cluster   cluster mode: 3 Kafka brokers, HAProxy, 2 of each service (.local/cluster/)
#   make cluster-status / cluster-down   see or stop it
#   make chaos   a bounded chaos run against cluster mode (docs/reliability.md)
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed.stamp
LAUNCHER := $(PY) -m deploy.local
# Points the services at the launcher's ports (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL,
# MONGO_SHARDS); values already set in the environment win.
STACK_ENV = stack_env="$$($(LAUNCHER) env)" && set -a && eval "$$stack_env" && set +a

.PHONY: help setup up down status wait logs run test lint bench bench-media dlq-replay \
	run-cluster cluster-status cluster-down chaos

help:
	@sed -n 's/^#   //p' $(MAKEFILE_LIST) | head -20

$(VENV_STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(VENV)/bin/pip install -q uv
	$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	@touch $@

setup: $(VENV_STAMP)
	@$(LAUNCHER) setup

up: setup
	@$(LAUNCHER) up

down:
	@$(LAUNCHER) down

status:
	@$(LAUNCHER) status

wait:
	@$(LAUNCHER) wait

logs:
	@$(LAUNCHER) logs --follow

run: up
	@$(STACK_ENV) && exec $(PY) -m deploy.local.supervise --procfile Procfile

test: up
	@$(STACK_ENV) && $(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Replays a dead-letter topic into its source topic: make dlq-replay TOPIC=messages.commands.v1
# (DRY_RUN=1 lists only); see libs/bus/dlq_replay.py.
dlq-replay: $(VENV_STAMP)
	@test -n "$(TOPIC)" || { echo "usage: make dlq-replay TOPIC=<topic> [DRY_RUN=1]" >&2; exit 2; }
	@$(STACK_ENV) && $(PY) -m libs.bus.dlq_replay $(TOPIC) $(if $(DRY_RUN),--dry-run,)

bench: up
	@$(STACK_ENV) && $(PY) -m bench

bench-media: up
	@$(STACK_ENV) && $(PY) -m bench.media

# Cluster mode (deploy/local/cluster.py): its own ports and state directory, beside `make up`'s.
run-cluster: setup
	@$(PY) -m deploy.local.cluster up

cluster-status:
	@$(PY) -m deploy.local.cluster status

cluster-down:
	@$(PY) -m deploy.local.cluster down

# Kills each component in turn under load and checks what clients were told (bench/chaos).
# CHAOS_ARGS=--short for the small run; see `python -m bench.chaos --help`.
chaos: setup
	@$(PY) -m bench.chaos $(CHAOS_ARGS)

-include deploy/*.mk
