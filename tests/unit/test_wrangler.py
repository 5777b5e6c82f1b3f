"""A Workers project's wrangler config read as bindingd config (bindingd.config.wrangler).

A table of wrangler configs as projects write them (TOML, JSON, JSONC with comments and
trailing commas, env sections, unsupported kinds, the shapes of Cloudflare's own docs), each
with what bindingd serves from it, and the mistakes with the one line each must give.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bindingd.config import ConfigError, load_config

# Cloudflare's docs, one example per binding type, in one file (wrangler.toml).
DOCS_TOML = """\
name = "my-worker"
main = "src/index.js"
compatibility_date = "2024-09-23"

[[kv_namespaces]]
binding = "MY_KV"
id = "e29b263ab50e42ce9b637fa8370175e8"

[[r2_buckets]]
binding = "MY_BUCKET"
bucket_name = "my-bucket"

[[d1_databases]]
binding = "DB"
database_name = "prod-d1-tutorial"
database_id = "4e1c28a9-90e4-41da-8b4b-6cf36e5abb29"

[[queues.producers]]
queue = "my-queue"
binding = "MY_QUEUE"

[[queues.consumers]]
queue = "my-queue"
max_batch_size = 10
max_batch_timeout = 30
max_retries = 10
dead_letter_queue = "my-queue-dlq"

[vars]
API_HOST = "example.com"
SERVICE_X_DATA = { URL = "service-x-api.dev.example", MY_ID = 123 }

[[durable_objects.bindings]]
name = "MY_DURABLE_OBJECT"
class_name = "MyDurableObject"

[[services]]
binding = "AUTH"
service = "auth-worker"

[ai]
binding = "AI"

[env.staging]
name = "my-worker-staging"

[[env.staging.kv_namespaces]]
binding = "MY_KV"
id = "0f2ac74b498b48028cb68387c421e279"

