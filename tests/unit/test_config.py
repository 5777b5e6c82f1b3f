"""bindingd.yaml loading: finding the file, env selection and overlay, interpolation, and one
test per mistake asserting the exact `file:line: key.path: message` the user sees."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bindingd import registry
from bindingd.config import Binding, Config, ConfigError, Location, find_config, load_config
from bindingd.config.schema import Option
from bindingd.registry import ProviderSpec

# The providers these tests assume, whatever the real table holds at the time: the loader is
# driven by the table, so the tests pin it. (kv, redis) and (sql, postgres) are left out on
# purpose, to test the "no provider yet" error.
PROVIDERS: dict[tuple[str, str], dict[str, Option]] = {
    ("kv", "local"): {},
    ("sql", "local"): {},
    ("objects", "local"): {},
    ("queue", "local"): {},
    ("var", "local"): {"value": Option(str, required=True, exact=True)},
    ("secret", "local"): {"value": Option(str, required=True, secret=True, exact=True)},
    ("objects", "s3"): {"bucket": Option(str, required=True)},
    ("sql", "sqlite"): {"pool": Option(int), "timeout": Option(float), "wal": Option(bool)},
    ("queue", "nats"): {"subject": Option(str)},
}


@pytest.fixture(autouse=True)
def providers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[tuple[str, str], ProviderSpec]]:
    pinned = {key: ProviderSpec(None, options) for key, options in PROVIDERS.items()}
    monkeypatch.setattr(registry, "PROVIDERS", pinned)
    yield pinned


def write(folder: Path, text: str, name: str = "bindingd.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path.resolve()


def load(path: Path, **kwargs: Any) -> Config:
    kwargs.setdefault("environ", {})
    return load_config(path, **kwargs)


def load_error(path: Path, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path, **kwargs)
    return info.value


def assert_error(err: ConfigError, file: Path, line: int | None, key_path: str, message: str) -> None:
    assert (err.file, err.line, err.key_path, err.message) == (file, line, key_path, message)
    where = str(file) if line is None else f"{file}:{line}"
    assert str(err) == ": ".join(part for part in (where, key_path, message) if part)
    assert "\n" not in str(err)


# -- finding the file -------------------------------------------------------------------------


def test_config_is_found_in_a_parent_of_cwd(tmp_path: Path) -> None:
    cfg = write(tmp_path / "project", "version: 1\n")
    nested = tmp_path / "project" / "src" / "worker"
    nested.mkdir(parents=True)

    assert find_config(nested) == cfg
    config = load_config(cwd=nested, environ={})
    assert config.path == cfg
    assert config.path.is_absolute()
    assert config.root == cfg.parent
    assert config.env == "dev"
    assert config.bindings == {}


def test_config_in_cwd_wins_over_parent(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\n")
    inner = write(tmp_path / "inner", "version: 1\n")
    assert load_config(cwd=tmp_path / "inner", environ={}).path == inner


def test_no_config_anywhere(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(cwd=empty, environ={})
    expected = (
        "no bindingd.yaml (or wrangler.json, wrangler.jsonc, wrangler.toml) in "
        f"{empty.resolve()} or any parent directory; create one or pass --config"
    )
    assert str(info.value) == expected
    assert info.value.file is None
    assert info.value.line is None


def test_explicit_path_is_used_and_relative_to_cwd(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\nbindings: { FOUND: { type: kv } }\n")
    other = write(tmp_path / "conf", "version: 1\nbindings: { OTHER: { type: kv } }\n", name="other.yaml")

    config = load_config(Path("conf/other.yaml"), cwd=tmp_path, environ={})
    assert config.path == other
    assert list(config.bindings) == ["OTHER"]


def test_explicit_path_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", environ={})
    assert (
        str(info.value)
        == f"{tmp_path.resolve() / 'nope.yaml'}: config file not found; check the path given with --config"
    )


# -- env selection, overlay, protection ------------------------------------------------------

ENVS = """
version: 1
env: staging
bindings:
  SITE_NAME: { type: var, value: top }
envs:
  dev:
    bindings:
      SITE_NAME: { value: dev }
  staging:
    bindings:
      SITE_NAME: { value: staging }
  qa:
    bindings:
      SITE_NAME: { value: qa }
