"""The object rules of bindingd/domain/objects.py and the client's pure encoders, without a daemon."""

from __future__ import annotations

import array
import datetime as dt
import hashlib
import io
import subprocess
import sys

import pytest
from bindingd_client.objects import (
    body_chunks,
    body_messages,
    chunk_message,
    encode_checksums,
    encode_conditional,
    encode_range,
    get_chunk,
)
from bindingd_client.proto import objects_pb2
from bindingd_client.wire import CHUNK_BYTES, chunk_view

from bindingd.domain import objects
from bindingd.domain.objects import Conditional, ObjectInfo, RangeSpec
from bindingd.errors import BindingdError

INFO = ObjectInfo(key="k", version="v", size=10, etag="abc", uploaded=1_000_000)


@pytest.mark.parametrize(
    ("cond", "met"),
    [
        (Conditional(etag_matches="abc"), True),
        (Conditional(etag_matches='"abc"'), True),
        (Conditional(etag_matches='"def", "abc"'), True),
        # If-Match compares strongly: a weak etag never matches (RFC 9110 13.1.1, R2, workerd).
        (Conditional(etag_matches='W/"abc"'), False),
        (Conditional(etag_matches='W/"abc", "def"'), False),
        (Conditional(etag_matches='W/"abc", *'), True),
        (Conditional(etag_matches="*"), True),
        (Conditional(etag_matches="def"), False),
        (Conditional(etag_does_not_match="abc"), False),
        (Conditional(etag_does_not_match="*"), False),
        (Conditional(etag_does_not_match="def"), True),
        # If-None-Match compares weakly: W/"abc" names the object.
        (Conditional(etag_does_not_match='W/"abc"'), False),
        (Conditional(etag_does_not_match='"def", W/"abc"'), False),
        (Conditional(etag_does_not_match='W/"def"'), True),
        (Conditional(uploaded_before=1_000_001), True),
        (Conditional(uploaded_before=1_000_000), False),
        (Conditional(uploaded_after=999_999), True),
        (Conditional(uploaded_after=1_000_000), False),
        # An etag condition takes precedence over the date condition of the same direction.
        (Conditional(etag_matches="abc", uploaded_before=0), True),
        (Conditional(etag_does_not_match="def", uploaded_after=2_000_000), True),
    ],
)
def test_condition_met(cond: Conditional, met: bool) -> None:
    assert objects.condition_met(cond, INFO) is met


@pytest.mark.parametrize(
    ("cond", "met"),
    [
        (Conditional(etag_matches="abc"), False),
        (Conditional(etag_matches="*"), False),
        # Nothing was uploaded, so nothing was uploaded after a date (as R2 and workerd answer).
        (Conditional(uploaded_after=0), False),
        (Conditional(etag_does_not_match="def", uploaded_after=0), False),
        (Conditional(etag_does_not_match="*"), True),
        (Conditional(etag_does_not_match="abc"), True),
        (Conditional(uploaded_before=0), True),
        (Conditional(uploaded_before=2_000_000), True),
        (None, True),
    ],
)
def test_conditions_on_a_missing_object(cond: Conditional | None, met: bool) -> None:
    assert objects.condition_met(cond, None) is met


def test_resolve_range() -> None:
    assert objects.resolve_range(None, 10) == (0, 10)
    assert objects.resolve_range(RangeSpec(suffix=100), 10) == (0, 10)
    assert objects.resolve_range(RangeSpec(offset=9), 10) == (9, 1)
    assert objects.resolve_range(None, 0) == (0, 0)  # no range: an empty object reads whole
    for no_bytes in (RangeSpec(offset=10), RangeSpec(length=0), RangeSpec(suffix=0)):
        with pytest.raises(BindingdError, match="not satisfiable"):
            objects.resolve_range(no_bytes, 10)
    with pytest.raises(BindingdError, match="not satisfiable"):
        objects.resolve_range(RangeSpec(offset=0), 0)
    with pytest.raises(BindingdError, match="past the end"):
        objects.resolve_range(RangeSpec(offset=11), 10)
    with pytest.raises(BindingdError, match="needs an offset"):
        objects.resolve_range(RangeSpec(), 10)


def test_delimited_and_cursor() -> None:
    assert objects.delimited("a/b/c", "", "/") == "a/"
    assert objects.delimited("a/b/c", "a/", "/") == "a/b/"
    assert objects.delimited("a/b", "a/", "/") is None
    assert objects.delimited("a/b", "", "") is None
    cursor = objects.encode_cursor("p/", "p/ünï")
    assert objects.decode_cursor(cursor, "p/") == "p/ünï"
    with pytest.raises(BindingdError, match="not valid for this list"):
        objects.decode_cursor(cursor, "other/")
    with pytest.raises(BindingdError, match="not valid for this list"):
        objects.decode_cursor("!!!", "p/")


def test_digests_verify_and_multipart_etag() -> None:
    digests = objects.Digests({"sha256": hashlib.sha256(b"ab").digest()})
    digests.update(b"a")
    digests.update(b"b")
    assert digests.verify()["md5"] == hashlib.md5(b"ab").digest() and digests.size == 2
    wrong = objects.Digests({"sha1": hashlib.sha1(b"x").digest()})
    wrong.update(b"ab")
    with pytest.raises(BindingdError, match=r"sha1 checksum .* does not match"):
        wrong.verify()
    parts = [hashlib.md5(b"1").hexdigest(), hashlib.md5(b"2").hexdigest()]
    joined = hashlib.md5(hashlib.md5(b"1").digest() + hashlib.md5(b"2").digest()).hexdigest()
    assert objects.multipart_etag(parts) == f"{joined}-2"


