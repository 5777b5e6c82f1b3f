"""Shared set-up of the packaging tests: a clean copy of the repository and the tools to build it.

The copy holds the files a clone has (tracked, plus new ones not ignored), none of what `make`
generated in this checkout (stubs, dist/, node_modules, .venv), so a build that silently relied on
them fails here as it would for a user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_NEEDED = "needs node and npm on the PATH"


def run(args: list[str | Path], cwd: Path | None = None, timeout: float = 300, **env: str) -> str:
    """Run a command, return its stdout; on failure the assertion shows its whole output."""
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def clone_files(dest: Path) -> Path:
    listed = run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO)
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file():  # a file deleted in the work tree but still tracked is skipped
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


@pytest.fixture(scope="session")
def clean_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clone_files(tmp_path_factory.mktemp("clone") / "bindingd")


@pytest.fixture(scope="session")
def node_built(clean_repo: Path) -> Path:
    """clients/node of the clean copy after `npm ci` (whose `prepare` script builds dist/)."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip(NODE_NEEDED)
    node = clean_repo / "clients" / "node"
    run(["npm", "ci", "--no-audit", "--no-fund"], cwd=node)
    return node


def make_venv(path: Path) -> Path:
    """A fresh virtualenv with the pip that `python -m venv` gives a user; returns its bin/."""
    run([sys.executable, "-m", "venv", path])
    return path / "bin"
