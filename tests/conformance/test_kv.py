"""The KV conformance suite: Workers KV behaviour, the same for every provider.

Each test talks to the real daemon (in this process, on a real unix socket) through the
Python client, on every backend of tests/conformance/backends.py that serves kv.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bindingd_client import Env, InvalidArgument, KVNamespace
from conformance.backends import Backend, params, serving
from support import FakeClock, connected


@pytest.fixture(params=params(serving("kv")))
async def kv_env(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Env]:
    backend: Backend = request.param
    assert backend.kv is not None
    async with backend.kv(tmp_path, request) as project, connected(project.config, clock=clock) as env:
        yield env


@pytest.fixture
def kv(kv_env: Env) -> KVNamespace:
    return kv_env.CACHE


@pytest.fixture
def backend(request: pytest.FixtureRequest, kv_env: Env) -> Backend:
    return request.node.callspec.params["kv_env"]  # type: ignore[no-any-return]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_missing_key_is_none(kv: KVNamespace) -> None:
    assert await kv.get("nope") is None
    assert await kv.get("nope", type="json") is None
    assert await kv.get("nope", type="bytes") is None
    missing = await kv.get_with_metadata("nope")
    assert (missing.value, missing.metadata) == (None, None)


async def test_text_json_and_bytes_round_trip(kv: KVNamespace) -> None:
    await kv.put("t", "héllo wörld ✓")
    assert await kv.get("t") == "héllo wörld ✓"
    assert await kv.get("t", type="bytes") == "héllo wörld ✓".encode()

    await kv.put("j", '{"n": 1, "xs": [1, 2]}')
    assert await kv.get("j", type="json") == {"n": 1, "xs": [1, 2]}

    raw = bytes(range(256)) * 4
    await kv.put("b", raw)
    assert await kv.get("b", type="bytes") == raw
    # Text decoding replaces invalid UTF-8 the way TextDecoder does, it does not fail.
    assert await kv.get("b", type="text") == raw.decode("utf-8", "replace")

    await kv.put("empty", "")
    assert await kv.get("empty") == ""


async def test_put_overwrites_value_and_metadata(kv: KVNamespace) -> None:
    await kv.put("k", "one", metadata={"v": 1, "tags": ["a"]})
    got = await kv.get_with_metadata("k")
    assert (got.value, got.metadata) == ("one", {"v": 1, "tags": ["a"]})
    await kv.put("k", "two")
    got = await kv.get_with_metadata("k")
    assert (got.value, got.metadata) == ("two", None)


async def test_delete(kv: KVNamespace) -> None:
    await kv.put("k", "v")
    await kv.delete("k")
    assert await kv.get("k") is None
    await kv.delete("k")  # deleting a missing key succeeds, as in Workers KV


async def test_bindings_are_separate_namespaces(kv_env: Env) -> None:
    await kv_env.CACHE.put("shared-name", "in CACHE")
    assert await kv_env.OTHER.get("shared-name") is None


async def test_bulk_get_keeps_request_order(kv: KVNamespace) -> None:
    await asyncio.gather(*(kv.put(f"k{i}", f'{{"i": {i}}}') for i in range(5)))
    keys = ["k3", "missing", "k0", "k4"]
    got = await kv.get(keys)
    assert list(got) == keys
    assert got == {"k3": '{"i": 3}', "missing": None, "k0": '{"i": 0}', "k4": '{"i": 4}'}
    assert (await kv.get(keys, type="json"))["k3"] == {"i": 3}
    with_meta = await kv.get_with_metadata(["k0", "missing"])
    assert with_meta["k0"].value == '{"i": 0}'
    assert with_meta["missing"].value is None


async def test_bulk_get_limit(kv: KVNamespace) -> None:
    assert len(await kv.get([f"k{i}" for i in range(100)])) == 100
    with pytest.raises(InvalidArgument, match="limit is 100"):
        await kv.get([f"k{i}" for i in range(101)])


async def test_bulk_get_answers_each_key_once(kv: KVNamespace) -> None:
    await kv.put("big", b"x" * (1024 * 1024))
    got = await kv.get(["big"] * 25)
    assert list(got) == ["big"] and len(got["big"]) == 1024 * 1024


async def test_bulk_get_refuses_values_over_25_mib(kv: KVNamespace) -> None:
    """Workers KV refuses a bulk get whose values add up to more than 25 MiB, counting a key
    asked for twice twice (workerd answers such a get with the store's 413)."""
    mib = 1024 * 1024
    await asyncio.gather(
        kv.put("big0", b"x" * (13 * mib)), kv.put("big1", b"y" * (12 * mib)), kv.put("one", b"z")
    )
    assert [len(v) for v in (await kv.get(["big0", "big1", "missing"])).values() if v] == [13 * mib, 12 * mib]
    for keys in (["big0", "big1", "one"], ["big0", "big0"]):
        with pytest.raises(InvalidArgument, match=r"more than 25 MiB \(26214400 bytes\)"):
            await kv.get(keys)
        with pytest.raises(InvalidArgument, match="more than 25 MiB"):
            await kv.get_with_metadata(keys)


async def test_expiration_ttl(kv: KVNamespace, clock: FakeClock, backend: Backend) -> None:
    await kv.put("short", "v", expiration_ttl=60, metadata={"m": 1})
    listed = (await kv.list(prefix="short")).keys
    if backend.kv_expiry_follows_clock:
        assert listed[0].expiration == int(clock.now) + 60
    else:
        # The store counts the TTL from its own clock (the daemon sends it as a TTL), which is
        # the real time of the put, at or after the test's clock.
        assert int(clock.now) + 60 <= listed[0].expiration <= int(time.time()) + 61
    clock.advance(59)
    assert await kv.get("short") == "v"
    if not backend.kv_expiry_follows_clock:
        return  # the store expires it a minute from now by its own clock
    clock.advance(1.5)
    assert await kv.get("short") is None
    assert (await kv.get_with_metadata("short")).value is None
    assert (await kv.get(["short"])) == {"short": None}
    assert (await kv.list(prefix="short")).keys == []


async def test_absolute_expiration(kv: KVNamespace, clock: FakeClock, backend: Backend) -> None:
    at = int(clock.now) + 120
    await kv.put("abs", "v", expiration=at)
    assert (await kv.list(prefix="abs")).keys[0].expiration == at
    clock.advance(119)
    assert await kv.get("abs") == "v"
    if not backend.kv_expiry_follows_clock:
        return  # the store expires it by its own clock
    clock.advance(2)
    assert await kv.get("abs") is None


async def test_put_without_expiration_clears_the_old_one(kv: KVNamespace, clock: FakeClock) -> None:
    await kv.put("k", "v", expiration_ttl=60)
    await kv.put("k", "w")
    clock.advance(3600)
    assert await kv.get("k") == "w"
    assert (await kv.list(prefix="k")).keys[0].expiration is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expiration_ttl": 59}, "minimum is 60"),
        ({"expiration_ttl": 0}, "minimum is 60"),
        ({"expiration": 1}, "at least 60 s in the future"),
        ({"expiration": 1_700_000_000_000}, "not milliseconds"),
        ({"expiration": 2**63 - 1}, "not milliseconds"),
        ({"expiration_ttl": 2**62}, "before the year 10000"),
    ],
)
async def test_expiration_limits(kv: KVNamespace, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as err:
        await kv.put("k", "v", **kwargs)
    assert err.value.binding == "CACHE"
    assert await kv.get("k") is None


async def test_key_limits(kv: KVNamespace) -> None:
    longest = "k" * 512
    await kv.put(longest, "v")
    assert await kv.get(longest) == "v"
    # 512 bytes of UTF-8, not 512 characters.
    with pytest.raises(InvalidArgument, match="limit is 512 bytes"):
        await kv.put("é" * 257, "v")
    with pytest.raises(InvalidArgument, match="limit is 512 bytes"):
        await kv.get("k" * 513)
    with pytest.raises(InvalidArgument, match="empty"):
        await kv.put("", "v")
    for bad in (".", ".."):
        with pytest.raises(InvalidArgument, match="cannot be keys"):
            await kv.put(bad, "v")


async def test_value_limit(kv: KVNamespace) -> None:
    limit = 25 * 1024 * 1024
    await kv.put("big", b"x" * limit)
    assert len(await kv.get("big", type="bytes")) == limit
    with pytest.raises(InvalidArgument, match="the limit is 25 MiB") as err:
        await kv.put("too-big", b"x" * (limit + 1))
    assert "CACHE" in str(err.value)
    assert await kv.get("too-big") is None


async def test_metadata_limit(kv: KVNamespace) -> None:
    fits = {"s": "x" * (1024 - len('{"s":""}'))}
    await kv.put("m", "v", metadata=fits)
    assert (await kv.get_with_metadata("m")).metadata == fits
    with pytest.raises(InvalidArgument, match="limit is 1024 bytes"):
        await kv.put("m2", "v", metadata={"s": "x" * 1024})
    assert await kv.get("m2") is None


async def test_list_is_sorted_by_utf8_bytes_with_metadata(kv: KVNamespace) -> None:
    names = ["b", "a", "B", "a/b", "a0", "ä", "日本", "a b", "zz", "\u00ff", "\U0001f600"]
    for i, name in enumerate(names):
        await kv.put(name, "v", metadata={"i": i} if i % 2 else None)
    listed = (await kv.list()).keys
    assert [k.name for k in listed] == sorted(names, key=lambda n: n.encode())
    by_name = {k.name: k for k in listed}
    assert by_name["a"].metadata == {"i": 1}
    assert by_name["b"].metadata is None
    assert all(k.expiration is None for k in listed)


async def test_list_prefix_is_literal(kv: KVNamespace) -> None:
    for name in ["user:1", "user:2", "user_x", "users", "usEr:3", "%user", "user%1", "other"]:
        await kv.put(name, "v")
    assert [k.name for k in (await kv.list(prefix="user:")).keys] == ["user:1", "user:2"]
    assert [k.name for k in (await kv.list(prefix="user%")).keys] == ["user%1"]
    assert [k.name for k in (await kv.list(prefix="user_")).keys] == ["user_x"]
    assert (await kv.list(prefix="nothing")).keys == []


async def test_list_prefix_is_held_to_the_key_limit(kv: KVNamespace) -> None:
    await kv.put("p" * 512, "v")
    assert [k.name for k in (await kv.list(prefix="p" * 512)).keys] == ["p" * 512]
    with pytest.raises(InvalidArgument, match="prefix is 513 bytes; the limit is 512 bytes"):
        await kv.list(prefix="p" * 513)
    with pytest.raises(InvalidArgument, match="prefix is 514 bytes"):
        await kv.list(prefix="é" * 257)


async def test_list_pages_through_every_key_once(kv: KVNamespace) -> None:
    names = [f"item:{i:04}" for i in range(53)]
    await asyncio.gather(*(kv.put(n, "v") for n in names))
    await kv.put("zzz-not-in-prefix", "v")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await kv.list(prefix="item:", limit=10, cursor=cursor)
        pages += 1
        seen += [k.name for k in page.keys]
        if page.list_complete:
            assert page.cursor is None
            break
        assert page.cursor
        cursor = page.cursor
    assert seen == names
    assert pages == 6


async def test_list_paging_while_keys_are_written(kv: KVNamespace) -> None:
    names = [f"p:{i:03}" for i in range(0, 100, 2)]
    await asyncio.gather(*(kv.put(n, "v") for n in names))
    first = await kv.list(prefix="p:", limit=20)
    # Writes behind and ahead of the cursor, and a delete ahead of it.
    await kv.put("p:001", "new, behind the cursor")
    await kv.put("p:091", "new, ahead of the cursor")
    await kv.delete("p:050")
    seen = [k.name for k in first.keys]
    cursor = first.cursor
    while cursor:
        page = await kv.list(prefix="p:", limit=20, cursor=cursor)
        seen += [k.name for k in page.keys]
        cursor = page.cursor
    assert len(seen) == len(set(seen)), "a key was listed twice"
    expected = sorted((set(names) - {"p:050"}) | {"p:091"})
    assert seen == expected


async def test_list_limit_and_default(kv: KVNamespace) -> None:
    await asyncio.gather(*(kv.put(f"k{i:04}", "v") for i in range(1001)))
    page = await kv.list()
    assert len(page.keys) == 1000 and not page.list_complete
    rest = await kv.list(cursor=page.cursor)
    assert [k.name for k in rest.keys] == ["k1000"] and rest.list_complete
    with pytest.raises(InvalidArgument, match="between 1 and 1000"):
        await kv.list(limit=1001)
    for bad in (-1, 0):
        with pytest.raises(InvalidArgument, match="between 1 and 1000"):
            await kv.list(limit=bad)


async def test_bad_cursor(kv: KVNamespace) -> None:
    for i in range(3):
        await kv.put(f"a{i}", "v")
    page = await kv.list(prefix="a", limit=1)
    for cursor in ["garbage!", "eyJ4Ijp0cnVlfQ", page.cursor[:-2] + "zz"]:
        with pytest.raises(InvalidArgument, match="cursor"):
            await kv.list(prefix="a", cursor=cursor)
    # A cursor belongs to its prefix.
    with pytest.raises(InvalidArgument, match="cursor"):
        await kv.list(prefix="b", cursor=page.cursor)


async def test_cache_ttl_is_validated(kv: KVNamespace) -> None:
    await kv.put("k", "v")
    assert await kv.get("k", cache_ttl=30) == "v"
    with pytest.raises(InvalidArgument, match="minimum is 30"):
        await kv.get("k", cache_ttl=29)
    with pytest.raises(InvalidArgument, match="minimum is 30"):
        await kv.get(["k"], cache_ttl=10)


async def test_unusual_keys(kv: KVNamespace) -> None:
    keys = [
        "a/b/../c",
        "../../etc/passwd",
        "with space",
        "tab\tkey",
        "emoji 🎉",
        "nul\x00inside",
        "'; DROP TABLE kv;--",
    ]
    for key in keys:
        await kv.put(key, f"value of {key}")
    for key in keys:
        assert await kv.get(key) == f"value of {key}"
    assert sorted(k.name for k in (await kv.list()).keys) == sorted(keys)
