# roomcast: the verbs. `make run` and `make test` do all set-up on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := redis-server nginx-light
STAMP := $(VENV)/.installed
# The benchmark's own packages (bench/requirements.txt); lint needs them too, since mypy checks
# bench/ against the real picows and matplotlib.
BENCH_STAMP := $(VENV)/.bench-installed
# node/roomcast_dev (local clusters and Redis topologies for make run, the tests and the benchmark)
# is a checkout-only package: it is on the path here, never in the wheel or the image.
export PYTHONPATH := $(CURDIR)/node$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help run run-example example-deps test test-unit test-integration test-adversarial lint deps venv system-deps bench clean format chaos docs js-deps js-bundle test-js

# `make` alone runs the system, as it always did; `make help` lists the verbs.
.DEFAULT_GOAL := run

help: ## this list: every verb and what it does
	@awk -F ':[^#]*## ' '/^[a-zA-Z][a-zA-Z_-]*:[^#]*## / { printf "  make %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

run: deps ## start redis + 3 nodes + nginx on loopback; Ctrl-C stops them all
	ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn); $(PY) -m roomcast_dev.devcluster

test: deps deploy-deps browser-deps perf-deps js-deps example-deps ## every test: unit, integration (real redis-server, nginx, nodes), browser (Chromium), deployment (offline), the JS client, the docs site, the example backend (PostgreSQL)
	ulimit -n 65536 2>/dev/null || true; $(PY) -m pytest -q
	$(MAKE) test-js docs

# The JavaScript client (clients/js): Node.js >= 20 and npm. Its unit and integration tests (the
# browser tests of the page that runs on it are in pytest's tests/browser), the check that the
# page's bundle is up to date, and the docs' TypeScript samples.
JS_DIR := clients/js
JS_STAMP := $(JS_DIR)/node_modules/.installed

js-deps: $(JS_STAMP)

# Not installed here: Debian 12's nodejs is 18 (13's is 20). Checked before anything runs.
$(JS_STAMP): $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	@command -v npm >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)' || \
	  { echo "Node.js >= 20 and npm are needed (found: $$(node --version 2>/dev/null || echo none)); Debian 12's nodejs is 18"; exit 1; }
	cd $(JS_DIR) && npm ci --no-audit --no-fund
	touch $(JS_STAMP)

test-js: deps js-deps ## the JavaScript client's tests under Node.js (unit, integration, bundle check)
	cd $(JS_DIR) && ROOMCAST_PYTHON=$(abspath $(PY)) npm run test:node

# The chat page's copy of the package (loadbalancer/static/roomcast-client.js, committed: nginx
# serves the page without a build step), then the Kubernetes ConfigMap that embeds the page.
js-bundle: js-deps ## rebuild loadbalancer/static/roomcast-client.js and the k8s ConfigMap from clients/js
	cd $(JS_DIR) && npm run build
	$(PY) loadbalancer/docker/sync_k8s.py

# The documentation site (docs/, MkDocs + Material) into site/; any warning fails it.
docs: deps ## the documentation site into site/ (mkdocs --strict)
	$(VENV)/bin/mkdocs build --strict --quiet

# The example backend (examples/chat_backend, README "Example backend"): PostgreSQL in a temporary
# data directory, redis, 3 nodes calling its hooks, nginx and the app; prints the URL.
run-example: example-deps ## the example backend with PostgreSQL, redis, 3 nodes and nginx; Ctrl-C stops all
	ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn); $(PY) -m roomcast_dev.example

# Debian's postgresql (its own service stopped again: the tests and run-example start their own
# server, as a non-root user, in a temporary directory) and the example's Python packages.
example-deps: deps
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
	  echo "installing Debian packages: postgresql"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; \
	  $$SUDO service postgresql stop >/dev/null 2>&1 || true; \
	fi
	@$(PY) -c 'import starlette, uvicorn, asyncpg' 2>/dev/null || $(PY) -m pip install -q -e '.[example]'

test-unit: deps ## the unit tests (no sockets)
	$(PY) -m pytest -q tests/unit

test-integration: deps ## the integration tests (real redis-server, nginx, nodes)
	$(PY) -m pytest -q tests/integration

# The fault-injection soak (tests/chaos/README.md): a seeded schedule of faults under traffic,
# judged by the delivery checker; prints progress and a summary, writes
# tests/artifacts/chaos-<topology>-<seed>.json, exits 1 if the guarantee broke.
SEED ?= 1
DURATION ?= 120
TOPOLOGY ?= standalone
FAULTS ?=

chaos: deps ## fault-injection soak: SEED=n DURATION=s TOPOLOGY=standalone|sentinel|cluster FAULTS=kind,...
	ulimit -n 65536 2>/dev/null || true; $(PY) -m tests.chaos --seed $(SEED) --duration $(DURATION) \
	  --topology $(TOPOLOGY) $(if $(FAULTS),--faults $(FAULTS))

test-adversarial: deps browser-deps ## the attack suite (tests/adversarial) against a real cluster, default limits
	ulimit -n 65536 2>/dev/null || true; ROOMCAST_RUN_OPEN_FINDINGS=1 $(PY) -m pytest -q -s -m adversarial tests/adversarial tests/integration/test_attack_send_bound.py

lint: deps $(BENCH_STAMP) ## ruff and mypy --strict (node, tests and bench)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: deps ## ruff format and ruff check --fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

deps: system-deps venv ## Debian packages when missing, and the virtualenv