def test_client_body_chunks_are_at_most_one_mib() -> None:
    data = b"x" * (2 * 1024 * 1024 + 1)
    assert [len(c) for c in body_chunks(data)] == [1024 * 1024, 1024 * 1024, 1]
    assert b"".join(body_chunks(io.BytesIO(data))) == data
    assert list(body_chunks("é")) == ["é".encode()]
    assert list(body_chunks(None)) == []
    assert b"".join(body_chunks([b"a", bytearray(b"b"), memoryview(b"c")])) == b"abc"
    with pytest.raises(TypeError, match="an object body must be"):
        list(body_chunks(42))


def test_client_encoders() -> None:
    digest = hashlib.sha256(b"x").digest()
    assert encode_checksums(None, None, digest.hex()).sha256 == digest
    with pytest.raises(ValueError, match="hex string"):
        encode_checksums("zz", None, None)
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cond = encode_conditional({"etagMatches": ["a", "b"], "uploaded_before": when})
    assert (
        cond is not None
        and cond.etag_matches == "a,b"
        and cond.uploaded_before == int(when.timestamp() * 1000)
    )
    with pytest.raises(ValueError, match="unknown only_if"):
        encode_conditional({"etag": "a"})
    with pytest.raises(ValueError, match="offset, length or suffix"):
        encode_range({"start": 1})


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 1024 * 1024])
def test_chunk_messages_are_the_serialized_requests_and_get_responses(size: int) -> None:
    chunk = bytes(range(256)) * (size // 256) + bytes(size % 256)
    for request_class in (
        objects_pb2.ObjectsPutRequest,
        objects_pb2.ObjectsUploadPartRequest,
        objects_pb2.ObjectsGetResponse,
    ):
        assert chunk_message(chunk) == request_class(chunk=chunk).SerializeToString()
        assert chunk_message(memoryview(chunk)) == request_class(chunk=chunk).SerializeToString()


def test_client_body_messages_carry_the_body_in_chunks_of_at_most_one_mib() -> None:
    data = bytes(range(256)) * (3 * 4096) + b"tail"
    words = array.array("i", range(300_000))
    for value, body in [
        (io.BytesIO(data), data),  # read into a reused buffer
        (data, data),
        (memoryview(words), words.tobytes()),  # lengths count bytes, not items
        ([b"a", bytearray(b"b")], b"ab"),
    ]:
        messages = list(body_messages(value))
        chunks = [objects_pb2.ObjectsPutRequest.FromString(m).chunk for m in messages]
        assert b"".join(chunks) == body
        assert all(0 < len(c) <= 1024 * 1024 for c in chunks)


def test_a_plain_chunk_message_is_read_as_a_view() -> None:
    for chunk in (b"", b"x", b"y" * 300, b"z" * (1024 * 1024)):
        view = chunk_view(chunk_message(chunk))
        assert isinstance(view, memoryview) and view == chunk
    header = objects_pb2.ObjectsPutRequest(header=objects_pb2.ObjectsPutHeader(binding="B", key="k"))
    for other in [
        b"",
        header.SerializeToString(),
        chunk_message(b"abc") + b"\x18\x01",  # another field after it
        chunk_message(b"abc")[:-1],  # cut short
        b"\x12\x80",  # a varint without its end
        b"\x12" + b"\x80" * 10 + b"\x00",  # a varint longer than 10 bytes
        chunk_message(b"abc").replace(b"\x12", b"\x0a", 1),  # field 1
    ]:
        assert chunk_view(other) is None
    assert chunk_view(b"\x12\x83\x00abc") == b"abc"  # an overlong varint is still a varint


def test_the_domain_chunk_size_is_the_wire_one() -> None:
    # domain/ does not import the client (nor protobuf), so it keeps its own copy of the value.
    assert objects.CHUNK_BYTES == CHUNK_BYTES


def test_domain_and_errors_load_neither_protobuf_nor_the_client() -> None:
    """The rules and the error table stay free of gRPC messages: they keep their own copies of
    the wire values they need (CHUNK_BYTES above) rather than import `bindingd_client.wire`."""
    code = (
        "import sys, bindingd.errors, bindingd.domain.kv, bindingd.domain.objects, bindingd.domain.sql,"
        " bindingd.domain.queue, bindingd.domain.cursors;"
        " print(' '.join(m for m in sys.modules if m.startswith(('google.protobuf', 'bindingd_client'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []


def test_client_get_chunk_is_what_protobuf_decodes() -> None:
    header = objects_pb2.ObjectsGetResponse(header=objects_pb2.ObjectsGetHeader(found=True))
    for raw in [
        objects_pb2.ObjectsGetResponse(chunk=b"x" * 300).SerializeToString(),  # what the daemon sends
        objects_pb2.ObjectsGetResponse(chunk=b"").SerializeToString(),
        b"\x12\x83\x00abc",  # an overlong varint
        chunk_message(b"abc") + b"\x18\x01",  # another field after it
        chunk_message(b"lost") + chunk_message(b"kept"),
        header.SerializeToString(),
    ]:
        assert get_chunk(raw) == objects_pb2.ObjectsGetResponse.FromString(raw).chunk
        assert type(get_chunk(raw)) is bytes
