"""Streaming calls decoded by bindingd itself: a malformed message mid-stream is the caller's
mistake (INVALID_ARGUMENT), stores nothing and leaves the daemon serving."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from bindingd_client import connect
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
