"""examples/compose: what can be checked without a container engine (none runs here).

The compose file parses and names files that exist; each image's Dockerfile copies only what
the repository has; and the two services' commands, run in this venv the way the images run
them (the daemon's `command` in a copy of the project, the worker's script with the compose
file's environment), work together: the worker uses the bindings and reads the daemon's
loopback-only metrics, as it would from the daemon's network namespace."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from bindingd_client import connect_sync
from support import DaemonProcess, bindingd_cli

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "examples" / "compose"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_compose_file_names_what_exists() -> None:
    doc = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    services = doc["services"]
    assert set(services) == {"bindingd", "worker"}
    for service in services.values():
        build = service["build"]
        context = (COMPOSE / build["context"]).resolve()
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file(), dockerfile
        for line in dockerfile.read_text().splitlines():
            copied = re.match(r"COPY\s+(.+)\s+\S+$", line)
            if copied:
                for source in copied.group(1).split():
                    assert (context / source).exists(), f"{dockerfile}: COPY {source}"
        for volume in service.get("volumes", []):
            assert (COMPOSE / volume.split(":")[0]).is_dir(), volume
    # The worker shares the daemon's network namespace: the metrics stay on loopback.
    assert services["worker"]["network_mode"] == "service:bindingd"
    command = services["bindingd"]["command"]
    assert command[:2] == ["serve", "--metrics"] and command[2].startswith("127.0.0.1:")
    # The project's config is valid.
    check = bindingd_cli("check", cwd=COMPOSE / "project")
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_services_commands_work_together(tmp_path: Path) -> None:
    doc = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    project = tmp_path / "project"
    shutil.copytree(COMPOSE / "project", project)
    metrics = f"127.0.0.1:{_free_port()}"
    command = [
        metrics if arg.startswith("127.0.0.1:") else arg for arg in doc["services"]["bindingd"]["command"]
    ]
    assert command[0] == "serve"
    daemon = DaemonProcess(
        project, *command[1:], env=doc["services"]["bindingd"].get("environment", {})
    ).start()
    try:
        environment = {
            **doc["services"]["worker"]["environment"],
            "BINDINGD_ENDPOINT": daemon.endpoint,  # /project is tmp_path here
            "METRICS_URL": f"http://{metrics}/metrics",
        }
        for expected in ("visits: 1", "visits: 2"):
            run = subprocess.run(
                [sys.executable, str(COMPOSE / "worker" / "worker.py")],
                env={"PATH": "/usr/bin:/bin", **environment},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert run.returncode == 0, run.stderr
            assert expected in run.stdout and "greeting: hello from the sidecar" in run.stdout
            assert re.search(r"metrics: [1-9]\d* bindingd_calls_total series", run.stdout), run.stdout
        with connect_sync(endpoint=daemon.endpoint) as env:
            assert env.CACHE.get("visits") == "2"
    finally:
        daemon.stop()
