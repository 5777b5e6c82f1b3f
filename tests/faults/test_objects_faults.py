"""Objects on S3 (moto_server) behind the fault proxy: cut and black-holed, then back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bindingd_client import BackendTimeout, BackendUnavailable, Env, connect
from objects_support import MotoServer
from support import daemon_in_process, write_project

from bindingd.server.app import Daemon
from tests.faults import s3_behind_proxy
from tests.faults.proxy import FaultProxy

OPEN_S = 1.0


@pytest.fixture
async def objects_env(
    moto_server: MotoServer, tmp_path: Path
) -> AsyncIterator[tuple[Env, FaultProxy, Daemon]]:
    bucket = moto_server.new_bucket()
    proxy = await FaultProxy(moto_server.port).start()
    config = write_project(
        tmp_path,
        s3_behind_proxy(
            proxy.port,
            bucket,
            "{ timeout: 800ms, retry: { max_retries: 2, initial_interval: 10ms }, "
            f"circuit_breaker: {{ consecutive_failures: 2, open: {OPEN_S}s }} }}",
            timeout=30,
        ),
    )
    try:
        async with daemon_in_process(config) as daemon:
            client = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                yield client, proxy, daemon
            finally:
                proxy.thaw()
                proxy.restore()
                await client.aclose()
    finally:
        await proxy.close()


# A cut S3 connection ends either way: botocore itself retries a reset connection, and its
# retries may outlast the policy's timeout.
GONE = (BackendUnavailable, BackendTimeout)


async def _fails(
    call: object, error: type[Exception] | tuple[type[Exception], ...], within: float
) -> Exception:
    started = time.monotonic()
    with pytest.raises(error) as failed:
        await asyncio.wait_for(call, within + 10)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert elapsed < within, f"answered after {elapsed:.2f}s: {failed.value}"
    return failed.value


async def _until_served(call: object) -> object:
    deadline = time.monotonic() + 10
    while True:
        try:
            return await call()  # type: ignore[operator]
        except (BackendUnavailable, BackendTimeout):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)


async def test_s3_cut_and_black_hole_end_in_time_then_recover(
    objects_env: tuple[Env, FaultProxy, Daemon],
) -> None:
    env, proxy, daemon = objects_env
    files = env.FILES
    await files.put("a.txt", b"hello")
    breaker = daemon.runtime.breakers.by_name["store"]

    proxy.cut()
    await _fails(files.delete("a.txt"), GONE, 1.5)  # a write: tried once
    assert breaker.retries == 0
    # A read: retried when the failure was quick (unavailable), not when it timed out.
    await _fails(files.head("a.txt"), GONE, 3 * 0.8 + 1.0)
    assert breaker.state == "open"  # 2 failures in a row at least
    err = await _fails(files.head("a.txt"), BackendUnavailable, 0.2)
    assert 'connection "store" (s3) is failing' in str(err)
    proxy.restore()
    await asyncio.sleep(OPEN_S + 0.1)
    head = await _until_served(lambda: files.head("a.txt"))
    assert head is not None  # the delete never reached the store

    proxy.freeze()
    err = await _fails(files.head("a.txt"), BackendTimeout, 0.8 + 0.5)
    assert 'connection "store" (s3) did not answer within 0.8s' in str(err)
    proxy.thaw()
    await asyncio.sleep(OPEN_S + 0.1)
    body = await _until_served(lambda: files.get("a.txt"))
    assert body is not None and await body.bytes() == b"hello"  # type: ignore[attr-defined]
