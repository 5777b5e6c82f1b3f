"""The objects conformance suite: R2 behaviour, the same for every provider.

Each test talks to the real daemon (in this process, on a real unix socket) through the Python
client, on every backend of tests/conformance/backends.py that serves objects. The s3 provider
runs against `moto_server`, a real S3 protocol server started on a free 127.0.0.1 port
(tests/objects_support.py); each test gets a bucket of its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bindingd_client import (
    BackendTimeout,
    BackendUnavailable,
    Env,
    InvalidArgument,
    PermissionDenied,
    R2Bucket,
    R2Object,
    R2ObjectBody,
    connect,
)
from conformance.backends import Backend, Project, params, serving
from objects_support import MotoServer
from support import bindingd_cli, connected, daemon_in_process, write_project

MIB = 1024 * 1024


@pytest.fixture(params=params(serving("objects")))
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture
async def project(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Project]:
    assert backend.objects is not None
    async with backend.objects(tmp_path, request) as made:
        yield made


@pytest.fixture
async def env(project: Project) -> AsyncIterator[Env]:
    async with connected(project.config) as client:
        yield client


@pytest.fixture
def bucket(env: Env) -> R2Bucket:
    return env.ASSETS


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def body_of(got: object) -> bytes:
    assert isinstance(got, R2ObjectBody), got
    return await got.bytes()


def temp_folder(backend: Backend, tmp_path: Path) -> Path | None:
    """Where the backend keeps the bodies being written to ASSETS, if on this machine."""
    root = tmp_path / ".bindingd" / "state" / "objects" / "ASSETS"
    if backend.on_local_disk:
        return root / "tmp"
    if backend.spools_to_disk:
        return root / "spool"
    return None


async def test_missing_key_is_none(bucket: R2Bucket) -> None:
    assert await bucket.head("nope") is None
    assert await bucket.get("nope") is None
    await bucket.delete("nope")  # deleting a missing key succeeds


async def test_put_get_head_round_trip(bucket: R2Bucket) -> None:
    data = bytes(range(256)) * 1000
    before = time.time()
    put = await bucket.put("a/b.bin", data)
    assert isinstance(put, R2Object)
    assert (put.key, put.size, put.etag, put.http_etag) == ("a/b.bin", len(data), md5(data), f'"{md5(data)}"')
    assert put.version
    assert before - 5 <= put.uploaded.timestamp() <= time.time() + 5
    assert put.checksums.md5 == hashlib.md5(data).digest()
    got = await bucket.get("a/b.bin")
    assert isinstance(got, R2ObjectBody)
    assert (got.key, got.size, got.etag, got.version) == ("a/b.bin", len(data), put.etag, put.version)
    assert got.range == {"offset": 0, "length": len(data)}
    assert await got.bytes() == data
    head = await bucket.head("a/b.bin")
    assert head is not None and (head.etag, head.version, head.size) == (put.etag, put.version, len(data))
    assert head.checksums.md5 == hashlib.md5(data).digest()


async def test_text_json_and_empty_bodies(bucket: R2Bucket) -> None:
    await bucket.put("t", "héllo ✓")
    assert await (await bucket.get("t")).text() == "héllo ✓"  # type: ignore[union-attr]
    await bucket.put("j", '{"n": [1, 2]}')
    assert await (await bucket.get("j")).json() == {"n": [1, 2]}  # type: ignore[union-attr]
    empty = await bucket.put("e", b"")
    assert empty is not None and empty.size == 0 and empty.etag == md5(b"")
    assert await body_of(await bucket.get("e")) == b""


async def test_put_accepts_file_objects_and_async_iterators(bucket: R2Bucket, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 17)
    path = tmp_path / "src.bin"
    path.write_bytes(data)
    with path.open("rb") as f:
        assert (await bucket.put("from-file", f)).etag == md5(data)  # type: ignore[union-attr]
    assert (await bucket.put("from-bytesio", io.BytesIO(data))).size == len(data)  # type: ignore[union-attr]

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 700_000):
            yield data[start : start + 700_000]

    assert (await bucket.put("from-iter", pieces())).etag == md5(data)  # type: ignore[union-attr]
    for key in ("from-file", "from-bytesio", "from-iter"):
        assert await body_of(await bucket.get(key)) == data


async def test_body_streams_in_chunks(bucket: R2Bucket) -> None:
    data = os.urandom(5 * MIB + 3)
    await bucket.put("big", data)
    got = await bucket.get("big")
    assert isinstance(got, R2ObjectBody)
    sizes = [len(chunk) async for chunk in got]
    assert sum(sizes) == len(data) and len(sizes) >= 5 and max(sizes) <= MIB
    assert got.body_used
    # Stopping early frees the stream; the binding keeps working.
    got = await bucket.get("big")
    assert isinstance(got, R2ObjectBody)
    async for _chunk in got:
        break
    assert (await bucket.head("big")).size == len(data)  # type: ignore[union-attr]


async def test_http_and_custom_metadata(bucket: R2Bucket) -> None:
    http = {
        "content_type": "image/jpeg",
        "content_language": "en-GB",
        "content_disposition": 'attachment; filename="b.jpg"',
        "content_encoding": "identity",
        "cache_control": "max-age=3600",
        "cache_expiry": dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    }
    custom = {"owner": "ann", "purpose": "test"}
    put = await bucket.put("m", b"x", http_metadata=http, custom_metadata=custom)
    assert put is not None and put.http_metadata == http and put.custom_metadata == custom
    head = await bucket.head("m")
    assert head is not None and head.http_metadata == http and head.custom_metadata == custom
    got = await bucket.get("m")
    assert got is not None and got.http_metadata == http and got.custom_metadata == custom
    # A put replaces the metadata too.
    await bucket.put("m", b"y")
    head = await bucket.head("m")
    assert head is not None and head.http_metadata == {} and head.custom_metadata == {}


async def test_metadata_a_header_cannot_hold_is_the_callers_mistake(
    bucket: R2Bucket, backend: Backend
) -> None:
    """Never a transport error: a line break in http metadata is refused by every provider, and
    non-ASCII custom metadata is stored where it can be and refused where HTTP headers carry it
    (s3)."""
    for call in (
        lambda: bucket.put("h", b"x", http_metadata={"content_type": "text/plain\r\nX-Evil: 1"}),
        lambda: bucket.create_multipart_upload("h", http_metadata={"cache_control": "a\nb"}),
    ):
        with pytest.raises(InvalidArgument, match="line break"):
            await call()
    for custom in ({"owner": "ünï ✓"}, {"ké": "v"}, {"k": "a\nb"}):
        if backend.ascii_custom_metadata:
            with pytest.raises(InvalidArgument, match="printable ASCII"):
                await bucket.put("h", os.urandom(2 * MIB), custom_metadata=custom)
            with pytest.raises(InvalidArgument, match="printable ASCII"):
                await bucket.create_multipart_upload("h", custom_metadata=custom)
        else:
            await bucket.put("h", b"x", custom_metadata=custom)
            head = await bucket.head("h")
            assert head is not None and head.custom_metadata == custom
    if backend.ascii_custom_metadata:
        assert await bucket.head("h") is None


async def test_overwrite_changes_etag_and_version(bucket: R2Bucket) -> None:
    one = await bucket.put("k", b"one")
    two = await bucket.put("k", b"two")
    assert one is not None and two is not None
    assert one.version != two.version and two.etag == md5(b"two")
    assert await body_of(await bucket.get("k")) == b"two"


@pytest.mark.parametrize(
    ("range", "expected"),
    [
        ({"offset": 2, "length": 3}, (2, 3)),
        ({"offset": 7}, (7, 3)),
        ({"length": 4}, (0, 4)),
        ({"suffix": 3}, (7, 3)),
        ({"suffix": 50}, (0, 10)),  # a suffix larger than the object is the whole object
        ({"offset": 8, "length": 50}, (8, 2)),  # a length past the end is clamped
    ],
)
async def test_ranges(bucket: R2Bucket, range: dict[str, int], expected: tuple[int, int]) -> None:
    data = b"0123456789"
    await bucket.put("r", data)
    got = await bucket.get("r", range=range)
    assert isinstance(got, R2ObjectBody)
    offset, length = expected
    assert got.range == {"offset": offset, "length": length}
    assert got.size == len(data)
    assert await got.bytes() == data[offset : offset + length]


async def test_bad_ranges(bucket: R2Bucket) -> None:
    await bucket.put("r", b"0123456789")
    with pytest.raises(InvalidArgument, match="past the end"):
        await bucket.get("r", range={"offset": 11})
    # A range of no bytes is not satisfiable either, as in R2 (workerd).
    for empty in ({"offset": 10}, {"suffix": 0}, {"offset": 3, "length": 0}):
        with pytest.raises(InvalidArgument, match="not satisfiable"):
            await bucket.get("r", range=empty)
    await bucket.put("empty", b"")
    with pytest.raises(InvalidArgument, match="not satisfiable"):
        await bucket.get("empty", range={"offset": 0})
    assert await body_of(await bucket.get("empty")) == b""
    with pytest.raises(InvalidArgument, match="must not be negative"):
        await bucket.get("r", range={"offset": -1})
    with pytest.raises(InvalidArgument, match="not both"):
        await bucket.get("r", range={"suffix": 2, "offset": 1})


async def test_get_conditions_return_metadata_without_body(bucket: R2Bucket) -> None:
    put = await bucket.put("c", b"body")
    assert put is not None
    ok = await bucket.get("c", only_if={"etag_matches": put.etag})
    assert await body_of(ok) == b"body"
    ok = await bucket.get("c", only_if={"etag_matches": put.http_etag})
    assert await body_of(ok) == b"body"
    failed = await bucket.get("c", only_if={"etag_matches": "0" * 32})
    assert isinstance(failed, R2Object) and not isinstance(failed, R2ObjectBody)
    assert failed.etag == put.etag and failed.size == 4
    failed = await bucket.get("c", only_if={"etag_does_not_match": put.etag})
    assert isinstance(failed, R2Object)
    assert await body_of(await bucket.get("c", only_if={"etag_does_not_match": "0" * 32})) == b"body"
    uploaded_ms = int(put.uploaded.timestamp() * 1000)
    assert isinstance(await bucket.get("c", only_if={"uploaded_before": uploaded_ms - 1000}), R2Object)
    assert await body_of(await bucket.get("c", only_if={"uploaded_before": uploaded_ms + 60_000})) == b"body"
    assert isinstance(await bucket.get("c", only_if={"uploaded_after": uploaded_ms + 60_000}), R2Object)
    assert await body_of(await bucket.get("c", only_if={"uploaded_after": uploaded_ms - 60_000})) == b"body"
    assert await bucket.get("missing", only_if={"etag_matches": put.etag}) is None


async def test_put_conditions(bucket: R2Bucket) -> None:
    first = await bucket.put("c", b"one", only_if={"etag_does_not_match": "*"})
    assert first is not None  # created: nothing existed
    assert await bucket.put("c", b"two", only_if={"etag_does_not_match": "*"}) is None
    assert await bucket.put("c", b"two", only_if={"etag_matches": "0" * 32}) is None
    assert await body_of(await bucket.get("c")) == b"one"
    second = await bucket.put("c", b"two", only_if={"etag_matches": first.etag})
    assert second is not None and second.etag == md5(b"two")
    assert await bucket.put("absent", b"x", only_if={"etag_matches": first.etag}) is None
    assert await bucket.head("absent") is None


async def test_if_match_compares_strongly(bucket: R2Bucket) -> None:
    """A weak etag never meets etag_matches (If-Match); it does name the object for
    etag_does_not_match (If-None-Match compares weakly), as R2 and workerd answer."""
    put = await bucket.put("w", b"weak")
    assert put is not None
    weak = f'W/"{put.etag}"'
    failed = await bucket.get("w", only_if={"etag_matches": weak})
    assert isinstance(failed, R2Object) and not isinstance(failed, R2ObjectBody)
    assert await bucket.put("w", b"replaced", only_if={"etag_matches": weak}) is None
    assert await body_of(await bucket.get("w", only_if={"etag_matches": f'{weak}, "{put.etag}"'})) == b"weak"
    failed = await bucket.get("w", only_if={"etag_does_not_match": weak})
    assert isinstance(failed, R2Object) and not isinstance(failed, R2ObjectBody)
    assert await bucket.put("w", b"replaced", only_if={"etag_does_not_match": weak}) is None
    assert await body_of(await bucket.get("w")) == b"weak"


async def test_conditional_put_on_a_missing_key(bucket: R2Bucket) -> None:
    """Nothing exists to match an etag or to have been uploaded after a date: nothing is stored.
    The other conditions are met by a missing key, and the put creates it (as in R2)."""
    past_ms = int((time.time() - 86400) * 1000)
    future_ms = int((time.time() + 86400) * 1000)
    refused = {
        "match": {"etag_matches": "0" * 32},
        "match-any": {"etag_matches": "*"},
        "after-past": {"uploaded_after": past_ms},
        "after-future": {"uploaded_after": future_ms},
    }
    for name, only_if in refused.items():
        assert await bucket.put(f"new-{name}", b"v", only_if=only_if) is None, name
        assert await bucket.head(f"new-{name}") is None, name
    stored = {
        "no-match": {"etag_does_not_match": "0" * 32},
        "before-past": {"uploaded_before": past_ms},
        "before-future": {"uploaded_before": future_ms},
    }
    for name, only_if in stored.items():
        put = await bucket.put(f"new-{name}", b"v", only_if=only_if)
        assert put is not None and put.key == f"new-{name}", name
        assert await body_of(await bucket.get(f"new-{name}")) == b"v"


async def test_sha384_and_sha512_are_verified_and_kept(bucket: R2Bucket) -> None:
    data = b"bytes with long digests"
    for name in ("sha384", "sha512"):
        digest = hashlib.new(name, data).digest()
        put = await bucket.put(f"long-{name}", data, **{name: digest.hex()})
        assert put is not None and getattr(put.checksums, name) == digest
        assert put.checksums.md5 == hashlib.md5(data).digest()
        head = await bucket.head(f"long-{name}")
        assert head is not None and getattr(head.checksums, name) == digest
        got = await bucket.get(f"long-{name}")
        assert isinstance(got, R2ObjectBody) and getattr(got.checksums, name) == digest
        assert await got.bytes() == data
        with pytest.raises(InvalidArgument, match=f"{name} checksum .* does not match.*nothing was stored"):
            await bucket.put(f"bad-{name}", data, **{name: hashlib.new(name, b"other").digest()})
        assert await bucket.head(f"bad-{name}") is None
        with pytest.raises(InvalidArgument, match=f"{len(digest)} bytes"):
            await bucket.put(f"short-{name}", data, **{name: b"abc"})
    # Only the digests asked for are kept: an overwrite without one has none.
    await bucket.put("long-sha512", data)
    head = await bucket.head("long-sha512")
    assert head is not None and head.checksums.sha512 is None and head.checksums.sha384 is None
    assert head.custom_metadata == {}


async def test_checksums_are_verified(bucket: R2Bucket) -> None:
    data = b"checked bytes"
    put = await bucket.put(
        "sum",
        data,
        md5=hashlib.md5(data).hexdigest(),
        sha1=hashlib.sha1(data).digest(),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    assert put is not None
    assert put.checksums.sha1 == hashlib.sha1(data).digest()
    assert put.checksums.sha256 == hashlib.sha256(data).digest()
    head = await bucket.head("sum")
    assert head is not None and head.checksums.sha256 == hashlib.sha256(data).digest()
    for name, algo in (("md5", hashlib.md5), ("sha1", hashlib.sha1), ("sha256", hashlib.sha256)):
        with pytest.raises(InvalidArgument, match=f"{name} checksum .* does not match.*nothing was stored"):
            await bucket.put(f"bad-{name}", data, **{name: algo(b"other").digest()})
        assert await bucket.head(f"bad-{name}") is None
    # A mismatch on an existing key leaves the old object alone.
    with pytest.raises(InvalidArgument):
        await bucket.put("sum", b"new", sha256=hashlib.sha256(b"other").digest())
    assert await body_of(await bucket.get("sum")) == data
    with pytest.raises(InvalidArgument, match="32 bytes"):
        await bucket.put("short", data, sha256=b"abc")


async def test_delete_one_and_many(bucket: R2Bucket) -> None:
    await asyncio.gather(*(bucket.put(f"d{i}", b"x") for i in range(5)))
    await bucket.delete("d0")
    assert await bucket.head("d0") is None
    await bucket.delete(["d1", "d2", "missing"])
    assert [o.key for o in (await bucket.list()).objects] == ["d3", "d4"]
    with pytest.raises(InvalidArgument, match="limit is 1000"):
        await bucket.delete([f"k{i}" for i in range(1001)])
    assert len((await bucket.list()).objects) == 2


async def test_weird_keys(bucket: R2Bucket, backend: Backend, tmp_path: Path) -> None:
    keys = ["../../escape", "/abs/path", "a/../b", "ünï/cødé ✓", "k" * 1024, "dir/", "sp ace", "."]
    for key in keys:
        put = await bucket.put(key, key.encode())
        assert put is not None and put.key == key
    for key in keys:
        assert await body_of(await bucket.get(key)) == key.encode()
    listed = {o.key for o in (await bucket.list()).objects}
    assert listed == set(keys)
    with pytest.raises(InvalidArgument, match="limit is 1024 bytes"):
        await bucket.put("é" * 513, b"x")
    with pytest.raises(InvalidArgument, match="empty"):
        await bucket.put("", b"x")
    if backend.on_local_disk:
        root = tmp_path / ".bindingd" / "state" / "objects"
        # Everything stays under the binding's folder, named by generated ids.
        assert not (tmp_path / "escape").exists() and not Path("/abs/path").exists()
        for path in (tmp_path / ".bindingd").rglob("*"):
            assert path == root or root in path.parents or path.parent == tmp_path / ".bindingd", path


async def test_bindings_are_separate(env: Env) -> None:
    await env.ASSETS.put("shared", b"in ASSETS")
    assert await env.OTHER.head("shared") is None


async def test_read_only_binding_refuses_writes(env: Env) -> None:
    ro: R2Bucket = env.READONLY
    # Many times: the refusal must never race with the body into a transport error.
    for _ in range(20):
        with pytest.raises(PermissionDenied, match="read-only"):
            await ro.put("x", os.urandom(3 * MIB))
    assert await ro.head("x") is None
    assert (await ro.list()).objects == []
    with pytest.raises(PermissionDenied, match="read-only"):
        await ro.put("x", b"y")
    with pytest.raises(PermissionDenied, match="read-only"):
        await ro.delete("x")
    with pytest.raises(PermissionDenied, match="read-only"):
        await ro.create_multipart_upload("x")
    with pytest.raises(PermissionDenied, match="read-only"):
        await ro.resume_multipart_upload("x", "some-id").upload_part(1, b"data")
    with pytest.raises(PermissionDenied, match="read-only"):
        await ro.resume_multipart_upload("x", "some-id").complete([{"part_number": 1, "etag": "0" * 32}])
    with pytest.raises(PermissionDenied, match="read-only"):
        await ro.resume_multipart_upload("x", "some-id").abort()


async def test_protected_env_refuses_every_write(project: Project) -> None:
    config = project.config
    async with connected(config) as env:
        await env.ASSETS.put("kept", b"old")
        upload = await env.ASSETS.create_multipart_upload("multi")
        part = await upload.upload_part(1, b"part")
    async with daemon_in_process(config, env="production") as daemon:
        env = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            bucket: R2Bucket = env.ASSETS
            resumed = bucket.resume_multipart_upload("multi", upload.upload_id)
            refused = "protected: writes need --allow-writes on the daemon"
            for attempt in (
                lambda: bucket.put("kept", os.urandom(3 * MIB)),
                lambda: bucket.put("new", b"x"),
                lambda: bucket.delete(["kept"]),
                lambda: bucket.create_multipart_upload("other"),
                lambda: resumed.upload_part(2, b"more"),
                lambda: resumed.complete([part]),
                lambda: resumed.abort(),
            ):
                with pytest.raises(PermissionDenied, match=refused):
                    await attempt()
        finally:
            await env.aclose()
    async with connected(config) as env:
        assert await body_of(await env.ASSETS.get("kept")) == b"old"
        assert await env.ASSETS.head("new") is None
        assert (
            await env.ASSETS.resume_multipart_upload("multi", upload.upload_id).complete([part])
        ).size == 4


async def test_list_prefix_metadata_and_start_after(bucket: R2Bucket) -> None:
    for key in ("a/1", "a/2", "b/1", "c"):
        await bucket.put(
            key, key.encode(), http_metadata={"content_type": "text/plain"}, custom_metadata={"k": key}
        )
    page = await bucket.list(prefix="a/")
    assert [o.key for o in page.objects] == ["a/1", "a/2"] and not page.truncated and page.cursor is None
    assert page.objects[0].size == 3 and page.objects[0].etag == md5(b"a/1")
    # Metadata comes only when asked for, as in R2.
    assert page.objects[0].custom_metadata == {} and page.objects[0].http_metadata == {}
    page = await bucket.list(prefix="a/", include=["http_metadata", "custom_metadata"])
    assert page.objects[1].custom_metadata == {"k": "a/2"}
    assert page.objects[1].http_metadata == {"content_type": "text/plain"}
    assert [o.key for o in (await bucket.list(start_after="a/2")).objects] == ["b/1", "c"]
    with pytest.raises(InvalidArgument, match="between 1 and 1000"):
        await bucket.list(limit=1001)


async def test_list_paging_with_delimiter(bucket: R2Bucket) -> None:
    keys = [f"top{i:04}" for i in range(1000)] + [f"dir{d}/f{i}" for d in range(5) for i in range(4)]
    sem = asyncio.Semaphore(16)

    async def put(key: str) -> None:
        async with sem:
            await bucket.put(key, b"")

    await asyncio.gather(*(put(k) for k in keys))

    listed: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await bucket.list(cursor=cursor, limit=300)
        pages += 1
        listed += [o.key for o in page.objects]
        if not page.truncated:
            break
        assert page.cursor
        cursor = page.cursor
    assert listed == sorted(keys) and pages == 4

    seen_keys: list[str] = []
    prefixes: list[str] = []
    cursor = None
    while True:
        page = await bucket.list(delimiter="/", cursor=cursor, limit=1000)
        seen_keys += [o.key for o in page.objects]
        prefixes += page.delimited_prefixes
        assert len(page.objects) + len(page.delimited_prefixes) <= 1000
        if not page.truncated:
            break
        cursor = page.cursor
    assert prefixes == [f"dir{d}/" for d in range(5)]
    assert seen_keys == [f"top{i:04}" for i in range(1000)]

    page = await bucket.list(prefix="dir2/", delimiter="/")
    assert [o.key for o in page.objects] == [f"dir2/f{i}" for i in range(4)] and page.delimited_prefixes == []


async def test_multipart_upload(bucket: R2Bucket, backend: Backend) -> None:
    parts_data = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(5 * MIB)]
    upload = await bucket.create_multipart_upload(
        "mp", http_metadata={"content_type": "application/zip"}, custom_metadata={"by": "test"}
    )
    assert upload.key == "mp" and upload.upload_id
    first = await upload.upload_part(1, parts_data[0])
    # Resumed by its id, as from another request.
    resumed = bucket.resume_multipart_upload("mp", upload.upload_id)
    third = await resumed.upload_part(3, parts_data[2])
    second = await resumed.upload_part(2, io.BytesIO(parts_data[1]))
    if backend.md5_part_etags:
        assert [p.etag for p in (first, second, third)] == [md5(p) for p in parts_data]
    assert await bucket.head("mp") is None  # nothing visible before complete
    done = await resumed.complete([third, first, second])
    joined = b"".join(parts_data)
    expected_etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts_data)).hexdigest() + "-3"
    assert (done.key, done.size) == ("mp", len(joined))
    if backend.md5_part_etags:
        assert done.etag == expected_etag
    assert done.http_metadata == {"content_type": "application/zip"} and done.custom_metadata == {
        "by": "test"
    }
    got = await bucket.get("mp", range={"offset": 5 * MIB - 2, "length": 4})
    assert await body_of(got) == joined[5 * MIB - 2 : 5 * MIB + 2]
    assert hashlib.md5(await body_of(await bucket.get("mp"))).hexdigest() == md5(joined)
    with pytest.raises(InvalidArgument, match="does not exist"):
        await upload.upload_part(4, b"late")


async def test_multipart_rules(bucket: R2Bucket, backend: Backend) -> None:
    upload = await bucket.create_multipart_upload("small")
    one = await upload.upload_part(1, b"too small")
    two = await upload.upload_part(2, b"last")
    with pytest.raises(InvalidArgument, match="at least 5 MiB"):
        await upload.complete([one, two])
    assert await bucket.head("small") is None
    # A single part may be small: it is the last one.
    done = await upload.complete([one])
    assert done.size == len(b"too small")
    with pytest.raises(InvalidArgument, match="does not exist"):
        await bucket.resume_multipart_upload("x", "no-such-upload-id").upload_part(1, b"data")
    # R2: every part but the last of one size, the last no larger.
    uneven = await bucket.create_multipart_upload("uneven")
    parts = [await uneven.upload_part(n, b"x" * size) for n, size in ((1, 6 * MIB), (2, 5 * MIB), (3, 1))]
    with pytest.raises(InvalidArgument, match="must be the same size"):
        await uneven.complete(parts)
    larger_last = [parts[1], await uneven.upload_part(3, b"x" * (6 * MIB))]
    with pytest.raises(InvalidArgument, match="no larger than"):
        await uneven.complete(larger_last)
    assert await bucket.head("uneven") is None
    await uneven.abort()
    with pytest.raises(InvalidArgument, match="between 1 and 10000"):
        await (await bucket.create_multipart_upload("y")).upload_part(0, b"data")


async def test_a_stale_upload_id_is_refused_before_the_part_flows(bucket: R2Bucket) -> None:
    """A part for an upload already completed or aborted (resumed by its id) is refused at the
    part's header, before its body is read: never a whole part sent for nothing."""
    done = await bucket.create_multipart_upload("stale-done")
    await done.complete([await done.upload_part(1, b"whole")])
    aborted = await bucket.create_multipart_upload("stale-aborted")
    await aborted.upload_part(1, b"part")
    await aborted.abort()
    for key, upload_id in (("stale-done", done.upload_id), ("stale-aborted", aborted.upload_id)):
        read = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal read
            for _ in range(32):
                read += 1
                yield b"x" * MIB

        with pytest.raises(InvalidArgument, match="does not exist") as refused:
            await bucket.resume_multipart_upload(key, upload_id).upload_part(2, body())
        assert upload_id in str(refused.value) and "create_multipart_upload" in str(refused.value)
        assert read == 0, f"{read} MiB of the part were read before the refusal"
    assert await body_of(await bucket.get("stale-done")) == b"whole"
    assert await bucket.head("stale-aborted") is None