"""


@pytest.mark.parametrize(
    ("env", "variable", "expected"),
    [
        ("qa", "dev", "qa"),  # --env wins over BINDINGD_ENV
        (None, "dev", "dev"),  # BINDINGD_ENV wins over the file's default
        (None, None, "staging"),  # the file's default
        (None, "", "staging"),  # an empty BINDINGD_ENV counts as unset
    ],
)
def test_env_precedence(tmp_path: Path, env: str | None, variable: str | None, expected: str) -> None:
    cfg = write(tmp_path, ENVS)
    environ = {} if variable is None else {"BINDINGD_ENV": variable}
    config = load(cfg, env=env, environ=environ)
    assert config.env == expected
    assert config.bindings["SITE_NAME"].value == expected
    assert config.bindings["SITE_NAME"].env == expected
    assert config.envs == ("dev", "qa", "staging")


def test_env_defaults_to_dev_without_a_default_in_the_file(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
        version: 1
        bindings:
          SITE_NAME: { type: var, value: top }
        envs:
          staging:
            bindings:
              SITE_NAME: { value: staging }
        """,
    )
    config = load(cfg)
    assert config.env == "dev"
    assert config.bindings["SITE_NAME"].value == "top"
    assert config.envs == ("dev", "staging")


OVERLAY = """
version: 1
connections:
  r2: { kind: s3, endpoint: "https://r2.example", timeout: 5 }
  db: { kind: sqlite, path: data/app.db }
bindings:
  ASSETS: { type: objects }
  APP_DB: { type: sql }
  REPORTS: { type: sql, connection: db, pool: 2, wal: true }
  CACHE: { type: kv }
envs:
  staging:
    bindings:
      ASSETS: { connection: r2, bucket: assets-staging, access: read-only }
      APP_DB:
        connection: db
        pool: 4
        timeout: 2
      REPORTS: { pool: 8 }
      JOBS: { type: queue }
"""


def test_overlay_merges_connection_access_and_options(tmp_path: Path) -> None:
    cfg = write(tmp_path, OVERLAY)
    config = load(cfg, env="staging")

    assets = config.bindings["ASSETS"]
    assert assets.type == "objects"
    assert assets.backend == "r2"
    assert assets.backend_kind == "s3"
    assert assets.access == "read-only"
    assert assets.options == {"bucket": "assets-staging"}
    assert assets.connection is not None
    assert assets.connection.options == {"endpoint": "https://r2.example", "timeout": 5.0}
    assert isinstance(assets.connection.options["timeout"], float)
    assert assets.connection.location == Location(cfg, 3, "connections.r2")

    app_db = config.bindings["APP_DB"]
    assert (app_db.backend, app_db.access, app_db.options) == (
        "db",
        "read-write",
        {"pool": 4, "timeout": 2.0},
    )
    # The override merges key by key over the top-level binding.
    assert config.bindings["REPORTS"].options == {"pool": 8, "wal": True}
    # One Connection per name, shared by the bindings that use it.
    assert app_db.connection is config.bindings["REPORTS"].connection

    cache = config.bindings["CACHE"]
    assert (cache.backend, cache.connection, cache.options) == ("local", None, {})
    assert config.bindings["JOBS"].type == "queue"


def test_top_level_bindings_are_the_default_env(tmp_path: Path) -> None:
    config = load(write(tmp_path, OVERLAY))
    assert config.env == "dev"
    assert list(config.bindings) == ["ASSETS", "APP_DB", "REPORTS", "CACHE"]  # no JOBS: staging only
    assert config.bindings["ASSETS"].backend == "local"
    assert config.bindings["REPORTS"].options == {"pool": 2, "wal": True}


def test_bindings_keep_file_order_and_env_only_bindings_come_last(tmp_path: Path) -> None:
    config = load(write(tmp_path, OVERLAY), env="staging")
    assert list(config.bindings) == ["ASSETS", "APP_DB", "REPORTS", "CACHE", "JOBS"]


def test_binding_location_is_where_the_env_writes_it(tmp_path: Path) -> None:
    cfg = write(tmp_path, OVERLAY)
    config = load(cfg, env="staging")
    assert config.bindings["CACHE"].location == Location(cfg, 9, "bindings.CACHE")
    assert config.bindings["ASSETS"].location == Location(cfg, 13, "envs.staging.bindings.ASSETS")
    assert config.bindings["APP_DB"].location == Location(cfg, 14, "envs.staging.bindings.APP_DB")
    assert str(config.bindings["JOBS"].location) == f"{cfg}:19: envs.staging.bindings.JOBS"


def test_protected_env(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
        version: 1
        env: local-dev
        bindings:
          CACHE: { type: kv }
        envs:
          staging: {}
          production:
            protected: true
          qa:
            protected: false
        """,
    )
    assert load(cfg).protected is False
    assert load(cfg).envs == ("local-dev", "production", "qa", "staging")
    assert load(cfg, env="staging").protected is False
    assert load(cfg, env="qa").protected is False
    production = load(cfg, env="production")
    assert production.protected is True
    assert production.bindings["CACHE"] == Binding(
        name="CACHE", type="kv", env="production", location=Location(cfg, 4, "bindings.CACHE")
    )


def test_type_change_in_env_is_rejected(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
        version: 1
        bindings:
          CACHE: { type: kv }
        envs:
          staging:
            bindings:
              CACHE:
                type: sql
        """,
    )
    err = load_error(cfg, env="staging")
    message = (
        'cannot change the type of binding "CACHE" from kv to sql; a binding has the same type in every env'
    )
    assert_error(err, cfg, 8, "envs.staging.bindings.CACHE.type", message)


