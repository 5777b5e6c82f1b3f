"""The list cursors of KV and of local object listings stay byte for byte what they were:
clients hold them between calls, across a daemon upgrade."""

from __future__ import annotations

import pytest

from bindingd.domain import kv, objects
from bindingd.errors import BindingdError

# (prefix, last key, KV's cursor, objects' cursor), as the daemon wrote them before issue 13.
CURSORS = [
    ("p/", "p/ünï", "eyJwIjoicC8iLCJhIjoicC9cdTAwZmNuXHUwMGVmIn0", "eyJwIjoicC8iLCJhIjoicC_DvG7DryJ9"),
    ("", "a", "eyJwIjoiIiwiYSI6ImEifQ", "eyJwIjoiIiwiYSI6ImEifQ"),
    ("x", 'x"y/☃', "eyJwIjoieCIsImEiOiJ4XCJ5L1x1MjYwMyJ9", "eyJwIjoieCIsImEiOiJ4XCJ5L-KYgyJ9"),
]


@pytest.mark.parametrize(("prefix", "after", "kv_cursor", "objects_cursor"), CURSORS)
def test_cursors_are_unchanged(prefix: str, after: str, kv_cursor: str, objects_cursor: str) -> None:
    assert kv.encode_cursor(prefix, after) == kv_cursor
    assert objects.encode_cursor(prefix, after) == objects_cursor
    for decode in (kv.decode_cursor, objects.decode_cursor):
        assert decode(kv_cursor, prefix) == after
        assert decode(objects_cursor, prefix) == after


def test_each_type_names_its_own_cursor_in_the_error() -> None:
    with pytest.raises(BindingdError, match=r"^KV list cursor is not valid for this list"):
        kv.decode_cursor("!!!", "")
    with pytest.raises(BindingdError, match=r"^list cursor is not valid for this list; pass the cursor of"):
        objects.decode_cursor(objects.encode_cursor("a", "b"), "other")
    assert kv.decode_cursor("", "p/") is None and objects.decode_cursor("", "p/") is None
