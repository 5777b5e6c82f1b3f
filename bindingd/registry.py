"""The one table of what bindingd can serve: connection kinds, and providers by (binding type, kind).

A connection kind says which binding types it serves, which options its entry accepts, and which
module opens the client that every provider of one entry shares. A provider row says which class
serves a (binding type, backend kind) pair and which options its binding accepts. The config
loader checks a bindingd.yaml against these rows (through `bindingd.config.schema`), the runtime
creates providers from them, and `SharedConnections` opens clients from them.

This module stays import-light (the config package imports it): classes and client modules are
named as strings and imported on first use, so the daemon loads only the drivers its config needs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bindingd.config.model import Binding
    from bindingd.providers.base import Provider
    from bindingd.providers.connections import ProviderContext


@dataclass(frozen=True)
class Option:
    type: type
    required: bool = False
    # True when the value may hold a credential: it is never logged or shown.
    secret: bool = False
    # True when only a YAML string will do: a var's `value: 0755` would silently become "493"
    # and `1.50` "1.5", so every unquoted non-string scalar is refused, as `true` is.
    exact: bool = False
    # A regular expression a string value must match in full, and what it means, for a value
    # that becomes a name in a backend (a table), so a mistake is a config error, not a failure
    # at the first call.
    pattern: str | None = None
    pattern_says: str = ""


@dataclass(frozen=True)
class ConnectionKind:
    # The binding types a connection of this kind can serve.
    serves: frozenset[str]
    options: dict[str, Option] = field(default_factory=dict)
    # The module that opens the client shared by every provider of one connection entry, whatever
    # their binding type: it defines `async open_client(connection)` (which must not wait on the
    # backend: readiness never does) and `async close_client(client)`. None: the kind's providers
    # share nothing (a SQLite file is opened by each binding).
    client: str | None = None


@dataclass(frozen=True)
class ProviderSpec:
    # "module:Class" of the provider; the class has a `create(binding, context)` classmethod.
    # None for a value the daemon serves itself from the config (var, secret).
    target: str | None
    # The options a binding of this provider accepts, besides type, connection and access.
    options: dict[str, Option] = field(default_factory=dict)


_DSN_POOL = {"dsn": Option(str, required=True, secret=True), "min_size": Option(int), "max_size": Option(int)}

CONNECTION_KINDS: dict[str, ConnectionKind] = {
    # One postgres connection entry serves sql and kv bindings side by side, from one set of pools.
    "postgres": ConnectionKind(frozenset({"sql", "kv"}), _DSN_POOL, "bindingd.providers.postgres.client"),
    "mysql": ConnectionKind(frozenset({"sql"}), _DSN_POOL, "bindingd.providers.mysql.client"),
    "sqlite": ConnectionKind(frozenset({"sql"}), {"path": Option(str, required=True)}),
    "s3": ConnectionKind(
        frozenset({"objects"}),
        {
            "endpoint": Option(str),
            "region": Option(str),
            "access_key_id": Option(str, secret=True),
            "secret_access_key": Option(str, secret=True),
            "path_style": Option(bool),
            "timeout": Option(float),
        },
        "bindingd.providers.s3.client",
    ),
    "redis": ConnectionKind(
        frozenset({"kv"}),
        {
            "url": Option(str, required=True, secret=True),
            "timeout": Option(float),
            "max_connections": Option(int),
        },
        "bindingd.providers.redis.client",
    ),
    "nats": ConnectionKind(
        frozenset({"queue"}),
        {"url": Option(str, required=True, secret=True)},
        "bindingd.providers.nats.client",
    ),
    "rabbitmq": ConnectionKind(
        frozenset({"queue"}),
        {"url": Option(str, required=True, secret=True)},
        "bindingd.providers.rabbitmq.client",
    ),
    # A Cloudflare account through bindingd's proxy Worker (bindingd/providers/cloudflare/worker):
    # `key` is the daemon's Ed25519 signing key, whose public half the Worker holds.
    "cloudflare": ConnectionKind(
        frozenset({"kv", "objects", "sql", "queue"}),
        {
            "url": Option(str, required=True),
            "key": Option(str, required=True, secret=True),
            "timeout": Option(float),
        },
        "bindingd.providers.cloudflare.client",
    ),
}

# What every queue provider accepts, named as in Cloudflare's queue consumer and producer settings.
QUEUE_OPTIONS: dict[str, Option] = {
    "max_retries": Option(int),
    "dead_letter_queue": Option(str),
    # Seconds before a retried message comes back when retry() gives no delay.
    "retry_delay": Option(int),
    # Seconds before a sent message can be delivered when send() gives no delay.
    "delivery_delay": Option(int),
}

# timeout: the statement timeout in seconds (default 30).
_SQL_OPTIONS = {"timeout": Option(float)}

# By (binding type, backend kind); "local" is the embedded backend (no connection). A pair
# missing here has no provider in this version of bindingd.
PROVIDERS: dict[tuple[str, str], ProviderSpec] = {
    ("kv", "local"): ProviderSpec("bindingd.providers.local.kv:LocalKV"),
    ("kv", "redis"): ProviderSpec("bindingd.providers.redis.kv:RedisKV", {"prefix": Option(str)}),
    # `table`: the binding's table (default bindingd_kv_<binding name in lower case), made by
    # the first write; `timeout`: seconds a call may take (default 5).
    ("kv", "postgres"): ProviderSpec(
        "bindingd.providers.postgres.kv:PostgresKV",
        {
            "table": Option(
                str,
                pattern=r"[A-Za-z_][A-Za-z0-9_]{0,62}",
                pattern_says="a plain table name (letters, digits and _, at most 63, no digit first)",
            ),
            "timeout": Option(float),
        },
    ),
    ("objects", "local"): ProviderSpec("bindingd.providers.local.objects:LocalObjects"),
    # `prefix` is prepended to every key in the bucket, so several bindings can share one.
    ("objects", "s3"): ProviderSpec(
        "bindingd.providers.s3.objects:S3Objects",
        {"bucket": Option(str, required=True), "prefix": Option(str)},
    ),
    ("sql", "local"): ProviderSpec("bindingd.providers.local.sql:LocalSql", _SQL_OPTIONS),
    ("sql", "sqlite"): ProviderSpec("bindingd.providers.local.sql:LocalSql", _SQL_OPTIONS),
    ("sql", "postgres"): ProviderSpec("bindingd.providers.postgres.sql:PostgresSql", _SQL_OPTIONS),
    ("sql", "mysql"): ProviderSpec("bindingd.providers.mysql.sql:MySQLSql", _SQL_OPTIONS),
    # Queues: `queue` / `stream` name the backend's queue (default: the binding's name);
    # `dead_letter_queue` names another queue of the same backend.
    ("queue", "local"): ProviderSpec(
        "bindingd.providers.local.queue:LocalQueue", {"queue": Option(str), **QUEUE_OPTIONS}
    ),
    ("queue", "nats"): ProviderSpec(
        "bindingd.providers.nats.queue:NatsQueue",
        {"stream": Option(str), "subject": Option(str), "ack_wait": Option(float), **QUEUE_OPTIONS},
    ),
    ("queue", "rabbitmq"): ProviderSpec(
        "bindingd.providers.rabbitmq.queue:RabbitQueue", {"queue": Option(str), **QUEUE_OPTIONS}
    ),
    # `remote_binding`: the binding's name on the proxy Worker (default: the same name).
    ("kv", "cloudflare"): ProviderSpec(
        "bindingd.providers.cloudflare.kv:CloudflareKV", {"remote_binding": Option(str)}
    ),
    ("objects", "cloudflare"): ProviderSpec(
        "bindingd.providers.cloudflare.objects:CloudflareObjects", {"remote_binding": Option(str)}
    ),
    # D1 cannot enforce read-only: read-only calls (access: read-only, protected envs) are refused.
    ("sql", "cloudflare"): ProviderSpec(
        "bindingd.providers.cloudflare.sql:CloudflareSql", {"remote_binding": Option(str), **_SQL_OPTIONS}
    ),
    ("queue", "cloudflare"): ProviderSpec(
        "bindingd.providers.cloudflare.queue:CloudflareQueue",
        {"remote_binding": Option(str), **QUEUE_OPTIONS},
    ),
    ("var", "local"): ProviderSpec(None, {"value": Option(str, required=True, exact=True)}),
    ("secret", "local"): ProviderSpec(None, {"value": Option(str, required=True, secret=True, exact=True)}),
}

# Binding types served by the daemon itself, without a provider: their `value` option becomes
# Binding.value instead of an entry of Binding.options.
VALUE_TYPES = frozenset(binding_type for (binding_type, _), spec in PROVIDERS.items() if spec.target is None)


def _load(target: str) -> Any:
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)


def create_provider(binding: Binding, context: ProviderContext) -> Provider:
    """A new, not yet started provider for `binding`. Providers of a connection share its client
    through `context.connections`."""
    target = PROVIDERS[(binding.type, binding.backend_kind)].target
    assert target is not None, f"{binding.type} bindings are served by the daemon, not a provider"
    return _load(target).create(binding, context)  # type: ignore[no-any-return]


def client_module(kind: str) -> ModuleType:
    """The module that opens and closes the shared client of a `kind` connection entry."""
    module = CONNECTION_KINDS[kind].client
    if module is None:
        raise LookupError(f"{kind} connections have no shared client")
    return importlib.import_module(module)


# What `bindingd cloudflare deploy` writes into the proxy Worker's wrangler config for a binding
# on a cloudflare connection, named as wrangler names them: a KV namespace's `id`, an R2 bucket's
# `bucket_name`, a D1 database's `database_id` (and `database_name`), a queue producer's `queue`.
# The daemon itself needs none of them (it names the Worker's binding).
CLOUDFLARE_DEPLOY_OPTIONS: dict[str, tuple[str, ...]] = {
    "kv": ("id",),
    "objects": ("bucket_name",),
    "sql": ("database_id", "database_name"),
    "queue": ("queue",),
}
for _type, _names in CLOUDFLARE_DEPLOY_OPTIONS.items():
    _spec = PROVIDERS[(_type, "cloudflare")]
    PROVIDERS[(_type, "cloudflare")] = ProviderSpec(
        _spec.target, {**_spec.options, **{name: Option(str) for name in _names}}
    )
