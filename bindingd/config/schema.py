"""What may be written in a bindingd.yaml: connection kinds and the options of each provider.

One table per concern so that a new backend adds rows, not code paths: a connection kind lists
the binding types it can serve and its options; a provider's binding options are keyed by
(binding type, backend kind).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Option:
    type: type
    required: bool = False
    # True when the value may hold a credential: it is never logged or shown.
    secret: bool = False
    # True when only a YAML string will do: a var's `value: 0755` would silently become "493"
    # and `1.50` "1.5", so every unquoted non-string scalar is refused, as `true` is.
    exact: bool = False


@dataclass(frozen=True)
class ConnectionKind:
    serves: frozenset[str]
    options: dict[str, Option] = field(default_factory=dict)


CONNECTION_KINDS: dict[str, ConnectionKind] = {
    "postgres": ConnectionKind(
        frozenset({"sql"}),
        {"dsn": Option(str, required=True, secret=True), "min_size": Option(int), "max_size": Option(int)},
    ),
    "mysql": ConnectionKind(
        frozenset({"sql"}),
        {"dsn": Option(str, required=True, secret=True), "min_size": Option(int), "max_size": Option(int)},
    ),
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
    ),
    "redis": ConnectionKind(
        frozenset({"kv"}),
        {
            "url": Option(str, required=True, secret=True),
            "timeout": Option(float),
            "max_connections": Option(int),
        },
    ),
    "nats": ConnectionKind(frozenset({"queue"}), {"url": Option(str, required=True, secret=True)}),
    "rabbitmq": ConnectionKind(frozenset({"queue"}), {"url": Option(str, required=True, secret=True)}),
}

# Keys every binding may have, whatever its provider.
COMMON_BINDING_KEYS = frozenset({"type", "connection", "access"})

# What every queue provider accepts, named as in Cloudflare's queue consumer and producer settings.
QUEUE_OPTIONS: dict[str, Option] = {
    "max_retries": Option(int),
    "dead_letter_queue": Option(str),
    # Seconds before a retried message comes back when retry() gives no delay.
    "retry_delay": Option(int),
    # Seconds before a sent message can be delivered when send() gives no delay.
    "delivery_delay": Option(int),
}

# Options of each provider, by (binding type, backend kind). A (type, kind) pair missing here
# has no provider in this version of bindingd.
BINDING_OPTIONS: dict[tuple[str, str], dict[str, Option]] = {
    ("kv", "local"): {},
    ("kv", "redis"): {"prefix": Option(str)},
    ("objects", "local"): {},
    # `prefix` is prepended to every key in the bucket, so several bindings can share one.
    ("objects", "s3"): {"bucket": Option(str, required=True), "prefix": Option(str)},
    ("var", "local"): {"value": Option(str, required=True, exact=True)},
    ("secret", "local"): {"value": Option(str, required=True, secret=True, exact=True)},
    # timeout: the statement timeout in seconds (default 30).
    ("sql", "local"): {"timeout": Option(float)},
    ("sql", "sqlite"): {"timeout": Option(float)},
    ("sql", "postgres"): {"timeout": Option(float)},
    ("sql", "mysql"): {"timeout": Option(float)},
    # Queues: `queue` / `stream` name the backend's queue (default: the binding's name);
    # `dead_letter_queue` names another queue of the same backend.
    ("queue", "local"): {"queue": Option(str), **QUEUE_OPTIONS},
    ("queue", "nats"): {
        "stream": Option(str),
        "subject": Option(str),
        "ack_wait": Option(float),
        **QUEUE_OPTIONS,
    },
    ("queue", "rabbitmq"): {"queue": Option(str), **QUEUE_OPTIONS},
}
