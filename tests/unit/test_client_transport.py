"""connect() / connect_sync() wiring against a tiny in-process grpc.aio server with canned answers.

This tests the client only: the server implements Bindings.List, Vars.GetAll and KV.Get, records
the metadata it receives, and aborts with a real google.rpc.Status for one key.
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from bindingd_client import (
    BackendUnavailable,
    BindingError,
    DaemonUnavailable,
    KVNamespace,
    KVNamespaceSync,
    connect,
    connect_sync,
)
from bindingd_client.proto import (
    bindings_pb2,
    bindings_pb2_grpc,
    kv_pb2,
    kv_pb2_grpc,
    vars_pb2,
    vars_pb2_grpc,
)
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

TOKEN = "t0ken"


def _status_trailer(message: str) -> tuple[tuple[str, bytes], ...]:
    info = error_details_pb2.ErrorInfo(
        reason="BACKEND_UNAVAILABLE",
        domain="bindingd",
        metadata={"binding": "CACHE", "env": "dev", "backend": "local", "request_id": "req-1"},
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message=message, details=[packed])
    return (("grpc-status-details-bin", status.SerializeToString()),)


class Recorder:
    def __init__(self):
        self.auth: list[str | None] = []

    def record(self, context):
        self.auth.append(dict(context.invocation_metadata()).get("authorization"))


class Bindings(bindings_pb2_grpc.BindingsServicer):
    def __init__(self, recorder):
        self.recorder = recorder

    async def List(self, request, context):
        self.recorder.record(context)
        return bindings_pb2.ListBindingsResponse(
            env="dev",
            bindings=[
                bindings_pb2.BindingInfo(name="CACHE", type="kv", env="dev", backend="local"),
                bindings_pb2.BindingInfo(name="SITE_NAME", type="var", env="dev", backend="local"),
            ],
        )


class Vars(vars_pb2_grpc.VarsServicer):
    def __init__(self, recorder):
        self.recorder = recorder

    async def GetAll(self, request, context):
        self.recorder.record(context)
        return vars_pb2.VarGetAllResponse(values={"SITE_NAME": "Example Shop"})


class KV(kv_pb2_grpc.KVServicer):
    def __init__(self, recorder):
        self.recorder = recorder

    async def Get(self, request, context):
        self.recorder.record(context)
        if request.key == "boom":
            message = 'cannot reach redis for binding "CACHE": connection refused'
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, message, trailing_metadata=_status_trailer(message)
            )
        if request.key == "hello":
            entry = kv_pb2.KVEntry(key="hello", found=True, value=b"world", metadata_json='{"v":2}')
        else:
            entry = kv_pb2.KVEntry(key=request.key, found=False)
        return kv_pb2.KVGetResponse(entry=entry)


@pytest.fixture
async def daemon(tmp_path):
    recorder = Recorder()
    server = grpc.aio.server()
    bindings_pb2_grpc.add_BindingsServicer_to_server(Bindings(recorder), server)
    vars_pb2_grpc.add_VarsServicer_to_server(Vars(recorder), server)
    kv_pb2_grpc.add_KVServicer_to_server(KV(recorder), server)
    sock = tmp_path / "d.sock"
    server.add_insecure_port(f"unix://{sock}")
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield {"unix": f"unix://{sock}", "tcp": f"127.0.0.1:{port}", "recorder": recorder}
    finally:
        await server.stop(None)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("BINDINGD_ENDPOINT", raising=False)
    monkeypatch.delenv("BINDINGD_TOKEN", raising=False)


async def test_connect_over_unix_socket(daemon):
    env = await connect(daemon["unix"])
    try:
        assert env._env_name == "dev"
        assert env.SITE_NAME == "Example Shop"
        assert isinstance(env.CACHE, KVNamespace)
        assert await env.CACHE.get("hello") == "world"
        assert await env.CACHE.get("absent") is None
        got = await env.CACHE.get_with_metadata("hello", type="bytes")
        assert (got.value, got.metadata) == (b"world", {"v": 2})
    finally:
        await env.aclose()
    assert set(daemon["recorder"].auth) == {None}


async def test_daemon_error_is_decoded_from_the_real_trailer(daemon):
    async with connect(daemon["unix"]) as env:
        with pytest.raises(BackendUnavailable) as info:
            await env.CACHE.get("boom")
    err = info.value
    assert str(err) == 'cannot reach redis for binding "CACHE": connection refused'
    assert (err.binding, err.env, err.backend, err.request_id) == ("CACHE", "dev", "local", "req-1")


async def test_connect_over_tcp_sends_the_bearer_token(daemon, monkeypatch):
    monkeypatch.setenv("BINDINGD_ENDPOINT", daemon["tcp"])
    monkeypatch.setenv("BINDINGD_TOKEN", TOKEN)
    async with connect() as env:
        assert await env.CACHE.get("hello") == "world"
    assert daemon["recorder"].auth == [f"Bearer {TOKEN}"] * 3


async def test_connect_sync_over_unix_and_tcp(daemon):
    def use(endpoint, token=None):
        with connect_sync(endpoint, token) as env:
            assert isinstance(env.CACHE, KVNamespaceSync)
            with pytest.raises(BackendUnavailable):
                env.CACHE.get("boom")
            return env.SITE_NAME, env.CACHE.get("hello")

    # The server runs on this event loop, so the blocking client must run in another thread.
    assert await asyncio.to_thread(use, daemon["unix"]) == ("Example Shop", "world")
    daemon["recorder"].auth.clear()
    assert await asyncio.to_thread(use, daemon["tcp"], TOKEN) == ("Example Shop", "world")
    assert daemon["recorder"].auth == [f"Bearer {TOKEN}"] * 4


async def test_no_daemon_behind_the_socket_is_daemon_unavailable(tmp_path):
    endpoint = f"unix://{tmp_path}/missing.sock"
    with pytest.raises(DaemonUnavailable) as info:
        await connect(endpoint)
    assert endpoint in str(info.value)
    assert '"bindingd serve"' in str(info.value)
    with pytest.raises(DaemonUnavailable, match=r"missing\.sock"):
        await asyncio.to_thread(connect_sync, endpoint)


async def test_a_closed_env_raises_a_binding_error(daemon):
    env = await connect(daemon["unix"])
    cache = env.CACHE
    await env.aclose()
    with pytest.raises(BindingError, match="closed") as info:
        await cache.get("hello")
    assert info.value.reason == "CLIENT_CLOSED"
