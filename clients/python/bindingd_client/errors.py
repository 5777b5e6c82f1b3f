"""Exceptions raised by the client: one class per daemon error reason, all under BindingError.

The daemon attaches a ``google.rpc.ErrorInfo`` (domain ``bindingd``) to every failure; its reason
picks the class, so worker code catches ``BackendUnavailable`` rather than inspecting gRPC codes.
No gRPC exception ever leaves the public API.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .proto import rpc_status_pb2
from .wire import ERROR_DOMAIN, ERROR_INFO_TYPE, STATUS_DETAILS_KEY

__all__ = [
    "REASONS",
    "AuthenticationFailed",
    "BackendTimeout",
    "BackendUnavailable",
    "BindingError",
    "BindingNotFound",
    "DaemonUnavailable",
    "InternalError",
    "InvalidArgument",
    "NotLoggedIn",
    "PermissionDenied",
    "PolicyDenied",
    "PreconditionFailed",
    "SessionExpired",
    "SqlError",
    "TokenRevoked",
    "WrongBindingType",
    "WrongEnv",
    "daemon_unavailable",
    "error_from_rpc",
]

START_HINT = 'start it with "bindingd serve" or run your command under "bindingd run -- ..."'


class BindingError(Exception):
    """Base of every client error; ``str(err)`` is the daemon's message.

    ``reason`` is the daemon's ErrorInfo reason (or the gRPC code name when it sent none);
    ``binding``, ``env``, ``backend`` and ``request_id`` are None when unknown.
    """

    default_reason = "UNKNOWN"

    def __init__(
        self,
        message: str = "",
        *,
        reason: str | None = None,
        binding: str | None = None,
        env: str | None = None,
        backend: str | None = None,
        request_id: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.binding = binding
        self.env = env
        self.backend = backend
        self.request_id = request_id
        # The gRPC status code name (e.g. "NOT_FOUND"), for logs; None for client-side errors.
        self.code = code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={value!r}"
            for name in ("binding", "env", "backend", "request_id")
            if (value := getattr(self, name)) is not None
        )
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r}{extra})"


class BindingNotFound(BindingError, AttributeError):
    """No binding of that name in the env; an AttributeError too, so ``getattr(env, X, None)`` works."""

    default_reason = "BINDING_NOT_FOUND"


class WrongBindingType(BindingError):
    default_reason = "WRONG_BINDING_TYPE"


class AuthenticationFailed(BindingError):
    default_reason = "AUTH_FAILED"


class PermissionDenied(BindingError):
    default_reason = "PERMISSION_DENIED"


class BackendUnavailable(BindingError):
    default_reason = "BACKEND_UNAVAILABLE"


class BackendTimeout(BindingError):
    default_reason = "BACKEND_TIMEOUT"


class PreconditionFailed(BindingError):
    default_reason = "PRECONDITION_FAILED"


class InvalidArgument(BindingError):
    default_reason = "INVALID_ARGUMENT"


class SqlError(BindingError):
    default_reason = "SQL_ERROR"


class NotLoggedIn(BindingError):
    """The env is served through a gateway and this machine has no session there; the message
    says what to run (``bindingd login --env ENV``)."""

    default_reason = "NOT_LOGGED_IN"


class SessionExpired(BindingError):
    """The gateway session expired and could not be refreshed (the daemon refreshes and retries
    once before this reaches a worker)."""

    default_reason = "SESSION_EXPIRED"


class TokenRevoked(BindingError):
    default_reason = "TOKEN_REVOKED"


class PolicyDenied(PermissionDenied):
    """The gateway's policy does not grant this user the action on the binding in that env; a
    PermissionDenied, so code catching that catches this too."""

    default_reason = "POLICY_DENIED"


class InternalError(BindingError):
    default_reason = "INTERNAL"


class DaemonUnavailable(BindingError):
    """No daemon was found or it cannot be reached (as opposed to a backend behind it)."""

    default_reason = "DAEMON_UNAVAILABLE"


class WrongEnv(DaemonUnavailable):
    """The daemon found serves another env than the one asked for (``connect(env=...)`` or
    ``BINDINGD_ENV``). Raised by the client, never sent by the daemon; a DaemonUnavailable, since
    no daemon serving the env asked for could be reached."""

    default_reason = "WRONG_ENV"


REASONS: dict[str, type[BindingError]] = {
    cls.default_reason: cls
    for cls in (
        BindingNotFound,
        WrongBindingType,
        AuthenticationFailed,
        PermissionDenied,
        BackendUnavailable,
        BackendTimeout,
        PreconditionFailed,
        InvalidArgument,
        SqlError,
        NotLoggedIn,
        SessionExpired,
        TokenRevoked,
        PolicyDenied,
        InternalError,
        DaemonUnavailable,
    )
}

# Statuses without an ErrorInfo come from gRPC itself (or a proxy), not from a bindingd service.
_BY_CODE: dict[str, type[BindingError]] = {
    "UNAVAILABLE": DaemonUnavailable,
    # The daemon stopped (or was overloaded) before this call reached a handler.
    "CANCELLED": DaemonUnavailable,
    "RESOURCE_EXHAUSTED": InvalidArgument,  # a message over the 64 MiB channel limit
    "UNAUTHENTICATED": AuthenticationFailed,
}


def daemon_unavailable(endpoint: str | None, detail: str | None = None) -> DaemonUnavailable:
    """The error for a daemon that cannot be reached, saying how to start one."""
    where = f" at {endpoint}" if endpoint else ""
    why = f" ({detail})" if detail else ""
    return DaemonUnavailable(f"cannot connect to bindingd{where}{why}; {START_HINT}", code="UNAVAILABLE")


def _call(obj: Any, name: str) -> Any:
    method = getattr(obj, name, None)
    if not callable(method):
        return None
    try:
        return method()
    except Exception:
        return None


def _error_info(trailing_metadata: Iterable[Any] | None) -> rpc_status_pb2.RpcErrorInfo | None:
    """The bindingd ErrorInfo inside the ``grpc-status-details-bin`` trailer, if there is one."""
    for item in trailing_metadata or ():
        try:
            key, value = item
        except (TypeError, ValueError):
            continue
        if key != STATUS_DETAILS_KEY:
            continue
        status = rpc_status_pb2.RpcStatus()
        try:
            status.ParseFromString(value.encode("latin-1") if isinstance(value, str) else value)
        except Exception:
            return None
        for detail in status.details:
            if detail.type_url != ERROR_INFO_TYPE:
                continue
            info = rpc_status_pb2.RpcErrorInfo()
            try:
                info.ParseFromString(detail.value)
            except Exception:
                continue
            if info.domain in (ERROR_DOMAIN, "") and info.reason:
                return info
        return None
    return None


def error_from_rpc(e: Any, *, endpoint: str | None = None) -> BindingError:
    """Translate a failed gRPC call (sync ``grpc.RpcError``/``grpc.Call`` or ``grpc.aio.AioRpcError``).

    ``endpoint`` only improves the message when the daemon itself cannot be reached.
    """
    code = _call(e, "code")
    code_name = getattr(code, "name", None) or (str(code) if code is not None else "UNKNOWN")
    message = _call(e, "details") or ""
    info = _error_info(_call(e, "trailing_metadata"))
    if info is not None:
        meta = info.metadata
        cls = REASONS.get(info.reason, BindingError)
        return cls(
            message or f"{info.reason} ({code_name})",
            reason=info.reason,
            binding=meta.get("binding") or None,
            env=meta.get("env") or None,
            backend=meta.get("backend") or None,
            request_id=meta.get("request_id") or None,
            code=code_name,
        )
    cls = _BY_CODE.get(code_name, BindingError)
    if code_name == "CANCELLED":
        # The daemon answered: it is there, so "cannot connect ... start it" would mislead.
        where = f" at {endpoint}" if endpoint else ""
        return DaemonUnavailable(
            f"bindingd{where} cancelled the call before answering (it is stopping, or has too many "
            f"calls in flight); retry it, and if the daemon stopped, {START_HINT}",
            code=code_name,
        )
    if cls is DaemonUnavailable:
        return daemon_unavailable(endpoint, message or None)
    if cls is AuthenticationFailed and not message:
        message = "the daemon refused the token; check BINDINGD_TOKEN or .bindingd/token"
    return cls(
        message or code_name,
        reason=cls.default_reason if cls is not BindingError else code_name,
        code=code_name,
    )
