"""The PHP client inside a real WordPress (Debian's `wordpress` package, PHP's built-in server,
the machine's MariaDB): the example must-use plugin (examples/wordpress) counts views in KV,
stores files in an objects bucket, reads a var and checks an upload key kept as a secret, all
through a real `bindingd serve`; the data is then seen from the Python client (issue 16)."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from bindingd_client import connect_sync
from support import MYSQL, DaemonProcess, write_project

WORDPRESS = Path("/usr/share/wordpress")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (WORDPRESS / "wp-settings.php").exists() or shutil.which("php") is None,
    reason="needs Debian's wordpress and php packages (.ci/run installs them)",
)

PROJECT = """
    version: 1
    bindings:
      VIEWS: { type: kv }
      FRAGMENTS: { type: kv }
      DB: { type: sql }
      UPLOADS: { type: objects }
      GREETING: { type: var, value: "Hello from bindingd" }
      UPLOAD_KEY: { type: secret, value: "${env:WP_UPLOAD_KEY}" }
"""

WP_CONFIG = """\
<?php
define('DB_NAME', '{database}');
define('DB_USER', 'root');
define('DB_PASSWORD', '');
define('DB_HOST', '127.0.0.1');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
{salts}
$table_prefix = 'wp_';
define('WP_DEBUG', false);
// This machine has no way out: no update checks, no cron calling the single-threaded server.
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_CONTENT_DIR', __DIR__ . '/wp-content');
define('WP_HOME', 'http://127.0.0.1:{port}');
define('WP_SITEURL', 'http://127.0.0.1:{port}');
if (!defined('ABSPATH')) {{
    define('ABSPATH', __DIR__ . '/');
}}
require_once ABSPATH . 'wp-settings.php';
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    def __init__(self, base: str) -> None:
        self.base = base

    def request(
        self, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def rest(self, method: str, route: str, data: bytes | None = None, headers: dict[str, str] | None = None):
        return self.request(method, "/?rest_route=" + urllib.parse.quote(route), data, headers)


@pytest.fixture
def wordpress(tmp_path: Path) -> Iterator[tuple[Site, DaemonProcess, str]]:
    import asyncio

    upload_key = secrets.token_hex(16)
    project = tmp_path / "project"
    write_project(project, PROJECT)
    daemon = DaemonProcess(project, env={"WP_UPLOAD_KEY": upload_key}).start()
    database = asyncio.run(MYSQL.create_database())
    site_root = tmp_path / "site"
    php = None
    try:
        # Debian's WordPress, copied (its own wp-config.php reads /etc/wordpress; ours is local).
        shutil.copytree(WORDPRESS, site_root, symlinks=False)
        port = _free_port()
        salts = "\n".join(
            f"define('{name}', '{secrets.token_hex(32)}');"
            for name in (
                "AUTH_KEY",
                "SECURE_AUTH_KEY",
                "LOGGED_IN_KEY",
                "NONCE_KEY",
                "AUTH_SALT",
                "SECURE_AUTH_SALT",
                "LOGGED_IN_SALT",
                "NONCE_SALT",
            )
        )
        (site_root / "wp-config.php").write_text(WP_CONFIG.format(database=database, salts=salts, port=port))
        plugins = site_root / "wp-content" / "mu-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "examples" / "wordpress" / "bindingd-demo.php", plugins)
        shutil.copytree(
            REPO / "clients" / "php",
            plugins / "bindingd-php",
            ignore=shutil.ignore_patterns("tests", "vendor", ".phpunit*"),
        )
        log = (tmp_path / "php.log").open("wb")
        php = subprocess.Popen(
            ["php", "-d", "opcache.enable_cli=1", "-S", f"127.0.0.1:{port}", "-t", str(site_root)],
            cwd=site_root,
            stdout=log,
            stderr=log,
            env={"PATH": "/usr/bin:/bin", "BINDINGD_ENDPOINT": daemon.endpoint},
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and php.poll() is None, (tmp_path / "php.log").read_text()
                time.sleep(0.1)
        site = Site(f"http://127.0.0.1:{port}")
        form = urllib.parse.urlencode(
            {
                "weblog_title": "bindingd demo",
                "user_name": "admin",
                "admin_password": "a-long-Passw0rd-for-tests",
                "admin_password2": "a-long-Passw0rd-for-tests",
                "pw_weak": "1",
                "admin_email": "admin@example.com",
                "blog_public": "0",
            }
        ).encode()
        status, page = site.request("POST", "/wp-admin/install.php?step=2", form)
        assert status == 200 and b"Success!" in page, page[:2000]
        yield site, daemon, upload_key
    finally:
        if php is not None:
            php.terminate()
            php.wait(10)
        daemon.stop()
        asyncio.run(MYSQL.drop_database(database))


def test_wordpress_reaches_every_binding_through_the_php_client(
    wordpress: tuple[Site, DaemonProcess, str],
) -> None:
    site, daemon, upload_key = wordpress
    for expected in (1, 2, 3):
        status, body = site.rest("POST", "/bindingd/v1/views")
        assert status == 200, body
        assert json.loads(body) == {"views": expected}
    status, body = site.rest("GET", "/bindingd/v1/greeting")
    assert status == 200 and json.loads(body) == {"greeting": "Hello from bindingd"}

    logo = bytes(range(256)) * 40
    status, body = site.rest("PUT", "/bindingd/v1/files/logo.png", logo, {"X-Upload-Key": "wrong"})
    assert status in (401, 403), body  # the secret is checked: nothing stored
    status, body = site.rest(
        "PUT", "/bindingd/v1/files/logo.png", logo, {"X-Upload-Key": upload_key, "Content-Type": "image/png"}
    )
    assert status == 200, body
    assert json.loads(body)["size"] == len(logo)
    status, body = site.rest("GET", "/bindingd/v1/files/logo.png")
    assert status == 200 and body == logo

    # A page fragment made once, then served from the KV cache.
    status, body = site.rest("GET", "/bindingd/v1/fragment/recent")
    assert status == 200 and "Hello world!" in json.loads(body)["html"]  # WordPress's first post
    status, again = site.rest("GET", "/bindingd/v1/fragment/recent")
    assert status == 200 and again == body

    # A table of the sql binding.
    for name, message in (("ada", "first!"), ("bob", "<b>hi</b> ' OR 1=1 --")):
        entry = json.dumps({"name": name, "message": message}).encode()
        status, answer = site.rest(
            "POST", "/bindingd/v1/guestbook", entry, {"Content-Type": "application/json"}
        )
        assert status == 200, answer
    status, listed = site.rest("GET", "/bindingd/v1/guestbook")
    assert status == 200 and [e["name"] for e in json.loads(listed)] == ["bob", "ada"]

    # The same data, seen by another language's client on the same daemon.
    with connect_sync(endpoint=daemon.endpoint) as env:
        assert "Hello world!" in env.FRAGMENTS.get("fragment:recent")
        listed_keys = env.FRAGMENTS.list().keys
        assert listed_keys[0].expiration is not None  # cached for a while, not for ever
        rows = env.DB.prepare("SELECT name, message FROM guestbook ORDER BY id").all().results
        assert rows == [
            {"name": "ada", "message": "first!"},
            {"name": "bob", "message": "<b>hi</b> ' OR 1=1 --"},
        ]
        assert env.VIEWS.get("views") == "3"
        stored = env.UPLOADS.get("logo.png")
        assert stored is not None and stored.bytes() == logo
        assert stored.http_metadata.get("content_type") == "image/png"
    assert upload_key not in daemon.log_path.read_text()
