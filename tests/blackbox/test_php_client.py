"""The PHP client (clients/php) under PHPUnit, against a real `bindingd serve` (issue 16).

Needs Debian's php-cli, php-curl and phpunit (.ci/run installs them); skipped without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import DaemonProcess, listen_port, write_project

ROOT = Path(__file__).resolve().parents[2]
PHP_CLIENT = ROOT / "clients" / "php"
CONFIG = """\
version: 1
env: dev
bindings:
  CACHE: { type: kv }
  FROZEN: { type: kv, access: read-only }
  ASSETS_BUCKET: { type: objects }
  APP_DB: { type: sql }
  JOBS: { type: queue }
  SITE_NAME: { type: var, value: "Example Shop" }
  API_KEY: { type: secret, value: "${env:SHOP_API_KEY}" }
"""


def _php_ready() -> bool:
    if shutil.which("php") is None or shutil.which("phpunit") is None:
        return False
    modules = subprocess.run(["php", "-m"], capture_output=True, text=True).stdout.split()
    return "curl" in modules and "json" in modules


pytestmark = pytest.mark.skipif(not _php_ready(), reason="php-cli, php-curl and phpunit are not installed")


def test_phpunit_against_a_real_daemon(tmp_path: Path) -> None:
    write_project(tmp_path, CONFIG, dev_vars="SHOP_API_KEY=s3cret\n")
    port = listen_port()
    daemon = DaemonProcess(
        tmp_path, "--listen", f"127.0.0.1:{port}", env={"BINDINGD_TOKEN": "php-t0ken"}
    ).start()
    try:
        env = {
            **os.environ,
            "BINDINGD_ENDPOINT": daemon.endpoint,
            "BINDINGD_TEST_PROJECT": str(tmp_path),
            "BINDINGD_TEST_HTTP_TCP": f"http://127.0.0.1:{port + 1}",
            "BINDINGD_TEST_TOKEN": "php-t0ken",
        }
        env.pop("BINDINGD_TOKEN", None)
        run = subprocess.run(
            ["phpunit", "--configuration", str(PHP_CLIENT / "phpunit.xml")],
            cwd=PHP_CLIENT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:] + daemon.logs()[-3000:]
        assert "OK (13 tests" in run.stdout, run.stdout[-2000:]  # every test ran, none skipped
    finally:
        assert daemon.stop() == 0
