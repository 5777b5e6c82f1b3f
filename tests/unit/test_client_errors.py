"""Decoding the daemon's error statuses into the client's exception classes (no server involved)."""

from __future__ import annotations

import pickle

import bindingd_client
import grpc
import grpc.aio
import pytest
from bindingd_client import errors
from bindingd_client.errors import REASONS, BindingError, error_from_rpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"

# reason -> (gRPC code the daemon uses, exception class), as in DESIGN.md's error table.
TABLE = {
    "BINDING_NOT_FOUND": (grpc.StatusCode.NOT_FOUND, bindingd_client.BindingNotFound),
    "WRONG_BINDING_TYPE": (grpc.StatusCode.FAILED_PRECONDITION, bindingd_client.WrongBindingType),
    "AUTH_FAILED": (grpc.StatusCode.UNAUTHENTICATED, bindingd_client.AuthenticationFailed),
    "PERMISSION_DENIED": (grpc.StatusCode.PERMISSION_DENIED, bindingd_client.PermissionDenied),
    "BACKEND_UNAVAILABLE": (grpc.StatusCode.UNAVAILABLE, bindingd_client.BackendUnavailable),
    "BACKEND_TIMEOUT": (grpc.StatusCode.DEADLINE_EXCEEDED, bindingd_client.BackendTimeout),
    "PRECONDITION_FAILED": (grpc.StatusCode.FAILED_PRECONDITION, bindingd_client.PreconditionFailed),
    "INVALID_ARGUMENT": (grpc.StatusCode.INVALID_ARGUMENT, bindingd_client.InvalidArgument),
    "SQL_ERROR": (grpc.StatusCode.INVALID_ARGUMENT, bindingd_client.SqlError),
    "NOT_LOGGED_IN": (grpc.StatusCode.UNAUTHENTICATED, bindingd_client.NotLoggedIn),
    "SESSION_EXPIRED": (grpc.StatusCode.UNAUTHENTICATED, bindingd_client.SessionExpired),
    "TOKEN_REVOKED": (grpc.StatusCode.UNAUTHENTICATED, bindingd_client.TokenRevoked),
    "POLICY_DENIED": (grpc.StatusCode.PERMISSION_DENIED, bindingd_client.PolicyDenied),
    "INTERNAL": (grpc.StatusCode.INTERNAL, bindingd_client.InternalError),
}


class FakeCall:
    """The minimal surface error_from_rpc relies on: code(), details(), trailing_metadata()."""

    def __init__(self, code, details="", trailing=None):
        self._code, self._details, self._trailing = code, details, trailing

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


def status_bytes(code, message, reason, metadata=None, domain="bindingd", extra_details=()):
    """A serialized google.rpc.Status carrying an ErrorInfo, built with the real google.rpc types."""
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in extra_details:
        status.details.add().Pack(detail)
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {})
    packed = any_pb2.Any()
    packed.Pack(info)
    status.details.append(packed)
    return status.SerializeToString()


@pytest.mark.parametrize("reason", sorted(TABLE))
def test_each_reason_maps_to_its_class(reason):
    code, cls = TABLE[reason]
    meta = {"binding": "CACHE", "env": "staging", "backend": "staging-redis", "request_id": "r-42"}
    message = f"something about {reason}"
    trailing = (("x-other", "v"), (DETAILS_KEY, status_bytes(code, message, reason, meta)))
    err = error_from_rpc(FakeCall(code, message, trailing))
    assert type(err) is cls
    assert isinstance(err, BindingError)
    assert str(err) == message
    assert err.message == message
    assert err.reason == reason
    assert (err.binding, err.env, err.backend, err.request_id) == (
        "CACHE",
        "staging",
        "staging-redis",
        "r-42",
    )
    assert err.code == code.name
    assert REASONS[reason] is cls


def test_real_aio_rpc_error_is_decoded():
    trailing = grpc.aio.Metadata(
        (DETAILS_KEY, status_bytes(grpc.StatusCode.NOT_FOUND, "nope", "BINDING_NOT_FOUND", {"binding": "X"}))
    )
    exc = grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), trailing, "nope")
    err = error_from_rpc(exc)
    assert isinstance(err, bindingd_client.BindingNotFound)
    assert err.binding == "X"
    assert err.env is None and err.backend is None and err.request_id is None


def test_error_info_found_among_other_details():
    other = error_details_pb2.RetryInfo()
    raw = status_bytes(
        grpc.StatusCode.UNAVAILABLE, "m", "BACKEND_UNAVAILABLE", {"binding": "C"}, extra_details=[other]
    )
    err = error_from_rpc(FakeCall(grpc.StatusCode.UNAVAILABLE, "m", [(DETAILS_KEY, raw)]))
    assert isinstance(err, bindingd_client.BackendUnavailable)


def test_binding_not_found_is_an_attribute_error():
    err = REASONS["BINDING_NOT_FOUND"]("x", binding="X")
    assert isinstance(err, AttributeError)
    with pytest.raises(AttributeError):
        raise err