# Debian's redis-server and nginx, and python3 with its venv module (a fresh Debian has python3
# without ensurepip, and `python3 -m venv` then fails), installed only when missing (root, or
# sudo, needed then).
system-deps:
	@missing=""; \
	command -v $(PYTHON) >/dev/null || missing="$$missing python3"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing="$$missing redis-server"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	  for svc in redis-server nginx; do $$SUDO service $$svc stop >/dev/null 2>&1 || true; done; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

clean: ## remove the virtualenv and the tools' caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis node/*.egg-info

# The benchmark (bench/README.md): roomcast vs the article's Node.js server, same run, same machine.
BENCH_ARGS ?=

.PHONY: bench-deps bench-smoke dashboard-shot

$(BENCH_STAMP): bench/requirements.txt $(STAMP)
	$(PY) -m pip install -q -r bench/requirements.txt
	touch $(BENCH_STAMP)

bench-deps: deps perf-deps $(BENCH_STAMP) ## picows, matplotlib, py-spy; the baseline's npm packages
	@if command -v npm >/dev/null 2>&1; then \
	  [ -d bench/baseline/node_modules ] || (cd bench/baseline && npm ci --no-audit --no-fund); \
	else \
	  echo "npm not found: the Node.js baseline will be skipped (install nodejs >= 20 and npm)"; \
	fi

bench: bench-deps ## full benchmark (~10 min): bench/results/latest.{json,md,png}, profile.svg
	ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn); \
	$(PY) bench/run.py --name latest --profile 10 --syscalls $(BENCH_ARGS)

dashboard-shot: deploy-deps bench-deps ## docs/img/dashboard.png: the Grafana dashboard drawn from a live cluster scraped by Prometheus (~2.5 min)
	$(PY) -m roomcast_dev.dashboard_shot --out docs/img/dashboard.png

bench-smoke: bench-deps ## a seconds-long run of every scenario, both servers
	ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn); \
	$(PY) bench/run.py --smoke $(BENCH_ARGS)

# The capacity model (docs/capacity.md): after `make bench`, measure what it does not (Redis and
# node CPU per message, nginx per setup, Redis memory per room) and regenerate the model's
# defaults and the page's example; then check the model against a fan-out point measured now.
.PHONY: capacity-costs capacity-check
capacity-costs: bench-deps ## bench/results/unit_costs.json + roomcast capacity's defaults (~4 min)
	ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn); \
	$(PY) bench/unit_costs.py --generate

capacity-check: bench-deps ## the model vs a measured fan-out point: bench/results/capacity_check.md
	ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn); \
	$(PY) bench/capacity_check.py

# --- Deployment: Docker Compose, Kubernetes, observability -------------------------------------
.PHONY: test-deploy test-docker deploy-deps

# What the offline deployment tests need beyond `deps`: promtool (Debian's prometheus package,
# whose service is stopped again) and, until they are dev dependencies, kubernetes-validate/pyyaml.
deploy-deps: deps
	@if ! command -v promtool >/dev/null; then \
	  echo "installing Debian's prometheus (for promtool)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; \
	  $$SUDO service prometheus stop >/dev/null 2>&1 || true; \
	fi
	@$(PY) -c 'import kubernetes_validate, yaml' 2>/dev/null || $(PY) -m pip install -q 'kubernetes-validate>=1.32' 'pyyaml>=6'

test-deploy: deploy-deps ## offline: k8s schemas + kustomize + contracts, compose file, nginx drift, promtool, dashboard
	$(PY) -m pytest -q -rs tests/deploy

test-docker: deps ## Docker end-to-end of docker-compose.yml (starts dockerd via ../shared/docker/engine.sh)
	ROOMCAST_DOCKER_E2E=1 $(PY) -m pytest -q -s -rs tests/deploy/test_docker_e2e.py

# A .env for docker compose with fresh random secrets (kept if it exists).
compose-env: ## a .env for docker compose with fresh random secrets (kept if it exists)
	@if [ -f .env ]; then echo ".env exists; not overwriting"; else \
	  { echo "ROOMCAST_AUTH_SECRET=$$(python3 -c 'import secrets; print(secrets.token_hex(32))')"; \
	    echo "ROOMCAST_USER_ID_KEY=$$(python3 -c 'import secrets; print(secrets.token_hex(32))')"; \
	    echo "ROOMCAST_REDIS_PASSWORD=$$(python3 -c 'import secrets; print(secrets.token_hex(16))')"; \
	    echo "ROOMCAST_ALLOWED_ORIGINS="; \
	    echo "ROOMCAST_API_KEYS=$$(python3 -c 'import secrets; print(secrets.token_hex(24))')"; } > .env; \
	  chmod 600 .env; echo "wrote .env (tokens required: see docs/security.md)"; fi

# --- Browser tests (tests/browser): Debian's Chromium and its WebDriver, installed when missing ---
.PHONY: browser-deps perf-deps

# Linux perf: the benchmark's --syscalls counts (tests/integration/test_bench_smoke.py uses it).
# valgrind: bench/fanout_instructions.py's instruction counts (test_fanout_instructions_smoke.py).
perf-deps:
	@command -v perf >/dev/null || { \
	  echo "installing Debian packages: linux-perf"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends linux-perf; \
	}
	@command -v valgrind >/dev/null || { \
	  echo "installing Debian packages: valgrind"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends valgrind; \
	}

browser-deps: ## Debian's chromium and chromium-driver when missing
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
