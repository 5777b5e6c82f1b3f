"""Python client of bindingd: Workers-style bindings (KV, vars, secrets, ...) served by a local daemon.

    from bindingd_client import connect
    env = await connect()
    await env.CACHE.put("user:1", '{"n":1}', expiration_ttl=120)
    await env.CACHE.get("user:1", type="json")

``connect_sync()`` gives the same API for blocking code. Every failure is a BindingError subclass.
"""

from ._version import __version__
from .env import Env, SyncEnv, UnsupportedBinding, connect, connect_sync
from .errors import (
    REASONS,
    AuthenticationFailed,
    BackendTimeout,
    BackendUnavailable,
    BindingError,
    BindingNotFound,
    DaemonUnavailable,
    InternalError,
    InvalidArgument,
    PermissionDenied,
    PreconditionFailed,
    SqlError,
    WrongBindingType,
)
from .kv import KVNamespace, KVNamespaceSync
from .queue import Message, MessageBatch, MessageBatchSync, MessageSync, Queue, QueueSync
from .types import BindingInfo, KVKey, KVListResult, KVValueWithMetadata

__all__ = [
    "REASONS",
    "AuthenticationFailed",
    "BackendTimeout",
    "BackendUnavailable",
    "BindingError",
    "BindingInfo",
    "BindingNotFound",
    "DaemonUnavailable",
    "Env",
    "InternalError",
    "InvalidArgument",
    "KVKey",
    "KVListResult",
    "KVNamespace",
    "KVNamespaceSync",
    "KVValueWithMetadata",
    "Message",
    "MessageBatch",
    "MessageBatchSync",
    "MessageSync",
    "PermissionDenied",
    "PreconditionFailed",
    "Queue",
    "QueueSync",
    "SqlError",
    "SyncEnv",
    "UnsupportedBinding",
    "WrongBindingType",
    "__version__",
    "connect",
    "connect_sync",
]