def test_env_may_restate_the_same_type(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        "version: 1\nbindings: { C: { type: kv } }\nenvs: { s: { bindings: { C: { type: kv } } } }\n",
    )
    assert load(cfg, env="s").bindings["C"].type == "kv"


# -- interpolation -----------------------------------------------------------------------------


def test_env_lookup_order_process_then_dev_vars_then_dotenv(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'version: 1\nbindings:\n  V: { type: var, value: "${env:A}|${env:B}|${env:C}" }\n')
    write(tmp_path, "A=devvars\nB=devvars\n", name=".dev.vars")
    write(tmp_path, "A=dotenv\nB=dotenv\nC=dotenv\n", name=".env")
    config = load(cfg, environ={"A": "process"})
    assert config.bindings["V"].value == "process|devvars|dotenv"


def test_dotenv_format(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
        version: 1
        bindings:
          V: { type: var, value: "${env:PLAIN}/${env:EXPORTED}/${env:DQ}/${env:SQ}/${env:HASH}/${env:EMPTY}" }
          MULTI: { type: secret, value: "${env:MULTI}" }
        """,
    )
    (tmp_path / ".env").write_text(
        "# a comment\n"
        "\n"
        "PLAIN = plain value  # trailing comment\n"
        "export EXPORTED=exported\n"
        'DQ="double \\"quoted\\"\\tTAB" # comment\n'
        "SQ='single \\n #literal'\n"
        "HASH=a#b\n"
        "EMPTY=\n"
        'MULTI="-----BEGIN-----\n'
        "abc\n"
        '-----END-----"\n'
    )
    config = load(cfg)
    assert config.bindings["V"].value == 'plain value/exported/double "quoted"\tTAB/single \\n #literal/a#b/'
    assert config.bindings["MULTI"].value == "-----BEGIN-----\nabc\n-----END-----"


def test_malformed_dotenv_line_names_that_file_and_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'version: 1\nbindings:\n  K: { type: secret, value: "${env:API_KEY}" }\n')
    dotenv = write(tmp_path, "# keys\nOTHER=1\nthis line holds sk-live-123\n", name=".dev.vars")
    err = load_error(cfg)
    assert_error(err, dotenv, 3, "", "malformed line: expected KEY=VALUE (or a blank line, or a # comment)")
    assert "sk-live-123" not in str(err)


def test_unterminated_dotenv_quote(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'version: 1\nbindings:\n  K: { type: secret, value: "${env:API_KEY}" }\n')
    dotenv = write(tmp_path, "A=1\nAPI_KEY='abc\nB=2\n", name=".env")
    assert_error(load_error(cfg), dotenv, 2, "", "unterminated ' quote")


def test_file_reference(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "project",
        """
        version: 1
        bindings:
          CERT: { type: secret, value: "${file:secrets/cert.pem}" }
          HOME_KEY: { type: secret, value: "${file:~/.config/bindingd/key}" }
          ABSOLUTE: { type: var, value: "v=${file:@ABS@}" }
        """.replace("@ABS@", str(tmp_path / "abs.txt")),
    )
    write(tmp_path / "project" / "secrets", "line1\nline2\n\n", name="cert.pem")
    write(tmp_path / "home" / ".config" / "bindingd", "from-home\n", name="key")
    write(tmp_path, "no newline", name="abs.txt")
    config = load(cfg, environ={"HOME": str(tmp_path / "home")})
    assert config.bindings["CERT"].value == "line1\nline2\n"  # only ONE trailing newline is stripped
    assert config.bindings["HOME_KEY"].value == "from-home"
    assert config.bindings["ABSOLUTE"].value == "v=no newline"


def test_missing_file_reference(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'version: 1\nbindings:\n  K: { type: secret, value: "${file:secrets/k}" }\n')
    message = f"cannot read ${{file:secrets/k}} ({tmp_path.resolve() / 'secrets' / 'k'}): no such file"
    assert_error(load_error(cfg), cfg, 3, "bindings.K.value", message)


def test_escape_and_dollar_signs(tmp_path: Path) -> None:
    cfg = write(
        tmp_path, 'version: 1\nbindings:\n  V: { type: var, value: "a $${HOME} b $5 c $$ ${env:X}" }\n'
    )
    assert load(cfg, environ={"X": "x"}).bindings["V"].value == "a ${HOME} b $5 c $$ x"


def test_interpolated_numbers_and_booleans_are_converted(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
        version: 1
        connections:
          db: { kind: sqlite, path: "${env:DB_PATH}" }
        bindings:
          APP_DB: { type: sql, connection: db, pool: "${env:POOL}", timeout: "${env:T}", wal: "${env:WAL}" }
        """,
    )
    config = load(cfg, environ={"DB_PATH": "/tmp/x.db", "POOL": "8", "T": "1.5", "WAL": "TRUE"})
    app_db = config.bindings["APP_DB"]
    assert app_db.options == {"pool": 8, "timeout": 1.5, "wal": True}
    assert app_db.connection is not None
    assert app_db.connection.options == {"path": "/tmp/x.db"}