async def test_multipart_abort(bucket: R2Bucket) -> None:
    upload = await bucket.create_multipart_upload("ab")
    part = await upload.upload_part(1, os.urandom(MIB))
    await upload.abort()
    with pytest.raises(InvalidArgument, match="does not exist"):
        await upload.complete([part])
    assert await bucket.head("ab") is None


async def test_multipart_abort_is_idempotent(bucket: R2Bucket, backend: Backend) -> None:
    """R2 aborts an upload already aborted or completed without error (a completed object
    stays); an upload id nobody made is an error where the store can tell (not on s3)."""
    upload = await bucket.create_multipart_upload("again")
    await upload.upload_part(1, b"part")
    await upload.abort()
    await upload.abort()
    await bucket.resume_multipart_upload("again", upload.upload_id).abort()
    done = await bucket.create_multipart_upload("done")
    part = await done.upload_part(1, b"whole")
    await done.complete([part])
    await done.abort()
    assert await body_of(await bucket.get("done")) == b"whole"
    unknown = bucket.resume_multipart_upload("again", "no-such-upload")
    if backend.knows_upload_ids:
        with pytest.raises(InvalidArgument, match="does not exist"):
            await unknown.abort()
    else:
        await unknown.abort()


async def test_multipart_complete_racing_abort(bucket: R2Bucket, backend: Backend, tmp_path: Path) -> None:
    """One of the two wins, the other is told the upload is gone; never an internal error."""
    for round in range(3):
        upload = await bucket.create_multipart_upload(f"race{round}")
        parts = [await upload.upload_part(n, os.urandom(5 * MIB)) for n in (1, 2, 3)]
        completed, aborted = await asyncio.gather(
            upload.complete(parts), upload.abort(), return_exceptions=True
        )
        assert aborted is None  # an abort after the complete succeeds too, as in R2
        if isinstance(completed, BaseException):
            assert isinstance(completed, InvalidArgument) and "does not exist" in str(completed), completed
            assert await bucket.head(f"race{round}") is None
        else:
            head = await bucket.head(f"race{round}")
            assert completed.size == 15 * MIB and head is not None and head.etag == completed.etag
    if backend.on_local_disk:
        root = tmp_path / ".bindingd" / "state" / "objects" / "ASSETS"
        stored = len((await bucket.list()).objects)
        assert len(list((root / "blobs").iterdir())) == stored
        assert list((root / "tmp").iterdir()) == []


