# Everything runs from a project-local virtualenv that these targets create on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STUBS := clients/python/bindingd_client/proto/__init__.py
PROTOS := $(wildcard proto/bindingd/v1/*.proto)

.PHONY: setup run test lint bench clean

setup: $(STUBS)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python -e '.[dev]'
	touch $@

$(STUBS): $(STAMP) $(PROTOS) tools/gen_proto.py
	$(BIN)/python tools/gen_proto.py

# The main job: the daemon on the example's local config, with the example worker against it.
run: setup
	$(BIN)/bindingd run --config examples/shop/bindingd.yaml -- $(BIN)/python examples/shop/worker.py

test: setup lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check bindingd clients/python tests bench tools examples
	$(BIN)/ruff format --check bindingd clients/python tests bench tools examples

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) clients/python/bindingd_client/proto examples/shop/.bindingd
