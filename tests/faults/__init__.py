"""The fault-injection suite: real backends behind a TCP fault proxy of the tests' own."""

from __future__ import annotations

import asyncio
import os
import socket
import time

from objects_support import ACCESS_KEY, SECRET_KEY

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


def open_fds() -> int:
    """This process's open file descriptors: the daemon runs in it (daemon_in_process)."""
    return len(os.listdir("/proc/self/fd"))


async def settled_fds(idle: int, within: float = 10.0) -> int:
    """The fd count once it is back to `idle` (closed sockets are released by the loop a moment
    later), or the last count seen when `within` ran out."""
    deadline = time.monotonic() + within
    while (now := open_fds()) > idle and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return now


def s3_behind_proxy(
    proxy_port: int,
    bucket: str,
    resiliency: str,
    *,
    timeout: float,
    connection: str = "store",
    binding: str = "FILES",
) -> str:
    """A bindingd.yaml with one objects binding on `bucket` of moto_server, reached through the
    fault proxy at `proxy_port`; `resiliency` is the connection's policy (a YAML flow mapping)."""
    return f"""
        version: 1
        connections:
          {connection}:
            kind: s3
            endpoint: "http://127.0.0.1:{proxy_port}"
            region: us-east-1
            access_key_id: "{ACCESS_KEY}"
            secret_access_key: "{SECRET_KEY}"
            path_style: true
            timeout: {timeout:g}
            resiliency: {resiliency}
        bindings:
          {binding}: {{ type: objects, connection: {connection}, bucket: {bucket} }}
        """
