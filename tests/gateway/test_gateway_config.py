"""gateway.yaml: real files through bindingd's loader; every mistake is `file:line: key: message`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bindingd.config import ConfigError
from bindingd.gateway.config import load_gateway_config

GOOD = """\
version: 1
gateway:
  id: team-gw
  listen: "0.0.0.0:8443"
  tls: { cert: gw/server.pem, key: gw/server.key }
  signing_key: gw/signing.key
  state: { kind: sqlite, path: gw/state.sqlite3 }
  audit: { path: gw/audit.jsonl }
connections:
  pg: { kind: postgres, dsn: "${env:GW_PG_URL}" }
bindings:
  CACHE: { type: kv }
envs:
  staging:
    token_ttl: 3600
    bindings:
      APP_DB: { type: sql, connection: pg }
      JOBS: { type: queue }
      API_KEY: { type: secret, value: "${env:GW_API_KEY}" }
  production:
    protected: true
    bindings:
      APP_DB: { type: sql, connection: pg }
      ASSETS_BUCKET: { type: objects }
policy:
  groups: { developers: [alice, bob] }
  grants:
    - { who: "group:developers", env: staging, bindings: "*", actions: [read, write, send, consume] }
    - { who: "group:developers", env: production, bindings: [APP_DB, ASSETS_BUCKET], actions: [read] }
  denies:
    - { who: "user:bob", env: production, bindings: "*", actions: "*" }
"""
ENVIRON = {"GW_PG_URL": "postgresql://gw:pg-S3CRET@db.internal:5432/app", "GW_API_KEY": "api-S3CRET"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return load_gateway_config(write(tmp_path, text), environ=ENVIRON if environ is None else environ)


def error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'gateway.yaml'}:"), message
    assert "S3CRET" not in message
    return message.removeprefix(f"{tmp_path / 'gateway.yaml'}:")


def test_the_design_example_loads(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD)
    assert (config.id, config.listen) == ("team-gw", "0.0.0.0:8443")
    assert config.tls_cert == tmp_path / "gw/server.pem" and config.tls_key == tmp_path / "gw/server.key"
    assert config.signing_key == tmp_path / "gw/signing.key"
    assert (config.state.kind, config.state.path) == ("sqlite", tmp_path / "gw/state.sqlite3")
    assert config.audit.path == tmp_path / "gw/audit.jsonl"
    staging, production = config.envs["staging"], config.envs["production"]
    assert (staging.protected, staging.token_ttl) == (False, 3600)
    assert (production.protected, production.token_ttl) == (True, 900)  # the protected default
    assert list(staging.bindings) == ["CACHE", "APP_DB", "JOBS", "API_KEY"]
    assert list(production.bindings) == ["CACHE", "APP_DB", "ASSETS_BUCKET"]
    db = staging.bindings["APP_DB"]
    assert db.connection is not None and db.connection.options["dsn"] == ENVIRON["GW_PG_URL"]
    assert staging.bindings["API_KEY"].value == "api-S3CRET"
    assert "S3CRET" not in repr(config)
    policy = config.policy
    assert policy.protected_envs == {"production"}
    assert policy.decide("alice", (), "production", "APP_DB", "sql", "read").allow
    assert not policy.decide("bob", (), "production", "APP_DB", "sql", "read").allow
    assert policy.grants[1].where == "policy.grants[1]"


def test_defaults_state_audit_and_ttl(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        version: 1
        gateway: { id: gw, listen: "127.0.0.1:8443", tls: { cert: c.pem, key: k.pem }, signing_key: s.key }
        envs: { staging: { bindings: { CACHE: { type: kv } } } }
        """,
    )
    assert (config.state.kind, config.state.path) == ("sqlite", tmp_path / "gateway-state.sqlite3")
    assert config.audit.path is None  # stdout
    assert config.envs["staging"].token_ttl == 3600
    assert (
        config.policy.grants == ()
        and not config.policy.decide("a", (), "staging", "CACHE", "kv", "read").allow
    )