def test_unknown_reason_from_a_newer_daemon_is_a_plain_binding_error():
    raw = status_bytes(grpc.StatusCode.ABORTED, "later", "SOMETHING_NEW")
    err = error_from_rpc(FakeCall(grpc.StatusCode.ABORTED, "later", [(DETAILS_KEY, raw)]))
    assert type(err) is BindingError
    assert err.reason == "SOMETHING_NEW"
    assert str(err) == "later"


def test_error_info_of_another_domain_is_ignored():
    raw = status_bytes(grpc.StatusCode.NOT_FOUND, "m", "BINDING_NOT_FOUND", domain="example.com")
    err = error_from_rpc(FakeCall(grpc.StatusCode.NOT_FOUND, "m", [(DETAILS_KEY, raw)]))
    assert type(err) is BindingError
    assert err.reason == "NOT_FOUND"


def test_garbage_details_trailer_falls_back_to_the_code():
    err = error_from_rpc(FakeCall(grpc.StatusCode.INVALID_ARGUMENT, "bad", [(DETAILS_KEY, b"\xff\xff\xff")]))
    assert type(err) is BindingError
    assert err.reason == "INVALID_ARGUMENT"


def test_unavailable_without_error_info_is_daemon_unavailable():
    err = error_from_rpc(
        FakeCall(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", None),
        endpoint="unix:///p/.bindingd/bindingd.sock",
    )
    assert type(err) is bindingd_client.DaemonUnavailable
    assert err.reason == "DAEMON_UNAVAILABLE"
    assert "unix:///p/.bindingd/bindingd.sock" in str(err)
    assert "failed to connect to all addresses" in str(err)
    assert '"bindingd serve"' in str(err) and '"bindingd run -- ..."' in str(err)


def test_cancelled_without_error_info_says_the_daemon_cancelled_it():
    err = error_from_rpc(FakeCall(grpc.StatusCode.CANCELLED, "CANCELLED", None), endpoint="unix:///p/d.sock")
    assert type(err) is bindingd_client.DaemonUnavailable
    assert err.reason == "DAEMON_UNAVAILABLE" and err.code == "CANCELLED"
    assert "bindingd at unix:///p/d.sock cancelled the call" in str(err)
    assert "cannot connect" not in str(err) and '"bindingd serve"' in str(err)


def test_resource_exhausted_without_error_info_is_invalid_argument():
    err = error_from_rpc(FakeCall(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max", ()))
    assert type(err) is bindingd_client.InvalidArgument
    assert err.reason == "INVALID_ARGUMENT"
    assert str(err) == "Received message larger than max"


def test_unauthenticated_without_error_info_is_authentication_failed():
    err = error_from_rpc(FakeCall(grpc.StatusCode.UNAUTHENTICATED, "bad token", ()))
    assert type(err) is bindingd_client.AuthenticationFailed
    assert str(err) == "bad token"
    empty = error_from_rpc(FakeCall(grpc.StatusCode.UNAUTHENTICATED, "", ()))
    assert "BINDINGD_TOKEN" in str(empty)


def test_other_codes_without_error_info_keep_the_code_name_as_reason():
    err = error_from_rpc(FakeCall(grpc.StatusCode.UNIMPLEMENTED, "Method not found!", None))
    assert type(err) is BindingError
    assert err.reason == "UNIMPLEMENTED"
    assert str(err) == "Method not found!"


def test_an_object_without_the_call_methods_still_gives_a_binding_error():
    err = error_from_rpc(grpc.RpcError())
    assert type(err) is BindingError
    assert err.reason == "UNKNOWN"


def test_str_trailer_values_are_accepted():
    raw = status_bytes(grpc.StatusCode.INTERNAL, "boom", "INTERNAL", {"request_id": "abc"})
    err = error_from_rpc(FakeCall(grpc.StatusCode.INTERNAL, "boom", [(DETAILS_KEY, raw.decode("latin-1"))]))
    assert isinstance(err, bindingd_client.InternalError)
    assert err.request_id == "abc"


def test_errors_pickle_with_their_attributes():
    err = bindingd_client.BackendTimeout("slow", binding="DB", env="staging", backend="pg", request_id="r")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is bindingd_client.BackendTimeout
    assert (str(again), again.reason, again.binding, again.env, again.backend, again.request_id) == (
        "slow",
        "BACKEND_TIMEOUT",
        "DB",
        "staging",
        "pg",
        "r",
    )


def test_every_exception_is_exported_and_in_reasons():
    for cls in REASONS.values():
        assert getattr(bindingd_client, cls.__name__) is cls
        assert issubclass(cls, BindingError)
    assert set(TABLE) | {"DAEMON_UNAVAILABLE"} == set(REASONS)
    assert "BindingError" in bindingd_client.__all__
    assert errors.START_HINT.startswith("start it with")


def test_a_policy_denial_is_a_permission_denied():
    """Code that catches PermissionDenied (a read-only binding, a protected env) catches the
    gateway's policy denials too."""
    err = error_from_rpc(
        FakeCall(
            grpc.StatusCode.PERMISSION_DENIED,
            "denied",
            [(DETAILS_KEY, status_bytes(grpc.StatusCode.PERMISSION_DENIED, "denied", "POLICY_DENIED"))],
        )
    )
    assert type(err) is bindingd_client.PolicyDenied
    assert isinstance(err, bindingd_client.PermissionDenied)
    assert err.reason == "POLICY_DENIED"