def test_yaml_numbers_are_accepted_as_strings_and_ints_as_floats(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
        version: 1
        bindings:
          ANSWER: { type: var, value: "42" }
          DB: { type: sql, connection: db, timeout: 3 }
        connections:
          db: { kind: sqlite, path: 1234 }
        """,
    )
    config = load(cfg)
    assert config.bindings["ANSWER"].value == "42"
    assert config.bindings["DB"].options == {"timeout": 3.0}
    assert config.bindings["DB"].connection is not None
    assert config.bindings["DB"].connection.options == {"path": "1234"}


UNUSED = """
version: 1
connections:
  staging-db: { kind: sqlite, path: "${env:STAGING_DB_PATH}" }
  unused: { kind: nats, url: "${env:NEVER_SET}" }
bindings:
  APP_DB: { type: sql }
envs:
  staging:
    bindings:
      APP_DB: { connection: staging-db }
"""


def test_unused_connection_with_missing_variable_loads(tmp_path: Path) -> None:
    config = load(write(tmp_path, UNUSED))
    assert config.bindings["APP_DB"].backend == "local"


def test_used_connection_with_missing_variable_fails(tmp_path: Path) -> None:
    cfg = write(tmp_path, UNUSED)
    message = (
        'environment variable "STAGING_DB_PATH" is not set '
        "(looked in the process environment, .dev.vars, .env)"
    )
    assert_error(load_error(cfg, env="staging"), cfg, 3, "connections.staging-db.path", message)


def test_unused_connection_is_still_checked(tmp_path: Path) -> None:
    cfg = write(tmp_path, UNUSED.replace("url:", "uri:"))
    assert_error(
        load_error(cfg),
        cfg,
        4,
        "connections.unused.uri",
        'unknown key "uri" (allowed: kind, resiliency, url)',
    )


def test_yaml_merge_keys(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
        version: 1
        connections:
          db: { kind: sqlite, path: a.db }
        bindings:
          A: &sqlite { type: sql, connection: db, pool: 2 }
          B: { <<: *sqlite, pool: 3 }
        """,
    )
    config = load(cfg)
    assert config.bindings["B"].options == {"pool": 3}
    assert config.bindings["B"].backend == "db"


# -- one test per mistake ---------------------------------------------------------------------

