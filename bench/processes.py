"""The processes a bench part measures: started, and waited for until they serve."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT_S = 30.0
# After the ready file appears, a moment for the server to settle before it is timed.
SETTLE_S = 0.3


def start(
    command: list[str], cwd: Path, ready: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run `command` in `cwd` (with `env` added to the environment) and wait until it has made
    `ready` (its socket or endpoint file)."""
    environ = {**os.environ, **env} if env else None
    proc = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environ
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"bench: {' '.join(command)} did not start")
        time.sleep(0.05)
    time.sleep(SETTLE_S)
    return proc


def start_daemon(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`bindingd serve ARGS` on the bindingd.yaml in `root`, once it has written its endpoint."""
    command = [sys.executable, "-m", "bindingd", "serve", "--log-level", "warning", *args]
    return start(command, root, root / ".bindingd" / "endpoint", env)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)
