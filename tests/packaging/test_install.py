"""The README's "Use it from your project" commands, run as a user would, against a real daemon.

Each package installs into a fresh virtualenv or npm folder outside the repository, from a clean copy
of it (see conftest.py), with pip's build isolation (the stubs are made by the package builds, with
build requirements from PyPI). The daemon is the freshly installed `bindingd run`, and each client
puts and gets a KV value through it.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from .conftest import REPO, make_venv, run

# Builds and installs the packages: alone, after the parallel part of `make test`.
pytestmark = pytest.mark.serial

PLACEHOLDER = "/path/to/bindingd"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
CONFIG = "version: 1\nenv: dev\nbindings:\n  CACHE: { type: kv }\n"
PY_WORKER = """\
import sys
from bindingd_client import connect_sync

with connect_sync() as env:
    env.CACHE.put("greeting", sys.argv[1])
    print(f"{env._env_name}: {env.CACHE.get('greeting')}")
"""
NODE_WORKER = """\
import { connect } from "@bindingd/client";

const env = await connect();
await env.CACHE.put("greeting", process.argv[2]);
console.log(`${env.envName}: ${await env.CACHE.get("greeting")}`);
env.close();
"""


def _readme_commands() -> list[str]:
    """The shell lines of the README's "Use it from your project" section, without comments."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Use it from your project", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _readme_has(command: str) -> None:
    assert command in _readme_commands(), f"the README's 'Use it from your project' lacks: {command}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project: a bindingd.yaml with one KV binding, and a worker per language."""
    root = tmp_path_factory.mktemp("your-project")
    (root / "bindingd.yaml").write_text(CONFIG)
    (root / "worker.py").write_text(PY_WORKER)
    (root / "worker.mjs").write_text(NODE_WORKER)
    return root


@pytest.fixture(scope="module")
def daemon_bin(clean_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the daemon installed as the README says; its bin/."""
    command = f"pip install {PLACEHOLDER}/clients/python {PLACEHOLDER}"
    _readme_has(command)
    bin_dir = make_venv(tmp_path_factory.mktemp("daemon-venv") / "venv")
    run([bin_dir / "pip", "install", "-q", clean_repo / "clients/python", clean_repo])
    return bin_dir


def _under_daemon(daemon_bin: Path, project: Path, *worker: str | Path) -> str:
    return run([daemon_bin / "bindingd", "run", "--", *worker], cwd=project, timeout=120)


def test_daemon_installs_and_serves(daemon_bin: Path, project: Path) -> None:
    _readme_has("bindingd --version")
    assert run([daemon_bin / "bindingd", "--version"]) == f"bindingd {VERSION}\n"
    out = _under_daemon(
        daemon_bin, project, daemon_bin / "python", "worker.py", "hello from the daemon's venv"
    )
    assert out == "dev: hello from the daemon's venv\n"


def test_python_client_alone(clean_repo: Path, daemon_bin: Path, project: Path, tmp_path: Path) -> None:
    _readme_has(f"pip install {PLACEHOLDER}/clients/python")
    bin_dir = make_venv(tmp_path / "venv")
    run([bin_dir / "pip", "install", "-q", clean_repo / "clients/python"])
    listed = json.loads(run([bin_dir / "pip", "list", "--format=json"]))
    installed = {re.sub(r"[-_.]+", "-", p["name"]).lower() for p in listed} - {"pip", "setuptools"}
    # Worker code gets the client and its two dependencies (and grpcio's own), nothing of the daemon's.
    assert installed == {"bindingd-client", "grpcio", "protobuf", "typing-extensions"}
    out = _under_daemon(daemon_bin, project, bin_dir / "python", "worker.py", "hello from Python")
    assert out == "dev: hello from Python\n"


def test_node_client_from_the_folder(
    node_built: Path, daemon_bin: Path, project: Path, tmp_path: Path
) -> None:
    _readme_has(f"cd {PLACEHOLDER}/clients/node && npm ci")  # what the node_built fixture did
    _readme_has(f"cd your-project && npm install {PLACEHOLDER}/clients/node")
    app = _node_app(tmp_path, node_built)
    out = _under_daemon(daemon_bin, project, "node", app / "worker.mjs", "hello from the folder")
    assert out == "dev: hello from the folder\n"


def test_node_client_from_the_tarball(
    node_built: Path, daemon_bin: Path, project: Path, tmp_path: Path
) -> None:
    _readme_has(f"cd {PLACEHOLDER}/clients/node && npm pack")
    tarball = f"bindingd-client-{VERSION}.tgz"
    _readme_has(f"cd your-project && npm install {PLACEHOLDER}/clients/node/{tarball}")
    run(["npm", "pack", "--silent"], cwd=node_built)
    # The tarball alone: no repository beside it, so nothing resolves from its node_modules.
    moved = tmp_path / "elsewhere" / tarball
    moved.parent.mkdir()
    (node_built / tarball).rename(moved)
    app = _node_app(tmp_path, moved)
    assert (app / "node_modules/@grpc/grpc-js").is_dir() and not (app / "node_modules/typescript").exists()
    out = _under_daemon(daemon_bin, project, "node", app / "worker.mjs", "hello from the tarball")
    assert out == "dev: hello from the tarball\n"


def _node_app(tmp_path: Path, package: Path) -> Path:
    """A new npm project with `package` installed and the worker beside it (to resolve the import)."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "your-project", "private": true}\n')
    run(["npm", "install", "--no-audit", "--no-fund", package], cwd=app)
    (app / "worker.mjs").write_text(NODE_WORKER)
    return app
