"""A Workers project with only its wrangler config: `bindingd serve` serves its bindings, as
they are named there, to a worker using the Python client (DESIGN.md, "Workers projects")."""

from __future__ import annotations

from pathlib import Path

import pytest
from bindingd_client import connect_sync
from support import DaemonProcess, bindingd_cli

WRANGLER_JSONC = """\
{
  // what `npm create cloudflare` writes, with the bindings of the docs' examples
  "name": "shop",
  "main": "src/index.ts",
  "compatibility_date": "2025-06-01",
  "kv_namespaces": [{ "binding": "SESSIONS", "id": "0f2ac74b498b48028cb68387c421e279" }],
  "r2_buckets": [{ "binding": "UPLOADS", "bucket_name": "shop-uploads" }],
  "d1_databases": [{ "binding": "DB", "database_name": "shop", "database_id": "x" }],
  "queues": {
    "producers": [{ "binding": "ORDERS", "queue": "orders" }],
    "consumers": [{ "queue": "orders", "max_retries": 3 }],
  },
  "vars": { "SHOP_NAME": "Le Shop" },
  "durable_objects": { "bindings": [{ "name": "CART", "class_name": "Cart" }] },
}
"""


def test_a_wrangler_only_project_is_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wrangler.jsonc").write_text(WRANGLER_JSONC)
    (tmp_path / ".dev.vars").write_text("STRIPE_KEY=sk_test_123\n")
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_products.sql").write_text(
        "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"
    )
    applied = bindingd_cli("migrations", "apply", "DB", cwd=tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    check = bindingd_cli("check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "CART (durable_objects): not served" in check.stdout

    daemon = DaemonProcess(tmp_path).start()
    try:
        # Found the way a worker finds it: from the project folder, no endpoint given.
        src = tmp_path / "src"
        src.mkdir()
        monkeypatch.chdir(src)
        with connect_sync() as env:
            env.SESSIONS.put("s1", "alice")
            assert env.SESSIONS.get("s1") == "alice"
            env.UPLOADS.put("a.txt", b"hello")
            got = env.UPLOADS.get("a.txt")
            assert got is not None and got.bytes() == b"hello"
            env.DB.prepare("INSERT INTO products (name) VALUES (?)").bind("pen").run()
            assert env.DB.prepare("SELECT name FROM products").first("name") == "pen"
            env.ORDERS.send({"order": 1})
            assert env.SHOP_NAME == "Le Shop"
            assert env.STRIPE_KEY == "sk_test_123"
    finally:
        daemon.stop()
    assert "sk_test_123" not in daemon.log_path.read_text()
