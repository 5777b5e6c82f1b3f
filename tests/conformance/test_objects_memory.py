"""The daemon never holds a whole object: a 2 GiB put and get through a real `bindingd serve`
process leave its peak RSS less than 100 MiB above its idle RSS, for every objects provider.

RSS is read from /proc (psutil) of the daemon process by a sampling thread while the client in
this process streams the object in and out. Every backend of tests/conformance/backends.py that
serves objects.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from bindingd_client import R2ObjectBody, connect
from conformance.backends import Backend, params, serving
from support import DaemonProcess

MIB = 1024 * 1024
SIZE = 2 * 1024 * MIB
LIMIT = 100 * MIB


class PeakRss:
    """The highest RSS of a process, sampled every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _body(block: bytes, size: int) -> AsyncIterator[bytes]:
    for _ in range(size // len(block)):
        yield block


@pytest.mark.parametrize("backend", params(serving("objects", lambda b: b.memory_test)))
@pytest.mark.timeout(900)
async def test_two_gib_put_and_get_keep_daemon_rss_flat(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert backend.objects is not None
    async with backend.objects(tmp_path, request, timeout=120) as project:
        await _two_gib_put_and_get(backend, project.root)


async def _two_gib_put_and_get(backend: Backend, root: Path) -> None:
    daemon = DaemonProcess(root)
    # Waited for on the loop: behind a gateway, the gateway is served by this test's loop, which
    # must keep running for the daemon to open its session.
    await daemon.start(wait=False).served()
    try:
        env = await connect(endpoint=daemon.endpoint)
        assert daemon.proc is not None
        try:
            # Warm up: the first calls load modules and open the pools.
            await env.ASSETS.put("warm", os.urandom(3 * MIB))
            assert await (await env.ASSETS.get("warm")).bytes()  # type: ignore[union-attr]
            idle = psutil.Process(daemon.proc.pid).memory_info().rss
            block = os.urandom(MIB)
            expected = hashlib.md5()
            for _ in range(SIZE // MIB):
                expected.update(block)
            with PeakRss(daemon.proc.pid) as rss:
                put = await env.ASSETS.put("big", _body(block, SIZE))
                assert put is not None and put.size == SIZE and put.etag == expected.hexdigest()
                got = await env.ASSETS.get("big")
                assert isinstance(got, R2ObjectBody)
                received = hashlib.md5()
                count = 0
                async for chunk in got:
                    received.update(chunk)
                    count += len(chunk)
                assert count == SIZE and received.hexdigest() == expected.hexdigest()
            grown = rss.peak - idle
            print(f"{backend.name}: idle RSS {idle / MIB:.1f} MiB, peak {rss.peak / MIB:.1f} MiB")
            assert grown < LIMIT, f"daemon RSS grew by {grown / MIB:.1f} MiB during a 2 GiB put and get"
        finally:
            await env.aclose()
    finally:
        assert await asyncio.to_thread(daemon.stop) == 0