ERROR_CASES: list[Any] = [
    pytest.param(
        """
        version: 1
        binding:
          CACHE: { type: kv }
        """,
        {},
        2,
        "binding",
        'unknown key "binding" (allowed: bindings, connections, env, envs, version)',
        id="unknown-top-level-key",
    ),
    pytest.param(
        """
        version: 1
        connections:
          db:
            kind: sqlite
            paht: /tmp/x.db
        """,
        {},
        5,
        "connections.db.paht",
        'unknown key "paht" (allowed: kind, path, resiliency)',
        id="unknown-connection-key",
    ),
    pytest.param(
        """
        version: 1
        connections:
          r2: { kind: s3 }
        bindings:
          ASSETS: { type: objects, connection: r2, buckt: assets }
        """,
        {},
        5,
        "bindings.ASSETS.buckt",
        'unknown key "buckt" (allowed: access, bucket, connection, local, type)',
        id="unknown-binding-key",
    ),
    pytest.param(
        """
        version: 1
        envs:
          production:
            protect: true
        """,
        {},
        4,
        "envs.production.protect",
        'unknown key "protect" (allowed: bindings, gateway, protected)',
        id="unknown-env-key",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          CACHE: { type: kv }
        envs:
          staging:
            bindings:
              CACHE: { prefix: "c:" }
        """,
        {},  # checked while loading dev: every env is checked
        7,
        "envs.staging.bindings.CACHE.prefix",
        'unknown key "prefix" (allowed: access, connection, local, type)',
        id="unknown-key-in-other-env-override",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          SITE_NAME:
            type: var
            value:
              - a
        """,
        {},
        5,
        "bindings.SITE_NAME.value",
        "expected a string, got a list",
        id="string-option-gets-list",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          FLAG: { type: var, value: yes }
        """,
        {},
        3,
        "bindings.FLAG.value",
        "expected a string, got a boolean; quote it to write a string",
        id="string-option-gets-bool",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          V: { type: var, value: 0755 }
        """,
        {},
        3,
        "bindings.V.value",
        "expected a string, got an integer; quote it to write a string",
        id="var-value-octal-is-refused",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          V: { type: var, value: 1.50 }
        """,
        {},
        3,
        "bindings.V.value",
        "expected a string, got a number; quote it to write a string",
        id="var-value-decimal-is-refused",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          V: { type: secret, value: 42 }
        """,
        {},
        3,
        "bindings.V.value",
        "expected a string, got an integer; quote it to write a string",
        id="secret-value-int-secret-is-refused",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          V: { type: var, value: null }
        """,
        {},
        3,
        "bindings.V.value",
        "expected a string, got null; quote it to write a string",
        id="var-value-null-is-refused",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          V: { type: var, value: 2024-01-01 }
        """,
        {},
        3,
        "bindings.V.value",
        "expected a string, got a date; quote it to write a string",
        id="var-value-date-is-refused",
    ),
    pytest.param(
        """
        version: 1
        connections:
          db: { kind: sqlite, path: x.db }
        bindings:
          APP_DB: { type: sql, connection: db, pool: true }
        """,
        {},
        5,
        "bindings.APP_DB.pool",
        "expected an integer, got a boolean",
        id="int-option-gets-bool",
    ),
    pytest.param(
        """
        version: 1
        connections:
          db: { kind: sqlite, path: x.db }
        bindings:
          APP_DB: { type: sql, connection: db, pool: "4" }
        """,
        {},
        5,
        "bindings.APP_DB.pool",
        "expected an integer, got a string",
        id="int-option-gets-string",
    ),
    pytest.param(
        """
        version: 1
        connections:
          db: { kind: sqlite, path: "${env:DB_PATH}" }
        bindings:
          APP_DB: { type: sql, connection: db, pool: "${env:POOL}" }
        """,
        {"environ": {"DB_PATH": "/srv/hunter2.db", "POOL": "hunter3"}},
        5,
        "bindings.APP_DB.pool",
        'expected an integer, but "${env:POOL}" does not resolve to one',
        id="interpolated-int-does-not-parse",
    ),
    pytest.param(
        """
        version: 1
        envs:
          production:
            protected: "yes"
        """,
        {},
        4,
        "envs.production.protected",
        "expected a boolean (true or false), got a string",
        id="protected-not-bool",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          CACHE: kv
        """,
        {},
        3,
        "bindings.CACHE",
        "expected a mapping, got a string",
        id="binding-not-a-mapping",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          API_KEY: { type: secret, value: "${env:API_KEY}" }
        """,
        {"environ": {"API_KEYS": "sk-live-0000"}},
        3,
        "bindings.API_KEY.value",
        'environment variable "API_KEY" is not set (looked in the process environment, .dev.vars, .env)',
        id="missing-variable",
    ),
    pytest.param(
        """
        version: 1
        connections:
          staging-pg: { kind: postgres, dsn: "postgres://pg/app" }
          staging-r2: { kind: s3 }
        bindings:
          APP_DB: { type: sql }
        envs:
          staging:
            bindings:
              APP_DB: { connection: staging-pgg }
        """,
        {},  # found while loading dev too
        10,
        "envs.staging.bindings.APP_DB.connection",
        'unknown connection "staging-pgg" (defined: staging-pg, staging-r2)',
        id="unknown-connection",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          APP_DB: { type: sql, connection: pg }
        """,
        {},
        3,
        "bindings.APP_DB.connection",
        'unknown connection "pg" (none is defined)',
        id="unknown-connection-none-defined",
    ),
    pytest.param(
        """
        version: 1
        env: dev
        envs:
          staging: {}
          production: { protected: true }
        """,
        {"env": "stagin"},
        3,
        "envs",
        'unknown env "stagin" (defined: dev, production, staging)',
        id="unknown-env",
    ),
    pytest.param(
        """
        version: 1
        env: dev
        envs:
          staging: {}
        """,
        {"environ": {"BINDINGD_ENV": "prod"}},
        3,
        "envs",
        'unknown env "prod" (from BINDINGD_ENV) (defined: dev, staging)',
        id="unknown-env-from-variable",
    ),
    pytest.param(
        """
        version: 1
        connections:
          staging-redis: { kind: redis, url: "redis://r" }
        bindings:
          APP_DB: { type: sql }
        envs:
          staging:
            bindings:
              APP_DB: { connection: staging-redis }
        """,
        {"env": "staging"},
        9,
        "envs.staging.bindings.APP_DB.connection",
        'connection "staging-redis" is a redis connection, '
        "which cannot serve sql bindings (redis serves: kv)",
        id="kind-cannot-serve-type",
    ),
    pytest.param(
        """
        version: 1
        connections:
          staging-redis: { kind: redis, url: "redis://r" }
        bindings:
          CACHE: { type: kv, connection: staging-redis }
        """,
        {},
        5,
        "bindings.CACHE.connection",
        "bindingd has no provider for kv bindings on redis yet (available for kv: local)",
        id="no-provider",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          app-db: { type: sql }
        """,
        {},
        3,
        "bindings.app-db",
        'invalid binding name "app-db": use letters, digits and _, not starting with a digit '
        "(names become attributes in clients)",
        id="invalid-binding-name",
    ),
    pytest.param(
        """
        version: 1
        envs:
          staging:
            bindings:
              1DB: { type: sql }
        """,
        {},
        5,
        "envs.staging.bindings.1DB",
        'invalid binding name "1DB": use letters, digits and _, not starting with a digit '
        "(names become attributes in clients)",
        id="invalid-binding-name-in-env",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          CACHE: { access: read-only }
        """,
        {},
        3,
        "bindings.CACHE",
        'missing required key "type" (one of: kv, objects, queue, secret, sql, var)',
        id="missing-type",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          CACHE: { type: kv }
        envs:
          staging:
            bindings:
              JOBS: { access: read-only }
        """,
        {},
        7,
        "envs.staging.bindings.JOBS",
        'missing required key "type" '
        '("JOBS" is not a top-level binding, so env "staging" must give its type)',
        id="missing-type-env-only",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          CACHE: { type: cache }
        """,
        {},
        3,
        "bindings.CACHE.type",
        'unknown binding type "cache" (allowed: kv, objects, queue, secret, sql, var)',
        id="unknown-type",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          CACHE: { type: kv, access: ro }
        """,
        {},
        3,
        "bindings.CACHE.access",
        'unknown access "ro" (allowed: read-only, read-write)',
        id="unknown-access",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          SITE_NAME: { type: var }
        """,
        {},
        3,
        "bindings.SITE_NAME",
        'missing required key "value"',
        id="missing-var-value",
    ),
    pytest.param(
        """
        version: 1
        connections:
          pg:
            kind: postgres
            min_size: 1
        """,
        {},
        3,
        "connections.pg",
        'missing required key "dsn"',
        id="missing-connection-option",
    ),
    pytest.param(
        """
        version: 1
        connections:
          pg: { dsn: x }
        """,
        {},
        3,
        "connections.pg",
        'missing required key "kind" '
        "(one of: cloudflare, mysql, nats, postgres, rabbitmq, redis, s3, sqlite)",
        id="missing-kind",
    ),
    pytest.param(
        """
        version: 1
        connections:
          pg: { kind: postgress, dsn: x }
        """,
        {},
        3,
        "connections.pg.kind",
        'unknown connection kind "postgress" '
        "(allowed: cloudflare, mysql, nats, postgres, rabbitmq, redis, s3, sqlite)",
        id="unknown-kind",
    ),
    pytest.param(
        """
        version: 1
        connections:
          local: { kind: sqlite, path: x.db }
        """,
        {},
        3,
        "connections.local",
        '"local" means the embedded backend; name the connection otherwise',
        id="connection-named-local",
    ),
    pytest.param(
        """
        version: 1
        connections:
          unused: { kind: nats, url: "${vault:secret/nats}" }
        """,
        {},
        3,
        "connections.unused.url",
        'unknown reference "${vault:secret/nats}" '
        '(allowed: ${env:NAME}, ${file:PATH}; write "$${" for a literal "${")',
        id="unknown-reference-scheme",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          V: { type: var, value: "price: ${env:PRICE" }
        """,
        {},
        3,
        "bindings.V.value",
        'unterminated "${" (close the reference with "}", or write "$${" for a literal "${")',
        id="unterminated-reference",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          V: { type: var, value: "${env:MY-VAR}" }
        """,
        {},
        3,
        "bindings.V.value",
        'invalid variable name in "${env:MY-VAR}" (expected letters, digits and _)',
        id="invalid-variable-name",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          CACHE: { type: kv
          JOBS: { type: queue }
        """,
        {},
        4,
        "",
        "invalid YAML: did not find expected ',' or '}' (while parsing a flow mapping on line 3)",
        id="yaml-syntax-error",
    ),
    pytest.param(
        """
        version: 1
        bindings:
          CACHE: { type: kv }
          JOBS: { type: queue }
          CACHE: { type: kv }
        """,
        {},
        5,
        "bindings.CACHE",
        'duplicate key "CACHE" (first written on line 3); keep one',
        id="duplicate-key",
    ),
    pytest.param(
        """
        version: 2
        bindings: {}
        """,
        {},
        1,
        "version",
        "unsupported version 2 (this bindingd reads 1)",
        id="version-2",
    ),
    pytest.param(
        """
        version: "1"
        """,
        {},
        1,
        "version",
        "expected an integer, got a string",
        id="version-string",
    ),
    pytest.param(
        """
        bindings: {}
        """,
        {},
        1,
        "",
        'missing required key "version" (add "version: 1")',
        id="version-missing",
    ),
    pytest.param(
        """
        - version: 1
        """,
        {},
        1,
        "",
        "expected a mapping at the top of the file, got a list",
        id="top-level-list",
    ),
]


