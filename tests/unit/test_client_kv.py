"""The KV request builders and value codecs, and the namespaces over a fake transport (no gRPC)."""

from __future__ import annotations

import array
import json

import pytest
from bindingd_client import KVKey, KVListResult, KVNamespace, KVNamespaceSync, KVValueWithMetadata
from bindingd_client import kv as kvmod
from bindingd_client.proto import kv_pb2


def entry(key, value=None, metadata=None, expiration=None):
    if value is None:
        return kv_pb2.KVEntry(key=key, found=False)
    return kv_pb2.KVEntry(key=key, found=True, value=value, metadata_json=metadata, expiration=expiration)


# --- decoding ------------------------------------------------------------------------------------


def test_decode_text_json_bytes():
    raw = '{"n": 1, "s": "é"}'.encode()
    assert kvmod.decode_value(raw, "text") == '{"n": 1, "s": "é"}'
    assert kvmod.decode_value(raw, "json") == {"n": 1, "s": "é"}
    assert kvmod.decode_value(raw, "bytes") == raw
    assert type(kvmod.decode_value(raw, "bytes")) is bytes


def test_invalid_utf8_is_replaced_like_text_decoder():
    assert kvmod.decode_value(b"ok\xff\xfe!", "text") == "ok\ufffd\ufffd!"


def test_invalid_json_raises_value_error():
    with pytest.raises(ValueError):
        kvmod.decode_value(b"{nope", "json")


@pytest.mark.parametrize("bad", ["arrayBuffer", "stream", "TEXT", ""])
def test_unknown_type_is_rejected_client_side(bad):
    with pytest.raises(ValueError, match="text"):
        kvmod.build_get("CACHE", "k", bad)


def test_bulk_bytes_is_rejected():
    with pytest.raises(ValueError, match="bulk get supports type text or json"):
        kvmod.build_get("CACHE", ["a", "b"], "bytes")


def test_get_request_and_parse():
    call = kvmod.build_get("CACHE", "user:1", "json", cache_ttl=120)
    assert call.method == "KV.Get"
    assert call.request == kv_pb2.KVGetRequest(binding="CACHE", key="user:1", cache_ttl=120)
    assert call.parse(kv_pb2.KVGetResponse(entry=entry("user:1", b'{"n":1}'))) == {"n": 1}
    assert call.parse(kv_pb2.KVGetResponse(entry=entry("user:1"))) is None
    assert not kvmod.build_get("CACHE", "k").request.HasField("cache_ttl")


def test_get_with_metadata_parse():
    call = kvmod.build_get("CACHE", "k", with_metadata=True)
    found = call.parse(kv_pb2.KVGetResponse(entry=entry("k", b"v", metadata='{"v":2}')))
    assert found == KVValueWithMetadata("v", {"v": 2})
    no_meta = call.parse(kv_pb2.KVGetResponse(entry=entry("k", b"v")))
    assert no_meta == KVValueWithMetadata("v", None)
    missing = call.parse(kv_pb2.KVGetResponse(entry=entry("k")))
    assert missing == KVValueWithMetadata(None, None)


def test_empty_value_is_found_not_missing():
    call = kvmod.build_get("CACHE", "k")
    assert call.parse(kv_pb2.KVGetResponse(entry=kv_pb2.KVEntry(key="k", found=True, value=b""))) == ""


def test_bulk_get_keeps_request_order_and_marks_missing():
    keys = ["b", "a", "c"]
    call = kvmod.build_get("CACHE", keys, "json")
    assert call.method == "KV.GetBulk"
    assert list(call.request.keys) == keys
    # Even if a daemon answered out of order, the dict follows the request.
    response = kv_pb2.KVGetBulkResponse(entries=[entry("a", b"1"), entry("c"), entry("b", b'"x"')])
    result = call.parse(response)
    assert list(result) == keys
    assert result == {"b": "x", "a": 1, "c": None}


def test_bulk_get_with_metadata():
    call = kvmod.build_get("CACHE", ("x", "y"), "text", with_metadata=True)
    response = kv_pb2.KVGetBulkResponse(entries=[entry("x", b"1", metadata="[1]"), entry("y")])
    assert call.parse(response) == {
        "x": KVValueWithMetadata("1", [1]),
        "y": KVValueWithMetadata(None, None),
    }