def test_postgres_state_and_stdout_audit(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        version: 1
        gateway:
          id: gw
          listen: "[::]:8443"
          tls: { cert: c.pem, key: k.pem }
          signing_key: s.key
          state: { kind: postgres, dsn: "${env:GW_PG_URL}" }
          audit: { stdout: true }
        envs: { staging: { token_ttl: 3, bindings: { CACHE: { type: kv } } } }
        """,
    )
    assert config.state.kind == "postgres" and config.state.dsn == ENVIRON["GW_PG_URL"]
    assert "S3CRET" not in repr(config.state)
    assert config.audit.path is None
    assert config.envs["staging"].token_ttl == 3


def gateway_with(**replace: str) -> str:
    """GOOD with one line replaced: {old line (stripped): new line}."""
    lines = GOOD.splitlines()
    for old, new in replace.items():
        index = next(i for i, line in enumerate(lines) if line.strip() == old)
        indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
        lines[index] = indent + new
    return "\n".join(lines) + "\n"


G0 = '- { who: "group:developers", env: staging, bindings: "*", actions: [read, write, send, consume] }'
G1 = '- { who: "group:developers", env: production, bindings: [APP_DB, ASSETS_BUCKET], actions: [read] }'


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"id: team-gw": "name: team-gw"}, '3: gateway.name: unknown key "name"'),
        ({'listen: "0.0.0.0:8443"': 'listen: "8443"'}, '4: gateway.listen: "8443" is not HOST:PORT'),
        ({"signing_key: gw/signing.key": "signing: gw/signing.key"}, "6: gateway.signing: unknown key"),
        (
            {"state: { kind: sqlite, path: gw/state.sqlite3 }": "state: { kind: redis }"},
            '7: gateway.state.kind: unknown state kind "redis" (allowed: sqlite, postgres)',
        ),
        (
            {"audit: { path: gw/audit.jsonl }": "audit: { stdout: false }"},
            "8: gateway.audit.stdout: expected true",
        ),
        (
            {"audit: { path: gw/audit.jsonl }": "audit: { path: a, stdout: true }"},
            '8: gateway.audit: give exactly one of "path"',
        ),
        (
            {"token_ttl: 3600": "token_ttl: 0"},
            "15: envs.staging.token_ttl: token_ttl must be between 1 and 86400 seconds, got 0",
        ),
        (
            {"token_ttl: 3600": 'token_ttl: "1h"'},
            "15: envs.staging.token_ttl: expected an integer (seconds), got a string",
        ),
        (
            {"token_ttl: 3600": "ttl: 3600"},
            '15: envs.staging.ttl: unknown key "ttl" (allowed: bindings, protected, token_ttl)',
        ),
        (
            {"JOBS: { type: queue }": "JOBS: { type: queue, connection: nope }"},
            '18: envs.staging.bindings.JOBS.connection: unknown connection "nope"',
        ),
        (
            {G0: G0.replace("env: staging", "env: stagin")},
            '28: policy.grants.0.env: unknown env "stagin" (defined: staging, production; or "*")',
        ),
        (
            {G1: G1.replace("ASSETS_BUCKET]", "ASSETS]")},
            '29: policy.grants.1.bindings.1: unknown binding "ASSETS" in env "production" '
            "(defined: CACHE, APP_DB, ASSETS_BUCKET)",
        ),
        (
            {G1: G1.replace("[read]", "[send]")},
            '29: policy.grants.1.actions.0: action "send" applies to none of the bindings this rule names '
            "(objects: read, write; sql: read, write)",
        ),
        (
            {G1: G1.replace("[read]", "[delete]")},
            '29: policy.grants.1.actions.0: unknown action "delete" '
            '(allowed: read, write, send, consume; or "*")',
        ),
        (
            {G0: G0.replace("group:developers", "team:developers")},
            '28: policy.grants.0.who: invalid who "team:developers"',
        ),
        (
            {G0: G0.replace(", actions: [read, write, send, consume]", "")},
            '28: policy.grants.0: missing required key "actions"',
        ),
        (
            {G0: G0.replace("who:", "user:")},
            '28: policy.grants.0.user: unknown key "user" (allowed: actions, bindings, env, who)',
        ),
        (
            {"groups: { developers: [alice, bob] }": "groups: { developers: alice }"},
            "26: policy.groups.developers: expected a list of user names, got a string",
        ),
    ],
)
def test_mistakes_name_file_line_and_key(tmp_path: Path, change: dict[str, str], expected: str) -> None:
    assert error(tmp_path, gateway_with(**change)).startswith(expected)


def test_required_keys_and_sections(tmp_path: Path) -> None:
    assert (
        error(tmp_path, "version: 1\nenvs: { s: {} }\n")
        == '1: missing required key "gateway" (its id, listen, tls and signing_key)'
    )
    no_id = (
        'version: 1\ngateway: { listen: "h:1", tls: { cert: c, key: k }, signing_key: s }\nenvs: { s: {} }\n'
    )
    assert error(tmp_path, no_id) == '2: gateway: missing required key "id"'
    no_key = (
        'version: 1\ngateway: { id: g, listen: "h:1", tls: { cert: c }, signing_key: s }\nenvs: { s: {} }\n'
    )
    assert error(tmp_path, no_key) == '2: gateway.tls: missing required key "key"'
    no_env = 'version: 1\ngateway: { id: g, listen: "h:1", tls: { cert: c, key: k }, signing_key: s }\n'
    assert error(tmp_path, no_env) == "1: a gateway serves at least one env: add one under envs:"
    daemon_key = no_env + "env: staging\nenvs: { s: {} }\n"
    assert error(tmp_path, daemon_key).startswith(
        '3: env: unknown key "env" (allowed: bindings, connections, envs'
    )


def test_every_env_is_resolved_and_secrets_stay_out_of_errors(tmp_path: Path) -> None:
    # production's binding needs GW_PG_URL as much as staging's: a gateway serves both.
    message = error(tmp_path, GOOD, environ={"GW_API_KEY": "api-S3CRET"})
    assert 'connections.pg.dsn: environment variable "GW_PG_URL" is not set' in message
    bad_url = {"GW_PG_URL": "not a url S3CRET", "GW_API_KEY": "k"}
    assert "connections.pg.dsn" in error(tmp_path, GOOD, environ=bad_url)


def test_a_wildcard_env_rule_checks_bindings_across_envs(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        gateway_with(
            **{G1: '- { who: "*", env: "*", bindings: [ASSETS_BUCKET, JOBS], actions: [read, send] }'}
        ),
    )
    rule = config.policy.grants[1]
    assert (rule.env, rule.bindings, rule.actions) == ("*", {"ASSETS_BUCKET", "JOBS"}, {"read", "send"})
    assert error(
        tmp_path, gateway_with(**{G1: '- { who: "*", env: "*", bindings: [NOPE], actions: "*" }'})
    ).startswith('29: policy.grants.1.bindings.0: unknown binding "NOPE" in any env')


def test_a_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gateway config not found; check the path given with --config"):
        load_gateway_config(tmp_path / "nope.yaml")
    (tmp_path / "gateway.yaml").write_text("")
    with pytest.raises(ConfigError, match=r'the file is empty; a gateway\.yaml starts with "version: 1"'):
        load_gateway_config(tmp_path / "gateway.yaml")
