"""Which class serves a binding, keyed by (binding type, backend kind).

Modules are imported on first use so that the daemon loads only the drivers its config needs.
The options each provider accepts are in `bindingd.config.schema.BINDING_OPTIONS`.
"""

from __future__ import annotations

import importlib

from bindingd.config.model import Binding
from bindingd.providers.base import Provider
from bindingd.providers.connections import ProviderContext

PROVIDERS: dict[tuple[str, str], str] = {
    ("kv", "local"): "bindingd.providers.local.kv:LocalKV",
    ("kv", "redis"): "bindingd.providers.redis.kv:RedisKV",
    ("objects", "local"): "bindingd.providers.local.objects:LocalObjects",
    ("objects", "s3"): "bindingd.providers.s3.objects:S3Objects",
    ("sql", "local"): "bindingd.providers.local.sql:SQLiteDatabase",
    ("sql", "sqlite"): "bindingd.providers.local.sql:SQLiteDatabase",
    ("sql", "postgres"): "bindingd.providers.postgres.sql:PostgresDatabase",
    ("sql", "mysql"): "bindingd.providers.mysql.sql:MySQLDatabase",
    ("queue", "local"): "bindingd.providers.local.queue:LocalQueue",
    ("queue", "nats"): "bindingd.providers.nats.queue:NatsQueue",
    ("queue", "rabbitmq"): "bindingd.providers.rabbitmq.queue:RabbitQueue",
}

# Binding types served by the daemon itself, without a provider.
VALUE_TYPES = frozenset({"var", "secret"})


def create_provider(binding: Binding, context: ProviderContext) -> Provider:
    """A new, not yet started provider for `binding`. Each class has a `create(binding, context)`
    classmethod; providers of a connection share its client through `context.connections`."""
    target = PROVIDERS[(binding.type, binding.backend_kind)]
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.create(binding, context)
