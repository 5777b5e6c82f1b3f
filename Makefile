# Everything runs from a project-local virtualenv that these targets create on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STUBS := clients/python/bindingd_client/proto/__init__.py
PROTOS := $(wildcard proto/bindingd/v1/*.proto)
# The Node client: npm packages from its lock file, stubs from proto/, TypeScript built to dist/.
NODE_DIR := clients/node
NODE_MODULES := $(NODE_DIR)/node_modules/.installed
NODE_GEN := $(NODE_DIR)/src/gen/bindingd/v1/kv.ts
NODE_DIST := $(NODE_DIR)/dist/index.js
NODE_SRC := $(wildcard $(NODE_DIR)/src/*.ts)

.PHONY: setup run test lint bench clean node node-test

setup: $(STUBS)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python -e '.[dev]'
	touch $@

$(STUBS): $(STAMP) $(PROTOS) tools/gen_proto.py
	$(BIN)/python tools/gen_proto.py

$(NODE_MODULES): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $@

$(NODE_GEN): $(STAMP) $(NODE_MODULES) $(PROTOS) tools/gen_proto.py
	$(BIN)/python tools/gen_proto.py --node

$(NODE_DIST): $(NODE_GEN) $(NODE_SRC) $(NODE_DIR)/tsconfig.json
	cd $(NODE_DIR) && npx tsc -p tsconfig.json

node: setup $(NODE_DIST)

# Type-check against @cloudflare/workers-types, then the Node tests against real daemons.
node-test: node
	cd $(NODE_DIR) && npx tsc -p test/types/tsconfig.json && BINDINGD=$(CURDIR)/$(BIN)/bindingd node --test --test-concurrency=1 test/*.test.mjs

# The main job: the daemon on the example's local config, with the example worker against it.
run: setup
	$(BIN)/bindingd run --config examples/shop/bindingd.yaml -- $(BIN)/python examples/shop/worker.py

test: setup lint node-test
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check bindingd clients/python tests bench tools examples
	$(BIN)/ruff format --check bindingd clients/python tests bench tools examples

# The Node part (bench/node) needs node; without it the Python parts run and say it was skipped.
bench: setup $(if $(shell command -v node),node)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) clients/python/bindingd_client/proto examples/shop/.bindingd
	rm -rf $(NODE_DIR)/node_modules $(NODE_DIR)/dist $(NODE_DIR)/src/gen
