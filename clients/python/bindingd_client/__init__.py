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
    NotLoggedIn,
    PermissionDenied,
    PolicyDenied,
    PreconditionFailed,
    SessionExpired,
    SqlError,
    TokenRevoked,
    WrongBindingType,
    WrongEnv,
)
from .kv import KVNamespace, KVNamespaceSync
from .objects import (
    R2Bucket,
    R2BucketSync,
    R2Checksums,
    R2MultipartUpload,
    R2Object,
    R2ObjectBody,
    R2ObjectBodySync,
    R2Objects,
    R2UploadedPart,
)
from .queue import Message, MessageBatch, MessageBatchSync, MessageSync, Queue, QueueMetrics, QueueSync
from .sql import (
    D1Database,
    D1DatabaseSync,
    D1ExecResult,
    D1PreparedStatement,
    D1PreparedStatementSync,
    D1Result,
)
from .types import BindingInfo, KVKey, KVListResult, KVValueWithMetadata

__all__ = [
    "REASONS",
    "AuthenticationFailed",
    "BackendTimeout",
    "BackendUnavailable",
    "BindingError",
    "BindingInfo",
    "BindingNotFound",
    "D1Database",
    "D1DatabaseSync",
    "D1ExecResult",
    "D1PreparedStatement",
    "D1PreparedStatementSync",
    "D1Result",
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
    "NotLoggedIn",
    "PermissionDenied",
    "PolicyDenied",
    "PreconditionFailed",
    "Queue",
    "QueueMetrics",
    "QueueSync",
    "R2Bucket",
    "R2BucketSync",
    "R2Checksums",
    "R2MultipartUpload",
    "R2Object",
    "R2ObjectBody",
    "R2ObjectBodySync",
    "R2Objects",
    "R2UploadedPart",
    "SessionExpired",
    "SqlError",
    "SyncEnv",
    "TokenRevoked",
    "UnsupportedBinding",
    "WrongBindingType",
    "WrongEnv",
    "__version__",
    "connect",
    "connect_sync",
]
