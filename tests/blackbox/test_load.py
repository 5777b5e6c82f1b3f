"""Many calls in flight at once over one channel, against the daemon as a process.

grpc-core's default pending-call limits once made the daemon answer ~8% of 2000 concurrent
calls with a bare CANCELLED (no ErrorInfo); every call must be answered, or refused with a
reason from the error table.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bindingd_client import connect
from support import DaemonProcess, write_project

IN_FLIGHT = 2000


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    write_project(tmp_path, "version: 1\nbindings:\n  CACHE: { type: kv }\n")
    d = DaemonProcess(tmp_path, "--log-level", "info").start()
    yield d
    d.stop()


def _failures(outcomes: list[object]) -> Counter[str]:
    return Counter(f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException))


async def test_2000_calls_in_flight_over_one_channel_all_succeed(daemon: DaemonProcess) -> None:
    env = await connect(endpoint=daemon.endpoint)
    try:
        puts = await asyncio.gather(
            *(env.CACHE.put(f"p{i}", str(i)) for i in range(IN_FLIGHT)), return_exceptions=True
        )
        assert not _failures(puts), _failures(puts).most_common(3)
        gets = await asyncio.gather(
            *(env.CACHE.get(f"p{i}") for i in range(IN_FLIGHT)), return_exceptions=True
        )
        assert not _failures(gets), _failures(gets).most_common(3)
        assert gets == [str(i) for i in range(IN_FLIGHT)]
    finally:
        await env.aclose()
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.logs()
