"""`bindingd cloudflare deploy --dry-run`, as a user runs it: the proxy Worker's wrangler config
written from the env's bindings, wrangler's own dry run (offline) on it, the signing key made
with its file modes, the `connections:` entry printed, and the mistakes as one line each.

wrangler is the Node client's (`make node`); without it the tests that run it are skipped and
say so."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from support import bindingd_cli

from bindingd.config.wrangler import _strip_jsonc
from bindingd.providers.cloudflare.deploy import COMPATIBILITY_DATE, PROXY_JS, wrangler_command

HAS_WRANGLER = "cli.js" in " ".join(wrangler_command(os.environ))
needs_wrangler = pytest.mark.skipif(not HAS_WRANGLER, reason="wrangler not installed (make node)")

PROJECT = """\
version: 1
connections:
  cf: { kind: cloudflare, url: "https://bindingd-proxy-staging.acme.workers.dev", key: "${file:keys/cf.key}" }
bindings:
  CACHE: { type: kv }
  ASSETS: { type: objects }
  APP_DB: { type: sql }
  JOBS: { type: queue }
  SITE: { type: var, value: shop }
envs:
  staging:
    bindings:
      CACHE: { connection: cf, id: 0f2ac74b498b48028cb68387c421e279 }
      ASSETS: { connection: cf, bucket_name: assets-staging }
      APP_DB: { connection: cf, database_id: 4e1c28a9-90e4-41da-8b4b-6cf36e5abb29, database_name: shop }
      JOBS: { connection: cf, queue: jobs-staging, remote_binding: JOBS_Q }
