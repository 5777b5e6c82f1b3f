"""The D1 client's pure parts: value encoding and the folding of a Query answer."""

from __future__ import annotations

import pytest
from bindingd_client import SqlError
from bindingd_client.proto import database_pb2
from bindingd_client.sql import _Collect, _column_value, decode_value, encode_value


def test_values_round_trip_through_their_encoding() -> None:
    for value in (None, True, False, 0, -(2**63), 2**63 - 1, 1.5, "", "héllo", b"", b"\x00\xff"):
        decoded = decode_value(encode_value(value))
        assert decoded == value and type(decoded) is type(value)
    assert decode_value(encode_value(bytearray(b"ab"))) == b"ab"


def test_unsupported_values_are_refused_before_sending() -> None:
    with pytest.raises(TypeError, match="D1_TYPE_ERROR"):
        encode_value(2**63)
    with pytest.raises(TypeError, match=r"D1_TYPE_ERROR.*dict"):
        encode_value({"a": 1})


def test_answer_folds_into_results_raw_and_meta() -> None:
    row = database_pb2.SqlRow(values=[encode_value(1), encode_value("a")])
    collected = _Collect()
    collected.add(database_pb2.SqlQueryResponse(columns=["id", "name"], rows=[row]))
    collected.add(
        database_pb2.SqlQueryResponse(rows=[row], meta=database_pb2.SqlMeta(changes=0, rows_read=2))
    )
    result = collected.result()
    assert result.results == [{"id": 1, "name": "a"}, {"id": 1, "name": "a"}]
    assert result.success is True
    assert result.meta["rows_read"] == 2 and result.meta["size_after"] is None
    assert collected.raw(True) == [["id", "name"], [1, "a"], [1, "a"]]


def test_first_column_lookup() -> None:
    assert _column_value(["a"], [5], "a") == 5
    assert _column_value(["a"], None, "a") is None
    with pytest.raises(SqlError, match="D1_COLUMN_NOTFOUND"):
        _column_value(["a"], [5], "b")
