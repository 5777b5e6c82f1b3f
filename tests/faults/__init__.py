"""The fault-injection suite: real backends behind a TCP fault proxy of the tests' own."""

from __future__ import annotations

import asyncio
import socket

from bindingd.server.app import Daemon


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape(daemon: Daemon) -> str:
    """The /metrics page of a daemon in this process started with `metrics=`."""
    assert daemon.options.metrics
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.options.metrics.rpartition(":")[2])
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await reader.read()
    writer.close()
    return answer.decode()


def sample(page: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a /metrics page, or None when it is not there."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in page.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None