@pytest.mark.parametrize(("text", "kwargs", "line", "key_path", "message"), ERROR_CASES)
def test_config_error(
    tmp_path: Path, text: str, kwargs: dict[str, Any], line: int, key_path: str, message: str
) -> None:
    cfg = write(tmp_path, text)
    err = load_error(cfg, **kwargs)
    assert_error(err, cfg, line, key_path, message)
    for name, value in kwargs.get("environ", {}).items():
        assert name == "BINDINGD_ENV" or value not in str(err)


def test_several_yaml_documents(tmp_path: Path) -> None:
    cfg = write(tmp_path, "---\nversion: 1\n---\nversion: 1\n")
    message = "invalid YAML: expected a single document in the stream on line 2, but found another document"
    assert_error(load_error(cfg), cfg, 3, "", message)


def test_empty_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "# nothing yet\n")
    assert_error(
        load_error(cfg), cfg, None, "", 'the file is empty; a bindingd.yaml starts with "version: 1"'
    )


def test_error_str_is_file_line_key_path_message(tmp_path: Path) -> None:
    cfg = write(tmp_path, "version: 1\nbindings:\n  CACHE: { type: kv, prefx: a }\n")
    err = load_error(cfg)
    assert (
        str(err)
        == f'{cfg}:3: bindings.CACHE.prefx: unknown key "prefx" (allowed: access, connection, local, type)'
    )


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    secrets = {"DSN": "postgres://app:hunter2@db/shop", "API_KEY": "sk-live-4242", "POOL": "pool-secret"}
    write(tmp_path, "s3cr3t-from-file\n", name="key.txt")
    write(tmp_path, "TOKEN=tok-0000-secret\n", name=".env")
    # Every secret is resolved before the error, which comes from the last binding.
    base = textwrap.dedent(
        """
        version: 1
        connections:
          pg: { kind: sqlite, path: "${env:DSN}" }
        bindings:
          API_KEY: { type: secret, value: "${env:API_KEY}" }
          FILE_KEY: { type: secret, value: "${file:key.txt}" }
          TOKEN: { type: secret, value: "${env:TOKEN}" }
          DB: { type: sql, connection: pg, pool: "${env:POOL}" }
        """
    )
    errors = [
        load_error(write(tmp_path, base), environ=secrets),  # pool does not resolve to an int
        load_error(
            write(tmp_path, base + '  LATER: { type: var, value: "${env:MISSING}" }\n'),
            environ={**secrets, "POOL": "3"},
        ),
    ]
    assert errors[0].key_path == "bindings.DB.pool"
    assert errors[1].key_path == "bindings.LATER.value"
    for err in errors:
        for secret in [*secrets.values(), "s3cr3t-from-file", "tok-0000-secret"]:
            assert secret not in str(err)
            assert secret not in repr(err)