@pytest.mark.parametrize("key", [1, b"k", None, ["a", 2]])
def test_keys_must_be_str(key):
    with pytest.raises(TypeError):
        kvmod.build_get("CACHE", key)


# --- encoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("héllo", "héllo".encode()),
        (b"\x00\x01", b"\x00\x01"),
        (bytearray(b"ab"), b"ab"),
        (memoryview(b"abcdef")[1:3], b"bc"),
        (array.array("B", [1, 2, 3]), b"\x01\x02\x03"),
        ([b"a", b"b", bytearray(b"c")], b"abc"),
        ((chunk for chunk in [b"x", memoryview(b"y")]), b"xy"),
        (["hé", "llo"], "héllo".encode()),
        (iter(["a", b"b", "€"]), "ab€".encode()),
        ("", b""),
    ],
)
def test_encode_value(value, expected):
    assert kvmod.encode_value(value) == expected


@pytest.mark.parametrize("value", [1, 1.5, None, {"a": 1}, [["a"]], [1, 2], object()])
def test_encode_value_rejects_other_types(value):
    with pytest.raises(TypeError, match="KV value must be"):
        kvmod.encode_value(value)


async def test_encode_value_async_drains_async_iterables():
    async def chunks():
        yield b"ab"
        yield bytearray(b"cd")

    assert await kvmod.encode_value_async(chunks()) == b"abcd"
    assert await kvmod.encode_value_async("plain") == b"plain"


def test_async_iterable_needs_the_async_client():
    async def chunks():
        yield b"a"

    gen = chunks()
    with pytest.raises(TypeError, match="asyncio client"):
        kvmod.encode_value(gen)
    gen.aclose().close()  # never started; silence the "never awaited" warning path


def test_encode_metadata():
    assert kvmod.encode_metadata({"v": 2, "tags": ["a", "b"]}) == '{"v":2,"tags":["a","b"]}'
    assert kvmod.encode_metadata({"name": "é"}) == '{"name":"é"}'
    assert kvmod.encode_metadata("s") == '"s"'
    with pytest.raises(TypeError, match="JSON"):
        kvmod.encode_metadata({"x": object()})
    with pytest.raises(TypeError, match="JSON"):
        kvmod.encode_metadata({"x": float("nan")})


def test_put_request():
    call = kvmod.build_put("CACHE", "k", b"v", expiration_ttl=120, metadata={"v": 2})
    assert call.method == "KV.Put"
    assert call.request == kv_pb2.KVPutRequest(
        binding="CACHE", key="k", value=b"v", expiration_ttl=120, metadata_json='{"v":2}'
    )
    assert call.parse(kv_pb2.KVPutResponse()) is None
    bare = kvmod.build_put("CACHE", "k", b"v").request
    assert not bare.HasField("expiration")
    assert not bare.HasField("expiration_ttl")
    assert not bare.HasField("metadata_json")
    assert kvmod.build_put("CACHE", "k", b"", expiration=1_900_000_000.7).request.expiration == 1_900_000_000


def test_put_metadata_null_is_sent_only_when_not_none():
    # None means "no metadata"; falsy JSON values are still metadata.
    assert kvmod.build_put("C", "k", b"", metadata=0).request.metadata_json == "0"
    assert kvmod.build_put("C", "k", b"", metadata={}).request.metadata_json == "{}"


@pytest.mark.parametrize("bad", ["60", True, [60]])
def test_put_expiration_must_be_a_number(bad):
    with pytest.raises(TypeError):
        kvmod.build_put("C", "k", b"", expiration_ttl=bad)


def test_delete_request():
    call = kvmod.build_delete("CACHE", "k")
    assert (call.method, call.request) == ("KV.Delete", kv_pb2.KVDeleteRequest(binding="CACHE", key="k"))