[env.staging.vars]
API_HOST = "staging.example.com"
"""

# wrangler.jsonc as `npm create cloudflare` writes it: comments, trailing commas, a URL
# holding "//" inside a string.
JSONC = """\
/**
 * For more details on how to configure Wrangler, refer to:
 * https://developers.cloudflare.com/workers/wrangler/configuration/
 */
{
\t"$schema": "node_modules/wrangler/config-schema.json",
\t"name": "app", // the Worker's name
\t"main": "src/index.ts",
\t"compatibility_date": "2025-06-01",
\t"kv_namespaces": [
\t\t{ "binding": "CACHE", "id": "abc" }, /* one namespace */
\t],
\t"d1_databases": [
\t\t{ "binding": "APP_DB", "database_name": "app", "database_id": "x", "migrations_dir": "db/migrations", },
\t],
\t"vars": { "ORIGIN": "https://example.com//path", "LITERAL": "${env:HOME}", },
}
"""


REMOTE_JSONC = '{\n  "kv_namespaces": [\n    {"binding": "CACHE", "id": "x", "remote": true}\n  ]\n}\n'
TWICE_TOML = '[[kv_namespaces]]\nbinding = "A"\n[[r2_buckets]]\nbinding = "A"\nbucket_name = "b"\n'
# An Ed25519 private key, its 32 raw bytes in base64 (not a real account's).
CF_KEY = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
CF_URL = "https://bindingd-proxy.example.workers.dev"
CF_VARIABLES = {"BINDINGD_CLOUDFLARE_URL": CF_URL, "BINDINGD_CLOUDFLARE_KEY": CF_KEY}
DOCS_QUEUE = {"queue": "my-queue", "max_retries": 10, "dead_letter_queue": "my-queue-dlq"}


@dataclass
class Case:
    id: str
    files: dict[str, str]
    env: str | None = None
    # name -> (type, options as served); None: expect an error
    served: dict[str, tuple[str, dict[str, object]]] | None = None
    values: dict[str, str] = field(default_factory=dict)  # var/secret values
    not_served: list[str] = field(default_factory=list)
    error: str = ""  # regex on the one-line error: file:line: key.path: message
    environ: dict[str, str] = field(default_factory=dict)
    remote: bool = False  # --remote
    backends: dict[str, str] = field(default_factory=dict)  # name -> "local" or the connection


CASES = [
    Case(
        "cloudflare-docs-toml",
        {"wrangler.toml": DOCS_TOML},
        served={
            "MY_KV": ("kv", {}),
            "MY_BUCKET": ("objects", {}),
            "DB": ("sql", {}),
            "MY_QUEUE": (
                "queue",
                {"queue": "my-queue", "max_retries": 10, "dead_letter_queue": "my-queue-dlq"},
            ),
            "API_HOST": ("var", {}),
            "SERVICE_X_DATA": ("var", {}),
        },
        values={
            "API_HOST": "example.com",
            "SERVICE_X_DATA": '{"URL": "service-x-api.dev.example", "MY_ID": 123}',
        },
        not_served=["MY_DURABLE_OBJECT", "AUTH", "AI"],
    ),
    Case(
        # An env section inherits no bindings and no vars (wrangler's rule).
        "env-section-inherits-no-bindings",
        {"wrangler.toml": DOCS_TOML},
        env="staging",
        served={"MY_KV": ("kv", {}), "API_HOST": ("var", {})},
        values={"API_HOST": "staging.example.com"},
    ),
    Case(
        "jsonc-comments-trailing-commas",
        {"wrangler.jsonc": JSONC, ".dev.vars": "API_TOKEN=tok-123\n"},
        served={
            "CACHE": ("kv", {}),
            "APP_DB": ("sql", {}),
            "ORIGIN": ("var", {}),
            "LITERAL": ("var", {}),
            "API_TOKEN": ("secret", {}),
        },
        # A wrangler value is taken as written: no bindingd ${...} reference in it is resolved.
        values={"ORIGIN": "https://example.com//path", "LITERAL": "${env:HOME}", "API_TOKEN": "tok-123"},
    ),
    Case(
        "dev-vars-of-the-env",
        {
            "wrangler.json": '{"name": "a", "env": {"staging": {"vars": {"A": "1"}}}}',
            ".dev.vars": "S=top\n",
            ".dev.vars.staging": "S=staging\n",
        },
        env="staging",
        served={"A": ("var", {}), "S": ("secret", {})},
        values={"S": "staging"},
    ),
    Case(
        "dot-env-when-no-dev-vars",
        {"wrangler.json": '{"name": "a"}', ".env": "S=from-dotenv\n"},
        served={"S": ("secret", {})},
        values={"S": "from-dotenv"},
    ),
    Case(
        "bindingd-yaml-beside-adds-and-overrides",
        {
            "wrangler.toml": DOCS_TOML,
            "bindingd.yaml": """\
                version: 1
                bindings:
                  API_HOST: { type: var, value: from-bindingd }
                  EXTRA: { type: kv }
                envs:
                  production: { protected: true }
            """,
        },
        served={
            "MY_KV": ("kv", {}),
            "MY_BUCKET": ("objects", {}),
            "DB": ("sql", {}),
            "MY_QUEUE": (
                "queue",
                {"queue": "my-queue", "max_retries": 10, "dead_letter_queue": "my-queue-dlq"},
            ),
            "API_HOST": ("var", {}),
            "SERVICE_X_DATA": ("var", {}),
            "EXTRA": ("kv", {}),
        },
        values={"API_HOST": "from-bindingd"},
        not_served=["MY_DURABLE_OBJECT", "AUTH", "AI"],
    ),
    Case(
        "remote-true-without-a-connection-says-what-to-add",
        {"wrangler.jsonc": REMOTE_JSONC},
        error=r"wrangler\.jsonc:3: kv_namespaces\.0\.remote: binding \"CACHE\" is remote: true "
        r".*no cloudflare connection is set: add a bindingd\.yaml beside wrangler\.jsonc .*kind: cloudflare"
        r".*or set BINDINGD_CLOUDFLARE_URL and BINDINGD_CLOUDFLARE_KEY$",
    ),
    Case(
        "remote-true-names-the-missing-variable",
        {"wrangler.jsonc": REMOTE_JSONC},
        environ={"BINDINGD_CLOUDFLARE_URL": CF_URL},
        error=r"wrangler\.jsonc:3: .*or set BINDINGD_CLOUDFLARE_KEY$",
    ),
    Case(
        "remote-true-through-the-variables",
        {"wrangler.jsonc": REMOTE_JSONC.replace("]\n}", '],\n  "r2_buckets": [{"binding": "B"}]\n}')},
        environ=CF_VARIABLES,
        served={"CACHE": ("kv", {"remote_binding": "CACHE"}), "B": ("objects", {})},
        backends={"CACHE": "cloudflare", "B": "local"},
    ),
    Case(
        # --remote: every binding of the env from the account; vars and secrets stay as they are.
        "every-binding-remote-on-the-bindingd-yaml-connection",
        {
            "wrangler.toml": DOCS_TOML,
            "bindingd.yaml": """\
                version: 1
                connections:
                  cf: { kind: cloudflare, url: "https://p.example.workers.dev", key: "${env:CF_KEY}" }
            """,
        },
        remote=True,
        environ={"CF_KEY": CF_KEY},
        served={
            "MY_KV": ("kv", {"remote_binding": "MY_KV"}),
            "MY_BUCKET": ("objects", {"remote_binding": "MY_BUCKET"}),
            "DB": ("sql", {"remote_binding": "DB"}),
            # The queue is the Worker's producer binding's; the consumer settings are kept.
            "MY_QUEUE": (
                "queue",
                {"remote_binding": "MY_QUEUE", "max_retries": 10, "dead_letter_queue": "my-queue-dlq"},
            ),
            "API_HOST": ("var", {}),
            "SERVICE_X_DATA": ("var", {}),
        },
        backends={"MY_KV": "cf", "MY_BUCKET": "cf", "DB": "cf", "MY_QUEUE": "cf", "API_HOST": "local"},
        not_served=["MY_DURABLE_OBJECT", "AUTH", "AI"],
    ),
    Case(
        "remote-with-several-cloudflare-connections",
        {
            "wrangler.jsonc": REMOTE_JSONC,
            "bindingd.yaml": """\
                version: 1
                connections:
                  a: { kind: cloudflare, url: "https://a.example.workers.dev", key: k }
                  b: { kind: cloudflare, url: "https://b.example.workers.dev", key: k }
            """,
        },
        error=r"wrangler\.jsonc:3: kv_namespaces\.0\.remote: .*several cloudflare connections \(a, b\)",
    ),
    Case(
        "remote-flag-without-a-connection-names-the-binding",
        {"wrangler.toml": '[[d1_databases]]\nbinding = "DB"\ndatabase_id = "x"\n'},
        remote=True,
        error=r"wrangler\.toml:2: d1_databases\.0: binding \"DB\" is --remote .*no cloudflare connection",
    ),
    Case(
        "remote-flag-needs-a-wrangler-file",
        {"bindingd.yaml": "version: 1\nbindings:\n  C: { type: kv }\n"},
        remote=True,
        error=r"bindingd\.yaml: --remote serves a wrangler file's bindings",
    ),
    Case(
        "invalid-json-names-the-line",
        {"wrangler.json": '{\n  "name": "a",\n  "vars": {"A": 1\n}\n'},
        error=r"wrangler\.json:\d+: invalid JSON",
    ),
    Case(
        "a-duplicate-json-key-names-its-line",
        {"wrangler.jsonc": '{\n  "vars": {"A": "1"},\n  // again\n  "vars": {"B": "2"}\n}\n'},
        error=r'wrangler\.jsonc:4: duplicate key "vars"',
    ),
    Case(
        "invalid-toml-names-the-line",
        {"wrangler.toml": 'name = "a"\n\n[vars\nA = 1\n'},
        error=r"wrangler\.toml:3: invalid TOML",
    ),
    Case(
        "a-binding-without-its-name",
        {"wrangler.toml": '[[r2_buckets]]\nbucket_name = "b"\n'},
        error=r"wrangler\.toml:1: r2_buckets\.0: missing \"binding\"",
    ),
    Case(
        "a-bad-binding-name-is-the-loader's-error-in-the-wrangler-file",
        {"wrangler.toml": '[[kv_namespaces]]\nbinding = "MY-KV"\nid = "x"\n'},
        error=r"wrangler\.toml:2: kv_namespaces\.0: invalid binding name \"MY-KV\"",
    ),
    Case(
        "twice-the-same-name",
        {"wrangler.toml": TWICE_TOML},
        error=r"binding \"A\" is defined twice",
    ),
    Case(
        "unknown-env",
        {"wrangler.toml": DOCS_TOML},
        env="nope",
        error=r'unknown env "nope" \(defined: dev, staging\)',
    ),
]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text) if name == "bindingd.yaml" else text)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_wrangler_configs(case: Case, tmp_path: Path) -> None:
    _write(tmp_path, case.files)
    if case.served is None:
        with pytest.raises(ConfigError) as err:
            load_config(cwd=tmp_path, env=case.env, environ=case.environ, remote=case.remote)
        assert re.search(case.error, str(err.value)), str(err.value)
        assert "\n" not in str(err.value)
        return
    config = load_config(cwd=tmp_path, env=case.env, environ=case.environ, remote=case.remote)
    for name, backend in case.backends.items():
        assert config.bindings[name].backend == backend, name
    got = {
        name: (b.type, {k: v for k, v in b.options.items() if k in case.served.get(name, ("", {}))[1]})
        for name, b in config.bindings.items()
    }
    assert got == case.served
    for name, value in case.values.items():
        assert config.bindings[name].value == value
    assert [n.name for n in config.not_served] == case.not_served


def test_the_search_follows_wranglers_order(tmp_path: Path) -> None:
    """wrangler.json is looked for all the way up before wrangler.jsonc, then wrangler.toml; a
    bindingd.yaml anywhere up the tree comes first."""
    (tmp_path / "wrangler.json").write_text('{"vars": {"FROM": "parent-json"}}')
    child = tmp_path / "app"
    child.mkdir()
    (child / "wrangler.toml").write_text('[vars]\nFROM = "child-toml"\n')
    assert load_config(cwd=child, environ={}).bindings["FROM"].value == "parent-json"
    (tmp_path / "bindingd.yaml").write_text("version: 1\nbindings:\n  FROM: { type: var, value: yaml }\n")
    assert load_config(cwd=child, environ={}).bindings["FROM"].value == "yaml"


def test_migrations_dir_is_the_d1_bindings_folder(tmp_path: Path) -> None:
    _write(tmp_path, {"wrangler.jsonc": JSONC})
    config = load_config(cwd=tmp_path, environ={})
    from bindingd.cli.migrations import folder

    assert folder(config, "APP_DB") == tmp_path / "db" / "migrations"
    (tmp_path / "wrangler.jsonc").write_text('{"d1_databases": [{"binding": "DB", "database_id": "x"}]}')
    assert folder(load_config(cwd=tmp_path, environ={}), "DB") == tmp_path / "migrations"


def test_the_variables_connection_is_resolved_and_kept_secret(tmp_path: Path) -> None:
    """BINDINGD_CLOUDFLARE_URL / _KEY make a connection named cloudflare, read like any other."""
    _write(tmp_path, {"wrangler.jsonc": REMOTE_JSONC})
    config = load_config(cwd=tmp_path, environ=CF_VARIABLES)
    connection = config.bindings["CACHE"].connection
    assert connection is not None
    assert (connection.name, connection.kind) == ("cloudflare", "cloudflare")
    assert connection.options["url"] == CF_URL
    assert connection.options["key"] == CF_KEY
    assert CF_KEY not in repr(config)
