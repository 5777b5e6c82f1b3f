"""A put's and a get's threads against cancellation: nothing touches a file after it is closed,
no task is left behind, no file descriptor stays open."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bindingd_client.proto import objects_pb2

from bindingd.domain import objects
from bindingd.domain.objects import Digests, PutOptions
from bindingd.providers.bodies import write_body
from bindingd.providers.local.objects import LocalObjects
from bindingd.server.objects import ObjectsService

MIB = 1024 * 1024


class _SlowDigests(Digests):
    def update(self, chunk: Any) -> None:
        time.sleep(0.3)  # a batch of md5 in progress
        super().update(chunk)


class _File:
    def __init__(self) -> None:
        self.closed = False
        self.writes_after_close = 0

    def write(self, chunk: Any) -> None:
        time.sleep(0.2)  # the disk
        self.writes_after_close += self.closed


async def _chunks(n: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        await asyncio.sleep(0.01)
        yield b"x" * MIB


def test_a_put_cancelled_while_its_lanes_stop_writes_nothing_after_the_file_is_closed() -> None:
    """The body goes over the limit, and while write_body waits for its hashing to stop, the
    call is cancelled (a deadline, the client gone, the daemon stopping)."""

    async def run() -> None:
        f = _File()
        put = asyncio.ensure_future(
            write_body(f, _chunks(6), _SlowDigests({}), 4 * MIB, objects.put_too_large())  # type: ignore[arg-type]
        )
        await asyncio.sleep(0.1)
        put.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await put
        f.closed = True  # what the provider does next: close and remove the file
        await asyncio.sleep(1.0)
        assert f.writes_after_close == 0
        assert not [t for t in asyncio.all_tasks() if "_Lane._run" in repr(t)]

    asyncio.run(run())


def _blob_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += "/blobs/" in os.readlink(f"/proc/self/fd/{fd}")
    return count


def test_a_get_dropped_before_its_body_starts_leaves_no_file_open(tmp_path: Path) -> None:
    """The client goes away while the header is sent: the body generator never starts, so its
    own cleanup never runs."""

    async def run() -> None:
        store = LocalObjects(tmp_path / "ASSETS")
        await store.start()
        try:
            await store.put("k", _chunks(3), PutOptions())

            @contextlib.contextmanager
            def use(binding: str, kind: str, **options: object) -> Iterator[SimpleNamespace]:
                yield SimpleNamespace(provider=store)

            runtime = SimpleNamespace(calls_in_flight=0, last_call_at=0, use=use)
            service = ObjectsService(runtime)  # type: ignore[arg-type]
            for _ in range(20):
                stream = service.Get(objects_pb2.ObjectsGetRequest(binding="ASSETS", key="k"), None)
                assert (await anext(stream)).header.found
                await stream.aclose()
            await asyncio.sleep(0.05)
            gc.collect()
            assert _blob_fds() == 0
        finally:
            await store.close()

    asyncio.run(run())