def test_list_request_defaults_and_parse():
    assert kvmod.build_list("CACHE").request == kv_pb2.KVListRequest(binding="CACHE")
    call = kvmod.build_list("CACHE", prefix="user:", limit=2, cursor="c1")
    assert call.request == kv_pb2.KVListRequest(binding="CACHE", prefix="user:", limit=2, cursor="c1")
    page = call.parse(
        kv_pb2.KVListResponse(
            keys=[
                kv_pb2.KVListKey(name="user:1", expiration=1_900_000_000, metadata_json='{"v":1}'),
                kv_pb2.KVListKey(name="user:2"),
            ],
            list_complete=False,
            cursor="c2",
        )
    )
    assert page == KVListResult(
        keys=[KVKey("user:1", 1_900_000_000, {"v": 1}), KVKey("user:2", None, None)],
        list_complete=False,
        cursor="c2",
    )
    done = call.parse(kv_pb2.KVListResponse(list_complete=True, cursor="ignored"))
    assert done == KVListResult(keys=[], list_complete=True, cursor=None)


def test_result_types_are_frozen():
    with pytest.raises(AttributeError):
        KVKey("a").name = "b"  # type: ignore[misc]


# --- the namespaces over a fake transport -------------------------------------------------------


class Pages:
    """Answers KV.List with fixed pages and records every call made."""

    def __init__(self):
        self.calls = []
        self.pages = {
            "": kv_pb2.KVListResponse(keys=[kv_pb2.KVListKey(name="a")], cursor="p2"),
            "p2": kv_pb2.KVListResponse(
                keys=[kv_pb2.KVListKey(name="b"), kv_pb2.KVListKey(name="c")], cursor="p3"
            ),
            "p3": kv_pb2.KVListResponse(keys=[kv_pb2.KVListKey(name="d")], list_complete=True),
        }

    def answer(self, call):
        self.calls.append((call.method, call.request))
        if call.method == "KV.List":
            return call.parse(self.pages[call.request.cursor])
        if call.method == "KV.Get":
            return call.parse(kv_pb2.KVGetResponse(entry=entry(call.request.key, b'{"n":1}')))
        return call.parse(None)


class FakeAsyncTransport(Pages):
    async def call(self, call):
        return self.answer(call)


class FakeSyncTransport(Pages):
    def call(self, call):
        return self.answer(call)


async def test_async_namespace_iter_keys_follows_cursors():
    transport = FakeAsyncTransport()
    ns = KVNamespace(transport, "CACHE")
    assert [k.name async for k in ns.iter_keys(prefix="")] == ["a", "b", "c", "d"]
    assert [req.cursor for _, req in transport.calls] == ["", "p2", "p3"]


def test_sync_namespace_iter_keys_follows_cursors():
    transport = FakeSyncTransport()
    ns = KVNamespaceSync(transport, "CACHE")
    assert [k.name for k in ns.iter_keys("x")] == ["a", "b", "c", "d"]
    assert {req.prefix for _, req in transport.calls} == {"x"}


async def test_async_namespace_methods_build_the_right_calls():
    async def body():
        yield b'{"a":'
        yield b"1}"

    transport = FakeAsyncTransport()
    ns = KVNamespace(transport, "CACHE")
    assert await ns.get("k", type="json") == {"n": 1}
    assert await ns.put("k", body(), metadata={"m": True}) is None
    assert await ns.delete("k") is None
    put = transport.calls[1][1]
    assert json.loads(put.value) == {"a": 1}
    assert put.metadata_json == '{"m":true}'
    assert [m for m, _ in transport.calls] == ["KV.Get", "KV.Put", "KV.Delete"]
    assert repr(ns) == "<KVNamespace CACHE>"


def test_sync_namespace_methods_build_the_right_calls():
    transport = FakeSyncTransport()
    ns = KVNamespaceSync(transport, "CACHE")
    assert ns.get("k") == '{"n":1}'
    assert ns.get_with_metadata("k", "json") == KVValueWithMetadata({"n": 1}, None)
    ns.put("k", "v", expiration_ttl=60)
    assert transport.calls[-1][1] == kv_pb2.KVPutRequest(
        binding="CACHE", key="k", value=b"v", expiration_ttl=60
    )
