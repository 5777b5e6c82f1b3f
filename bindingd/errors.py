"""The error table: every failure the daemon reports, as one reason ↔ gRPC code ↔ client class.

Providers and config raise `BindingdError` with a reason from this table; the server turns it
into a gRPC status carrying a `google.rpc.ErrorInfo` (domain "bindingd": the client's
`bindingd_client.wire.ERROR_DOMAIN`, which `server/calls.py` uses; not imported here, where
domain/ and config would load the client and protobuf with it). Both clients map the reason back
to the exception class named here, so this table is the one place to change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import grpc


class Reason(enum.StrEnum):
    BINDING_NOT_FOUND = "BINDING_NOT_FOUND"
    WRONG_BINDING_TYPE = "WRONG_BINDING_TYPE"
    AUTH_FAILED = "AUTH_FAILED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    BACKEND_TIMEOUT = "BACKEND_TIMEOUT"
    PRECONDITION_FAILED = "PRECONDITION_FAILED"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    SQL_ERROR = "SQL_ERROR"
    # The gateway (issue 14): no session yet, a token past its expiry (the daemon refreshes and
    # retries the call once), a revoked token, and a call the gateway's policy does not grant.
    NOT_LOGGED_IN = "NOT_LOGGED_IN"
    SESSION_EXPIRED = "SESSION_EXPIRED"
    TOKEN_REVOKED = "TOKEN_REVOKED"
    POLICY_DENIED = "POLICY_DENIED"
    # Not the caller's fault: a bug or an unexpected backend answer. Logged with a request id.
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class ErrorKind:
    code: grpc.StatusCode
    client_class: str


TABLE: dict[Reason, ErrorKind] = {
    Reason.BINDING_NOT_FOUND: ErrorKind(grpc.StatusCode.NOT_FOUND, "BindingNotFound"),
    Reason.WRONG_BINDING_TYPE: ErrorKind(grpc.StatusCode.FAILED_PRECONDITION, "WrongBindingType"),
    Reason.AUTH_FAILED: ErrorKind(grpc.StatusCode.UNAUTHENTICATED, "AuthenticationFailed"),
    Reason.PERMISSION_DENIED: ErrorKind(grpc.StatusCode.PERMISSION_DENIED, "PermissionDenied"),
    Reason.BACKEND_UNAVAILABLE: ErrorKind(grpc.StatusCode.UNAVAILABLE, "BackendUnavailable"),
    Reason.BACKEND_TIMEOUT: ErrorKind(grpc.StatusCode.DEADLINE_EXCEEDED, "BackendTimeout"),
    Reason.PRECONDITION_FAILED: ErrorKind(grpc.StatusCode.FAILED_PRECONDITION, "PreconditionFailed"),
    Reason.INVALID_ARGUMENT: ErrorKind(grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument"),
    Reason.SQL_ERROR: ErrorKind(grpc.StatusCode.INVALID_ARGUMENT, "SqlError"),
    Reason.NOT_LOGGED_IN: ErrorKind(grpc.StatusCode.UNAUTHENTICATED, "NotLoggedIn"),
    Reason.SESSION_EXPIRED: ErrorKind(grpc.StatusCode.UNAUTHENTICATED, "SessionExpired"),
    Reason.TOKEN_REVOKED: ErrorKind(grpc.StatusCode.UNAUTHENTICATED, "TokenRevoked"),
    Reason.POLICY_DENIED: ErrorKind(grpc.StatusCode.PERMISSION_DENIED, "PolicyDenied"),
    Reason.INTERNAL: ErrorKind(grpc.StatusCode.INTERNAL, "InternalError"),
}


class BindingdError(Exception):
    """A failure with a reason from the table and a message written for the caller.

    Providers raise it without knowing the binding's name or env; the service layer fills
    those in (`with_context`) before the error leaves the daemon.
    """

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        binding: str = "",
        env: str = "",
        backend: str = "",
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.binding = binding
        self.env = env
        self.backend = backend

    @property
    def code(self) -> grpc.StatusCode:
        return TABLE[self.reason].code

    def with_context(self, *, binding: str, env: str, backend: str) -> BindingdError:
        """Name the binding and env in the message unless it already does."""
        message = self.message
        if binding and f'"{binding}"' not in message:
            message = f'binding "{binding}" (env "{env}"): {message}'
        return BindingdError(
            self.reason,
            message,
            binding=self.binding or binding,
            env=self.env or env,
            backend=self.backend or backend,
        )

    def __str__(self) -> str:
        return self.message


def invalid_argument(message: str) -> BindingdError:
    return BindingdError(Reason.INVALID_ARGUMENT, message)


def permission_denied(message: str) -> BindingdError:
    return BindingdError(Reason.PERMISSION_DENIED, message)


def backend_unavailable(message: str) -> BindingdError:
    return BindingdError(Reason.BACKEND_UNAVAILABLE, message)


def backend_timeout(message: str) -> BindingdError:
    return BindingdError(Reason.BACKEND_TIMEOUT, message)


def describe(e: BaseException) -> str:
    """A driver's exception in a message: its type, and its text when it has one."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