async def test_refusal_while_the_body_flows_is_its_own_error(
    bucket: R2Bucket, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body over the limit is refused mid-stream: the caller must see why (grpc reports a write
    into a call the daemon has ended as INTERNAL unless the daemon reads the rest first)."""
    from bindingd.domain import objects

    monkeypatch.setattr(objects, "MAX_PUT_BYTES", 4 * MIB)
    monkeypatch.setattr(objects, "MAX_PART_BYTES", 4 * MIB)
    body = os.urandom(24 * MIB)
    for _ in range(8):
        with pytest.raises(InvalidArgument, match="limit of one put; use a multipart upload"):
            await bucket.put("big", body)
    upload = await bucket.create_multipart_upload("big")
    for _ in range(4):
        with pytest.raises(InvalidArgument, match="the limit of a part"):
            await upload.upload_part(1, body)
    await upload.abort()
    assert await bucket.head("big") is None
    folder = temp_folder(backend, tmp_path)
    if folder is not None:
        assert list(folder.iterdir()) == []


class ClientGaveUp(Exception):
    pass


async def test_cancelled_put_leaves_nothing(bucket: R2Bucket, backend: Backend, tmp_path: Path) -> None:
    await bucket.put("kept", b"old")

    async def breaks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield os.urandom(MIB)
        raise ClientGaveUp

    for key in ("new", "kept"):
        with pytest.raises(ClientGaveUp):
            await bucket.put(key, breaks())

    async def slow() -> AsyncIterator[bytes]:
        yield os.urandom(MIB)
        await asyncio.sleep(30)
        yield b"never"

    task = asyncio.create_task(bucket.put("new", slow()))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)  # the daemon sees the broken stream and cleans up
    assert await bucket.head("new") is None
    assert await body_of(await bucket.get("kept")) == b"old"
    assert [o.key for o in (await bucket.list()).objects] == ["kept"]
    root = tmp_path / ".bindingd" / "state" / "objects" / "ASSETS"
    folder = temp_folder(backend, tmp_path)
    if folder is not None:
        assert list(folder.iterdir()) == []
    if backend.on_local_disk:
        assert len(list((root / "blobs").iterdir())) == 1


async def test_another_daemon_starting_leaves_a_put_in_flight_alone(
    bucket: R2Bucket, backend: Backend, tmp_path: Path
) -> None:
    """`bindingd call` for another env starts a short-lived daemon on the same state folder: it
    removes what a killed daemon left behind, never the temp file of a put still being written."""
    folder = temp_folder(backend, tmp_path)
    if folder is None:
        pytest.skip("the backend keeps no temp files on this machine")
    leftover = folder / "left-by-a-killed-daemon"
    leftover.write_bytes(b"partial")
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    data = os.urandom(2 * MIB)
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield data[:MIB]
        started.set()
        await asyncio.sleep(3)
        yield data[MIB:]

    put = asyncio.create_task(bucket.put("inflight", slow()))
    await started.wait()
    await asyncio.sleep(0.5)
    config = tmp_path / "bindingd.yaml"
    other = await asyncio.to_thread(
        bindingd_cli, "call", "ASSETS", "head", "absent", "--env", "production", cwd=config.parent
    )
    assert other.returncode == 1 and "not found" in other.stderr, other.stderr
    stored = await put
    assert stored is not None and stored.size == len(data)
    assert await body_of(await bucket.get("inflight")) == data
    assert not leftover.exists()
    assert list(folder.iterdir()) == []


# --- the s3 provider's own failures ------------------------------------------------------------


async def test_unreachable_endpoint_is_backend_unavailable(tmp_path: Path, moto_server: MotoServer) -> None:
    from objects_support import ACCESS_KEY, SECRET_KEY, free_port

    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          down:
            kind: s3
            endpoint: "http://127.0.0.1:{free_port()}"
            access_key_id: "{ACCESS_KEY}"
            secret_access_key: "{SECRET_KEY}"
            path_style: true
            timeout: 3
        bindings:
          REMOTE: {{ type: objects, connection: down, bucket: nowhere }}
          ASSETS: {{ type: objects }}
        """,
    )
    async with daemon_in_process(config) as daemon:
        env = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            for call in (
                lambda: env.REMOTE.head("k"),
                lambda: env.REMOTE.get("k"),
                lambda: env.REMOTE.put("k", b"v"),
                lambda: env.REMOTE.list(),
            ):
                started = time.monotonic()
                unreachable = r"cannot reach s3 at http://127\.0\.0\.1"
                with pytest.raises(BackendUnavailable, match=unreachable) as err:
                    await call()
                assert time.monotonic() - started < 3 * 3 + 5
                assert err.value.binding == "REMOTE" and ACCESS_KEY not in str(err.value)
            # The daemon goes on serving the other bindings.
            await env.ASSETS.put("k", b"still here")
            assert await body_of(await env.ASSETS.get("k")) == b"still here"
        finally:
            await env.aclose()


