# Everything runs from a project-local virtualenv that these targets create on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: `make run` needs only the daemon and the Python client (RUNTIME); `make test`, `lint`
# and `bench` add the test and lint tools of the dev extras (DEV). Either order works.
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
PIP := $(BIN)/pip install -qq
# The client's build (setup.py, build_stubs.py) generates its gRPC stubs from proto/, so a changed
# .proto installs it again.
CLIENT_BUILD := clients/python/pyproject.toml clients/python/setup.py clients/python/build_stubs.py
PROTOS := $(wildcard proto/bindingd/v1/*.proto)
# The Node client: npm packages from its lock file; its build (npm run build, also its `prepare`
# script) generates the stubs from proto/ with buf and ts-proto and compiles TypeScript to dist/.
NODE_DIR := clients/node
NODE_MODULES := $(NODE_DIR)/node_modules/.installed
NODE_DIST := $(NODE_DIR)/dist/index.js
NODE_SRC := $(filter-out $(NODE_DIR)/src/gen/%,$(wildcard $(NODE_DIR)/src/*.ts))

.PHONY: setup run test lint bench clean node node-test

setup: $(DEV)

$(RUNTIME): pyproject.toml $(CLIENT_BUILD) $(PROTOS)
	@test -d $(VENV) || { echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "updating pip"
	@$(PIP) --upgrade pip
	@echo "installing bindingd and the Python client into $(VENV) (the client's build generates its gRPC stubs)"
	@$(PIP) -e clients/python -e .
	@touch $@

$(DEV): $(RUNTIME)
	@echo "installing the test and lint tools (the dev extras)"
	@$(PIP) -e clients/python -e '.[dev]'
	@touch $@

$(NODE_MODULES): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@echo "installing the Node client's packages (npm ci; its prepare script builds dist/)"
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	@touch $@

$(NODE_DIST): $(PROTOS) $(NODE_SRC) $(NODE_DIR)/tsconfig.json $(NODE_DIR)/buf.gen.yaml | $(NODE_MODULES)
	@echo "building the Node client (stubs, then TypeScript to dist/)"
	cd $(NODE_DIR) && npm run --silent build

node: setup $(NODE_DIST)

# Type-check against @cloudflare/workers-types, then the Node tests against real daemons.
node-test: node
	cd $(NODE_DIR) && npx tsc -p test/types/tsconfig.json && BINDINGD=$(CURDIR)/$(BIN)/bindingd node --test --test-concurrency=1 test/*.test.mjs

# The main job: the daemon on the example's local config, with the example worker against it.
run: $(RUNTIME)
	@echo "starting the daemon on examples/shop/bindingd.yaml and running examples/shop/worker.py under it"
	@$(BIN)/bindingd run --config examples/shop/bindingd.yaml -- $(BIN)/python examples/shop/worker.py

# The suite on two workers, a test file each at a time (their module fixtures and order kept),
# then, alone, the tests marked `serial` (they stop a shared server, or build the packages).
# The shared servers are started first, once, rather than by both workers at the same moment.
# `.venv/bin/pytest` alone runs everything in one process.
test: setup lint node-test
	$(BIN)/python tests/services.py
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -m serial

lint: setup
	$(BIN)/ruff check bindingd clients/python tests bench tools examples
	$(BIN)/ruff format --check bindingd clients/python tests bench tools examples
	$(BIN)/mypy bindingd/server bindingd/runtime.py bindingd/providers/base.py bindingd/providers/sql_cursor.py

# The Node part (bench/node) needs node; without it the Python parts run and say it was skipped.
bench: setup $(if $(shell command -v node),node)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) clients/python/bindingd_client/proto clients/python/build examples/shop/.bindingd
	rm -rf $(NODE_DIR)/node_modules $(NODE_DIR)/dist $(NODE_DIR)/src/gen
