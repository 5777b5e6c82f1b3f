"""Streaming calls decoded by bindingd itself: a malformed message mid-stream is the caller's
mistake (INVALID_ARGUMENT), stores nothing and leaves the daemon serving."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest
from bindingd_client import R2ObjectBody, connect
from bindingd_client.objects import chunk_message
from bindingd_client.proto import objects_pb2
from support import daemon_in_process, write_project


async def test_a_malformed_message_mid_stream_is_invalid_argument(tmp_path: Path) -> None:
    config = write_project(tmp_path, "version: 1\nbindings:\n  ASSETS: { type: objects }\n")
    async with daemon_in_process(config) as daemon:
        header = objects_pb2.ObjectsPutRequest(header=objects_pb2.ObjectsPutHeader(binding="ASSETS", key="k"))
        async with grpc.aio.insecure_channel(f"unix://{daemon.socket_path}") as channel:
            put = channel.stream_unary("/bindingd.v1.Objects/Put")
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await put(iter([header.SerializeToString(), b"\xff\xff\xff\xff"]))
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid bindingd.v1.ObjectsPutRequest" in (failure.value.details() or "")
        env = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            assert await env.ASSETS.head("k") is None
            await env.ASSETS.put("after", b"fine")
            assert (await env.ASSETS.get("after")) is not None
        finally:
            await env.aclose()


async def test_put_chunks_in_any_valid_encoding_store_what_protobuf_decodes(tmp_path: Path) -> None:
    """A plain chunk message is read without decoding it (a view into the received bytes); every
    other encoding is decoded. Either way the stored body is what protobuf makes of the stream."""
    config = write_project(tmp_path, "version: 1\nbindings:\n  ASSETS: { type: objects }\n")
    header = objects_pb2.ObjectsPutRequest(header=objects_pb2.ObjectsPutHeader(binding="ASSETS", key="k"))
    chunks = [
        chunk_message(b"abc"),  # plain: tag, length, bytes
        b"\x12\x83\x00def",  # the length as an overlong varint
        chunk_message(b"ghi") + b"\x18\x01",  # followed by an unknown field
        chunk_message(b"lost") + chunk_message(b"jkl"),  # the field twice: the last one counts
        b"\x12\x00",  # an empty chunk
        chunk_message(b"\x12\x03mno"),  # a chunk that looks like a chunk message itself
    ]
    expected = b"".join(objects_pb2.ObjectsPutRequest.FromString(raw).chunk for raw in chunks)
    assert expected == b"abcdefghijkl\x12\x03mno"
    async with daemon_in_process(config) as daemon:
        async with grpc.aio.insecure_channel(f"unix://{daemon.socket_path}") as channel:
            put = channel.stream_unary("/bindingd.v1.Objects/Put")
            answer = objects_pb2.ObjectsPutResponse.FromString(
                await put(iter([header.SerializeToString(), *chunks]))
            )
        assert answer.stored and answer.object.etag == hashlib.md5(expected).hexdigest()
        env = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            got = await env.ASSETS.get("k")
            assert isinstance(got, R2ObjectBody)
            assert await got.bytes() == expected
        finally:
            await env.aclose()


async def test_a_second_header_in_a_put_is_invalid_argument(tmp_path: Path) -> None:
    config = write_project(tmp_path, "version: 1\nbindings:\n  ASSETS: { type: objects }\n")
    header = objects_pb2.ObjectsPutRequest(header=objects_pb2.ObjectsPutHeader(binding="ASSETS", key="k"))
    async with daemon_in_process(config) as daemon:
        async with grpc.aio.insecure_channel(f"unix://{daemon.socket_path}") as channel:
            put = channel.stream_unary("/bindingd.v1.Objects/Put")
            stream = [header.SerializeToString(), chunk_message(b"abc"), header.SerializeToString()]
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await put(iter(stream))
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "later messages are body chunks" in (failure.value.details() or "")
        env = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            assert await env.ASSETS.head("k") is None
        finally:
            await env.aclose()