async def test_missing_bucket_is_named(tmp_path: Path, moto_server: MotoServer) -> None:
    from objects_support import s3_connection

    config = write_project(
        tmp_path,
        "version: 1\n"
        + s3_connection(moto_server)
        + "bindings:\n  GONE: { type: objects, connection: moto, bucket: no-such-bucket-here }\n",
    )
    async with connected(config) as env:
        with pytest.raises(BackendUnavailable, match='bucket "no-such-bucket-here" does not exist') as err:
            await env.GONE.put("k", b"v")
        assert err.value.binding == "GONE"
        for call in (lambda: env.GONE.list(), lambda: env.GONE.head("k"), lambda: env.GONE.get("k")):
            with pytest.raises(BackendUnavailable, match='bucket "no-such-bucket-here" does not exist'):
                await call()
    checked = await asyncio.to_thread(bindingd_cli, "check", cwd=tmp_path)
    assert checked.returncode != 0
    assert "GONE" in checked.stdout + checked.stderr
    assert 'bucket "no-such-bucket-here" does not exist' in checked.stdout + checked.stderr


async def test_silent_endpoint_is_backend_timeout(tmp_path: Path) -> None:
    """A server that accepts connections and never answers: each attempt ends at the timeout."""
    from objects_support import ACCESS_KEY, SECRET_KEY

    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          silent:
            kind: s3
            endpoint: "http://127.0.0.1:{port}"
            access_key_id: "{ACCESS_KEY}"
            secret_access_key: "{SECRET_KEY}"
            path_style: true
            timeout: 1.5
        bindings:
          REMOTE: {{ type: objects, connection: silent, bucket: b }}
        """,
    )
    try:
        async with connected(config) as env:
            started = time.monotonic()
            with pytest.raises(BackendTimeout, match=r"did not answer within 1\.5s") as err:
                await env.REMOTE.head("k")
            # Bounded (two attempts of 1.5 s and a backoff), not hanging; generous for a busy machine.
            assert time.monotonic() - started < 20
            assert err.value.binding == "REMOTE"
    finally:
        for writer in accepted:
            writer.close()
        server.close()


async def test_sync_client(env: Env) -> None:
    """connect_sync() drives the same daemon with the same calls (from a thread here)."""
    from bindingd_client import R2BucketSync, R2ObjectBodySync, connect_sync

    endpoint = env._transport.target

    def run() -> None:
        with connect_sync(endpoint=endpoint) as sync_env:
            bucket: R2BucketSync = sync_env.ASSETS
            data = os.urandom(6 * MIB)
            put = bucket.put("s/one", io.BytesIO(data), custom_metadata={"via": "sync"})
            assert put is not None and put.etag == md5(data)
            got = bucket.get("s/one", range={"suffix": 10})
            assert isinstance(got, R2ObjectBodySync) and got.bytes() == data[-10:]
            assert [len(c) for c in bucket.get("s/one")] == [MIB] * 6  # type: ignore[union-attr]
            upload = bucket.create_multipart_upload("s/multi")
            parts = [upload.upload_part(1, data[: 5 * MIB]), upload.upload_part(2, data[5 * MIB :])]
            assert bucket.resume_multipart_upload("s/multi", upload.upload_id).complete(parts).size == len(
                data
            )
            assert [o.key for o in bucket.list(prefix="s/").objects] == ["s/multi", "s/one"]
            bucket.delete(["s/one", "s/multi"])
            assert bucket.head("s/one") is None
            # A refusal after the header reaches a streaming put as its own error.
            for _ in range(20):
                with pytest.raises(PermissionDenied, match="read-only"):
                    sync_env.READONLY.put("x", io.BytesIO(data))

    await asyncio.to_thread(run)