# -- the example from DESIGN.md ---------------------------------------------------------------

# As in DESIGN.md, except that `production`'s elided `bindings: { ... }` is made concrete.
DESIGN_EXAMPLE = """
version: 1
env: dev                          # default environment
connections:                      # how to reach real resources; secrets only by reference
  staging-pg:   { kind: postgres, dsn: "${env:STAGING_DATABASE_URL}" }
  staging-r2:
    kind: s3
    endpoint: "https://${env:CF_ACCOUNT_ID}.r2.cloudflarestorage.com"
    region: auto
    access_key_id: "${env:R2_ACCESS_KEY_ID}"
    secret_access_key: "${file:~/.config/bindingd/r2-secret}"
  staging-redis: { kind: redis, url: "${env:STAGING_REDIS_URL}" }
  qa-mysql:      { kind: mysql, dsn: "mysql://app:${env:QA_DB_PASSWORD}@qa-db:3306/shop" }
  staging-nats:  { kind: nats, url: "nats://nats.staging:4222" }
  qa-rabbit:     { kind: rabbitmq, url: "amqp://app:${env:QA_AMQP_PASSWORD}@qa-mq:5672/" }
bindings:                         # what worker code sees; local unless an env says otherwise
  APP_DB:        { type: sql }
  ASSETS_BUCKET: { type: objects }
  CACHE:         { type: kv }
  JOBS:          { type: queue }
  SITE_NAME:     { type: var, value: "Example Shop" }
  API_KEY:       { type: secret, value: "${env:API_KEY}" }
envs:
  staging:
    bindings:
      APP_DB:        { connection: staging-pg }
      ASSETS_BUCKET: { connection: staging-r2, bucket: assets-staging, access: read-only }
      CACHE:         { connection: staging-redis, prefix: "cache:" }
  production:
    protected: true               # every write refused unless `serve --allow-writes`
    bindings:
      SITE_NAME:     { value: "Example Shop (production)" }
"""


