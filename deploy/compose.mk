# Targets for the production-shaped docker-compose stack (docker-compose.yml).
# Included by the top-level Makefile (include deploy/*.mk).
#
#   make compose-config   validate docker-compose.yml; needs no Docker engine
#   make compose-up       build the image and start the stack, detached
#   make compose-down     stop and remove the containers; volumes are kept
#   make compose-down COMPOSE_DOWN_FLAGS=-v   ...and delete the data volumes
#
# COMPOSE picks Compose v2 (`docker compose`) when the Docker CLI has it, else
# the standalone `docker-compose` (Debian's package, v1.29), which is also what
# the tests validate with. Override it: make compose-up COMPOSE=docker-compose

COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_FILE_PATH ?= docker-compose.yml
COMPOSE_UP_FLAGS ?= --detach --build
COMPOSE_DOWN_FLAGS ?=

.PHONY: compose-up compose-down compose-config

compose-config:
	$(COMPOSE) -f $(COMPOSE_FILE_PATH) config -q

compose-up: compose-config
	$(COMPOSE) -f $(COMPOSE_FILE_PATH) up $(COMPOSE_UP_FLAGS)

compose-down:
	$(COMPOSE) -f $(COMPOSE_FILE_PATH) down --remove-orphans $(COMPOSE_DOWN_FLAGS)
