"""The daemon's error table and the Python client's exception classes must agree."""

from __future__ import annotations

import grpc
from bindingd_client import BindingError
from bindingd_client.errors import REASONS

from bindingd.errors import TABLE, BindingdError, Reason


def test_every_reason_has_its_client_class() -> None:
    for reason, kind in TABLE.items():
        cls = REASONS[reason.value]
        assert cls.__name__ == kind.client_class
        assert issubclass(cls, BindingError)


def test_codes_follow_the_design_table() -> None:
    assert TABLE[Reason.BINDING_NOT_FOUND].code == grpc.StatusCode.NOT_FOUND
    assert TABLE[Reason.SQL_ERROR].code == grpc.StatusCode.INVALID_ARGUMENT
    assert TABLE[Reason.AUTH_FAILED].code == grpc.StatusCode.UNAUTHENTICATED


def test_context_names_the_binding_once() -> None:
    err = BindingdError(Reason.INVALID_ARGUMENT, "KV key is empty").with_context(
        binding="CACHE", env="dev", backend="local"
    )
    assert str(err) == 'binding "CACHE" (env "dev"): KV key is empty'
    assert (err.binding, err.env, err.backend) == ("CACHE", "dev", "local")
    again = err.with_context(binding="CACHE", env="dev", backend="local")
    assert str(again) == str(err)