@pytest.fixture
def design_example(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    cfg = write(tmp_path / "shop", DESIGN_EXAMPLE)
    home = tmp_path / "home"
    write(home / ".config" / "bindingd", "r2-secret-value\n", name="r2-secret")
    environ = {
        "HOME": str(home),
        "STAGING_DATABASE_URL": "postgres://app:pg-pass@staging-db/shop",
        "CF_ACCOUNT_ID": "acc123",
        "R2_ACCESS_KEY_ID": "r2-key-id",
        "STAGING_REDIS_URL": "redis://staging-redis:6379/0",
        "API_KEY": "sk-test-1",
    }
    return cfg, environ


def test_design_example_dev(design_example: tuple[Path, dict[str, str]]) -> None:
    cfg, environ = design_example
    config = load_config(cwd=cfg.parent, environ=environ)
    assert config.env == "dev"
    assert config.envs == ("dev", "production", "staging")
    assert config.protected is False
    assert list(config.bindings) == ["APP_DB", "ASSETS_BUCKET", "CACHE", "JOBS", "SITE_NAME", "API_KEY"]
    assert {b.backend for b in config.bindings.values()} == {"local"}
    assert config.bindings["SITE_NAME"].value == "Example Shop"
    assert config.bindings["API_KEY"].value == "sk-test-1"
    assert config.bindings["API_KEY"].is_secret
    assert config.bindings["API_KEY"].options == {}
    assert config.bindings["JOBS"].location == Location(cfg, 19, "bindings.JOBS")


def test_design_example_production(design_example: tuple[Path, dict[str, str]]) -> None:
    cfg, environ = design_example
    config = load_config(cwd=cfg.parent, env="production", environ=environ)
    assert config.protected is True
    assert config.bindings["SITE_NAME"].value == "Example Shop (production)"


def test_design_example_staging_has_no_postgres_provider_yet(
    design_example: tuple[Path, dict[str, str]],
) -> None:
    cfg, environ = design_example
    with pytest.raises(ConfigError) as info:
        load_config(cwd=cfg.parent, env="staging", environ=environ)
    message = "bindingd has no provider for sql bindings on postgres yet (available for sql: local, sqlite)"
    assert_error(info.value, cfg, 25, "envs.staging.bindings.APP_DB.connection", message)


def test_design_example_staging_once_providers_exist(
    design_example: tuple[Path, dict[str, str]], providers: dict[tuple[str, str], ProviderSpec]
) -> None:
    providers[("sql", "postgres")] = ProviderSpec(None, {})
    providers[("kv", "redis")] = ProviderSpec(None, {"prefix": Option(str)})
    cfg, environ = design_example
    config = load_config(cwd=cfg.parent, env="staging", environ=environ)

    app_db = config.bindings["APP_DB"]
    assert app_db.connection is not None
    assert app_db.connection.options == {"dsn": "postgres://app:pg-pass@staging-db/shop"}

    assets = config.bindings["ASSETS_BUCKET"]
    assert (assets.backend, assets.access, assets.options) == (
        "staging-r2",
        "read-only",
        {"bucket": "assets-staging"},
    )
    assert assets.connection is not None
    assert assets.connection.options == {
        "endpoint": "https://acc123.r2.cloudflarestorage.com",
        "region": "auto",
        "access_key_id": "r2-key-id",
        "secret_access_key": "r2-secret-value",
    }
    assert config.bindings["CACHE"].options == {"prefix": "cache:"}
    assert config.bindings["JOBS"].backend == "local"
    # QA_DB_PASSWORD and QA_AMQP_PASSWORD are unset: their connections are not used by staging.
