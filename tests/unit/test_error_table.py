"""The daemon's error table, the README's and the Python client's exception classes must agree.

The Node client is checked against the same table by clients/node/test/error-table.test.mjs
(run by `make node-test`, part of `make test`).
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
from bindingd_client import BindingError
from bindingd_client.errors import REASONS

from bindingd.errors import TABLE, BindingdError, Reason

README = Path(__file__).resolve().parents[2] / "README.md"
# Reasons the client raises itself; the daemon never sends them.
CLIENT_ONLY = {"DAEMON_UNAVAILABLE"}


def test_every_reason_has_its_client_class() -> None:
    for reason, kind in TABLE.items():
        cls = REASONS[reason.value]
        assert cls.__name__ == kind.client_class
        assert issubclass(cls, BindingError)


def test_the_client_knows_no_other_reason() -> None:
    assert set(REASONS) - CLIENT_ONLY == {reason.value for reason in TABLE}
    assert not CLIENT_ONLY & {reason.value for reason in TABLE}


def test_the_readme_table_is_the_daemons() -> None:
    """The table users read: each row's reason, gRPC code and exception class."""
    rows = re.findall(r"^\| ([A-Z_]+) \| ([A-Z_]+) \| `(\w+)`", README.read_text(encoding="utf-8"), re.M)
    documented = {reason: (code, cls) for reason, code, cls in rows}
    assert len(documented) == len(rows)  # no reason twice
    assert documented == {reason.value: (kind.code.name, kind.client_class) for reason, kind in TABLE.items()}


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