"""

WRANGLER_JSONC = """\
{
  "name": "shop",
  "main": "src/index.ts",
  // one binding from the account, the rest local
  "kv_namespaces": [{ "binding": "SESSIONS", "id": "e29b263ab50e42ce9b637fa8370175e8", "remote": true }],
  "r2_buckets": [{ "binding": "UPLOADS", "bucket_name": "shop-uploads" }],
}
"""


def _read_jsonc(path: Path) -> dict[str, object]:
    data = json.loads(_strip_jsonc(path.read_text()))
    assert isinstance(data, dict)
    return data


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@needs_wrangler
def test_dry_run_writes_the_workers_config_and_the_key(tmp_path: Path) -> None:
    (tmp_path / "bindingd.yaml").write_text(PROJECT)
    done = bindingd_cli("cloudflare", "deploy", "--env", "staging", "--dry-run", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    folder = tmp_path / ".bindingd" / "cloudflare" / "staging"
    config = _read_jsonc(folder / "wrangler.jsonc")
    assert config["name"] == "bindingd-proxy-staging"
    assert (folder / str(config["main"])).resolve() == PROXY_JS.resolve()
    assert config["compatibility_date"] == COMPATIBILITY_DATE
    assert config["kv_namespaces"] == [{"binding": "CACHE", "id": "0f2ac74b498b48028cb68387c421e279"}]
    assert config["r2_buckets"] == [{"binding": "ASSETS", "bucket_name": "assets-staging"}]
    assert config["d1_databases"] == [
        {"binding": "APP_DB", "database_id": "4e1c28a9-90e4-41da-8b4b-6cf36e5abb29", "database_name": "shop"}
    ]
    # remote_binding names the Worker's binding; a var is no Worker binding.
    assert config["queues"] == {"producers": [{"binding": "JOBS_Q", "queue": "jobs-staging"}]}
    assert "vars" not in config

    # wrangler's own dry run ran on it: the bundle is there, and its command line was shown.
    assert (folder / "dist" / "proxy.js").is_file()
    assert re.search(
        r"running: .*wrangler.* deploy --config \S+wrangler\.jsonc --dry-run --outdir \S+dist", done.stdout
    )
    assert "dry run: nothing deployed, and the secret BINDINGD_PUBLIC_KEY was not put in" in done.stdout

    key = tmp_path / "keys" / "cf.key"
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert _mode(key) == 0o600
    assert _mode(key.parent) == 0o700
    assert "connections:\n" in done.stdout
    assert (
        '  cf: { kind: cloudflare, url: "https://bindingd-proxy-staging.acme.workers.dev", '
        'key: "${file:keys/cf.key}" }' in done.stdout
    )
    assert "PRIVATE KEY" not in done.stdout + done.stderr

    # A second deploy keeps the key.
    before = key.read_bytes()
    again = bindingd_cli("cloudflare", "deploy", "--env", "staging", "--dry-run", cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert key.read_bytes() == before
    assert "new signing key" not in again.stdout


@needs_wrangler
def test_a_workers_project_with_no_connection_yet(tmp_path: Path) -> None:
    """remote: true bindings of a wrangler file and no connection: a key under the config home,
    and the entry to put in a bindingd.yaml beside the wrangler file."""
    (tmp_path / "wrangler.jsonc").write_text(WRANGLER_JSONC)
    home = tmp_path / "home"
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": "",
        "BINDINGD_CLOUDFLARE_URL": "",
        "BINDINGD_CLOUDFLARE_KEY": "",
    }
    done = bindingd_cli("cloudflare", "deploy", "--dry-run", cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    config = _read_jsonc(tmp_path / ".bindingd" / "cloudflare" / "dev" / "wrangler.jsonc")
    assert config["kv_namespaces"] == [{"binding": "SESSIONS", "id": "e29b263ab50e42ce9b637fa8370175e8"}]
    assert "r2_buckets" not in config  # UPLOADS stays local
    key = home / ".config" / "bindingd" / "bindingd-proxy-dev.key"
    assert _mode(key) == 0o600 and _mode(key.parent) == 0o700
    assert (
        '  cloudflare: { kind: cloudflare, url: "https://bindingd-proxy-dev.<your-subdomain>.workers.dev", '
        'key: "${file:~/.config/bindingd/bindingd-proxy-dev.key}" }' in done.stdout
    )

    # --remote: every binding of the env.
    every = bindingd_cli("cloudflare", "deploy", "--dry-run", "--remote", cwd=tmp_path, env=env, timeout=120)
    assert every.returncode == 0, every.stdout + every.stderr
    config = _read_jsonc(tmp_path / ".bindingd" / "cloudflare" / "dev" / "wrangler.jsonc")
    assert config["r2_buckets"] == [{"binding": "UPLOADS", "bucket_name": "shop-uploads"}]


def _one_line_error(done: object, pattern: str) -> None:
    import subprocess

    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(pattern, done.stderr), done.stderr


def test_an_env_with_no_cloudflare_binding(tmp_path: Path) -> None:
    (tmp_path / "bindingd.yaml").write_text(PROJECT)
    done = bindingd_cli("cloudflare", "deploy", "--dry-run", cwd=tmp_path)
    _one_line_error(done, r'^bindingd: env "dev" has no binding on a cloudflare connection')
    assert not (tmp_path / ".bindingd").exists()
    assert not (tmp_path / "keys").exists()  # staging's key is made by staging's deploy only


def test_an_unknown_env(tmp_path: Path) -> None:
    (tmp_path / "bindingd.yaml").write_text(PROJECT)
    done = bindingd_cli("cloudflare", "deploy", "--env", "nope", "--dry-run", cwd=tmp_path)
    _one_line_error(done, r'bindingd\.yaml:\d+: envs: unknown env "nope" \(defined: dev, staging\)')


def test_a_binding_without_its_resource_id(tmp_path: Path) -> None:
    (tmp_path / "bindingd.yaml").write_text(
        PROJECT.replace("id: 0f2ac74b498b48028cb68387c421e279", "prefix: x")
    )
    done = bindingd_cli("cloudflare", "deploy", "--env", "staging", "--dry-run", cwd=tmp_path)
    # kv on cloudflare has no prefix option: the loader says so first; then without it, the id.
    _one_line_error(done, r"bindingd\.yaml:\d+: envs\.staging\.bindings\.CACHE")
    (tmp_path / "bindingd.yaml").write_text(PROJECT.replace(", id: 0f2ac74b498b48028cb68387c421e279", ""))
    done = bindingd_cli("cloudflare", "deploy", "--env", "staging", "--dry-run", cwd=tmp_path)
    _one_line_error(done, r'binding "CACHE" \(kv, env "staging"\) does not say which resource .*add id: ')


def test_a_wrangler_project_with_no_remote_binding(tmp_path: Path) -> None:
    (tmp_path / "wrangler.jsonc").write_text(WRANGLER_JSONC.replace(', "remote": true', ""))
    done = bindingd_cli("cloudflare", "deploy", "--dry-run", cwd=tmp_path, env={"HOME": str(tmp_path)})
    _one_line_error(done, r"no binding on a cloudflare connection.*mark them remote: true .*or pass --remote")
