"""One version and one licence for the three packages; `bindingd --version`; what `make run` installs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from .conftest import REPO

ROOT_PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
CLIENT_PYPROJECT = tomllib.loads((REPO / "clients/python/pyproject.toml").read_text())
PACKAGE_JSON = json.loads((REPO / "clients/node/package.json").read_text())
PACKAGE_LOCK = json.loads((REPO / "clients/node/package-lock.json").read_text())


def _client_version() -> str:
    # The client's version is dynamic: read from bindingd_client/_version.py, as setuptools does.
    attr = CLIENT_PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "bindingd_client._version.__version__"
    text = (REPO / "clients/python/bindingd_client/_version.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert match, text
    return match.group(1)


def test_every_package_has_the_same_version() -> None:
    version = ROOT_PROJECT["version"]
    pin = next(d for d in ROOT_PROJECT["dependencies"] if d.startswith("bindingd-client"))
    assert {
        "root pyproject.toml": version,
        "daemon's pin of the client": pin.removeprefix("bindingd-client=="),
        "clients/python": _client_version(),
        "clients/node/package.json": PACKAGE_JSON["version"],
        "clients/node/package-lock.json": PACKAGE_LOCK["packages"][""]["version"],
        "installed bindingd": metadata.version("bindingd"),
        "installed bindingd-client": metadata.version("bindingd-client"),
    } == dict.fromkeys(
        (
            "root pyproject.toml",
            "daemon's pin of the client",
            "clients/python",
            "clients/node/package.json",
            "clients/node/package-lock.json",
            "installed bindingd",
            "installed bindingd-client",
        ),
        version,
    )


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flag_prints_the_package_version(flag: str) -> None:
    bindingd = shutil.which("bindingd", path=str(Path(sys.executable).parent))
    assert bindingd, "bindingd is not installed beside this python"
    done = subprocess.run([bindingd, flag], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"bindingd {ROOT_PROJECT['version']}\n", "")


def test_one_licence_file_shipped_by_each_package() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    # Each package ships its own copy: setuptools and npm take only files inside the package folder.
    assert (REPO / "clients/python/LICENSE").read_text() == text
    assert (REPO / "clients/node/LICENSE").read_text() == text
    assert ROOT_PROJECT["license"] == "Apache-2.0"
    assert ROOT_PROJECT["license-files"] == ["LICENSE"]
    assert CLIENT_PYPROJECT["project"]["license"] == "Apache-2.0"
    assert CLIENT_PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert PACKAGE_JSON["license"] == "Apache-2.0"
    assert PACKAGE_LOCK["packages"][""]["license"] == "Apache-2.0"
    assert "LICENSE" in PACKAGE_JSON["files"]


def test_generated_stubs_are_not_committed() -> None:
    generated = ["clients/python/bindingd_client/proto", "clients/node/src/gen", "clients/node/dist"]
    tracked = subprocess.run(
        ["git", "ls-files", *generated],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert tracked == ""


def _make_plan(target: str) -> str:
    """What `make TARGET` would run on a fresh clone (-B: as if nothing were built yet)."""
    done = subprocess.run(
        ["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_make_run_installs_only_the_runtime_and_says_so() -> None:
    plan = _make_plan("run")
    assert "pip install -qq -e clients/python -e .\n" in plan
    assert "[dev]" not in plan and "npm" not in plan
    steps = re.findall(r'^echo "([^"]+)"', plan, re.MULTILINE)
    assert steps == [
        "updating pip",
        "installing bindingd and the Python client into .venv (the client's build generates its gRPC stubs)",
        "starting the daemon on examples/shop/bindingd.yaml and running examples/shop/worker.py under it",
    ]


def test_make_test_adds_the_dev_extras() -> None:
    plan = _make_plan("setup")
    assert "-e clients/python -e .\n" in plan  # the runtime stamp first, so `make run` after it is done
    assert "-e clients/python -e '.[dev]'" in plan
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert any(d.startswith("build") for d in dev), "tests/packaging needs `build` from the dev extras"
