"""Queue benchmarks: send throughput and send → consume → ack latency, per provider.

Each bindingd figure stands beside the same operation done straight through the provider's
driver in the same run (sqlite3, nats-py, aio-pika), measured in interleaved rounds, so the
ratio is what bindingd adds: a gRPC hop, the Cloudflare rules, leases and at-least-once acks.

    python -m bench.queue [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from bindingd_client import connect

from bench.measure import Result, interleaved
from bench.processes import start_daemon, stop

NATS_URL = "nats://127.0.0.1:4222"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
BODY = {"order": 1234, "sku": "abc-123", "qty": 2}
BODY_BYTES = b'{"order":1234,"sku":"abc-123","qty":2}'
Call = Callable[[], Awaitable[object]]


def _up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _project(tag: str, nats: bool, rabbit: bool) -> str:
    lines = ["version: 1", "connections:"]
    lines.append(f"  nats: {{ kind: nats, url: '{NATS_URL}' }}")
    lines.append(f"  rabbit: {{ kind: rabbitmq, url: '{AMQP_URL}' }}")
    lines.append("bindings:")
    for use in ("SEND", "E2E"):
        lines.append(f"  LOCAL_{use}: {{ type: queue }}")
        if nats:
            lines.append(
                f"  NATS_{use}: {{ type: queue, connection: nats, stream: bench_{use.lower()}_{tag} }}"
            )
        if rabbit:
            lines.append(
                f"  RABBIT_{use}: {{ type: queue, connection: rabbit, queue: bench_{use.lower()}_{tag} }}"
            )
    return "\n".join(lines) + "\n"


class _Consumer:
    """One open consume stream; `next()` is the next batch."""

    def __init__(self, queue: Any) -> None:
        self._it: AsyncIterator[Any] = queue.consume(batch_size=1, max_wait=0, visibility_timeout=30)
        # The warm-up runs calls concurrently; a round trip owns the stream.
        self._lock = asyncio.Lock()

    async def round_trip(self, send: Call) -> None:
        async with self._lock:
            await send()
            batch = await anext(self._it)
            await batch.ack_all()

    async def close(self) -> None:
        await self._it.aclose()  # type: ignore[attr-defined]


# --- the drivers, straight ----------------------------------------------------------------------


class SqlitePeer:
    """What the local provider does per message, without bindingd: a committed INSERT (WAL,
    synchronous NORMAL), then a claim UPDATE and an ack DELETE, each committed."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(
            "CREATE TABLE m (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, body BLOB, lease TEXT,"
            " visible REAL)"
        )

    def _insert(self, n: int) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(
            "INSERT INTO m (id, body, visible) VALUES (?, ?, ?)",
            [(uuid.uuid4().hex, BODY_BYTES, time.time()) for _ in range(n)],
        )
        self.conn.execute("COMMIT")

    async def send(self) -> None:
        self._insert(1)

    async def send_batch(self) -> None:
        self._insert(100)

    async def round_trip(self) -> None:
        self._insert(1)
        lease = uuid.uuid4().hex
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(
            "UPDATE m SET lease = ?, visible = ? WHERE seq = (SELECT min(seq) FROM m WHERE lease IS NULL)",
            (lease, time.time() + 30),
        )
        self.conn.execute("COMMIT")
        self.conn.execute("SELECT body FROM m WHERE lease = ?", (lease,)).fetchall()
        self.conn.execute("DELETE FROM m WHERE lease = ?", (lease,))


class NatsPeer:
    """nats-py on a work-queue stream: publish with PubAck; pull fetch and ack_sync."""

    def __init__(self, tag: str) -> None:
        self.stream = f"bench_peer_{tag}"

    async def open(self) -> None:
        import nats
        from nats.js import api

        self.nc = await nats.connect(NATS_URL)
        self.js = self.nc.jetstream()
        await self.js.add_stream(
            name=self.stream,
            subjects=[f"{self.stream}.send", f"{self.stream}.e2e"],
            retention=api.RetentionPolicy.WORK_QUEUE,
        )
        await self.js.add_consumer(
            self.stream,
            api.ConsumerConfig(durable_name="peer", filter_subject=f"{self.stream}.e2e", ack_wait=30),
        )
        self.psub = await self.js.pull_subscribe_bind("peer", self.stream)
        self.lock = asyncio.Lock()

    async def send(self) -> None:
        await self.js.publish(f"{self.stream}.send", BODY_BYTES)

    async def send_batch(self) -> None:
        await asyncio.gather(*(self.js.publish(f"{self.stream}.send", BODY_BYTES) for _ in range(100)))

    async def round_trip(self) -> None:
        async with self.lock:
            await self.js.publish(f"{self.stream}.e2e", BODY_BYTES)
            msgs = await self.psub.fetch(1, timeout=5)
            await msgs[0].ack_sync()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.js.delete_stream(self.stream)
        await self.nc.close()


class RabbitPeer:
    """aio-pika: publish with confirms (a transaction for 100); basic.consume and ack."""

    def __init__(self, tag: str) -> None:
        self.name = f"bench_peer_{tag}"

    async def open(self) -> None:
        import aio_pika

        self.aio_pika = aio_pika
        self.connection = await aio_pika.connect(AMQP_URL)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.tx_channel = await self.connection.channel(publisher_confirms=False)
        self.send_queue = await self.channel.declare_queue(f"{self.name}.send", durable=True)
        self.e2e_queue = await self.channel.declare_queue(f"{self.name}.e2e", durable=True)
        self.incoming: asyncio.Queue[Any] = asyncio.Queue()
        self.lock = asyncio.Lock()
        self.consumer_tag = await self.e2e_queue.consume(self.incoming.put)

    def _message(self) -> Any:
        return self.aio_pika.Message(BODY_BYTES, delivery_mode=self.aio_pika.DeliveryMode.PERSISTENT)

    async def send(self) -> None:
        await self.channel.default_exchange.publish(self._message(), routing_key=f"{self.name}.send")

    async def send_batch(self) -> None:
        async with self.tx_channel.transaction():
            for _ in range(100):
                await self.tx_channel.default_exchange.publish(
                    self._message(), routing_key=f"{self.name}.send"
                )

    async def round_trip(self) -> None:
        async with self.lock:
            await self.channel.default_exchange.publish(self._message(), routing_key=f"{self.name}.e2e")
            message = await self.incoming.get()
            await message.ack()

    async def close(self) -> None:
        await self.e2e_queue.cancel(self.consumer_tag)
        for queue in (self.send_queue, self.e2e_queue):
            with contextlib.suppress(Exception):
                await queue.delete(if_unused=False, if_empty=False)
        await self.connection.close()


# --- the run ------------------------------------------------------------------------------------


async def _measure(
    endpoint: str, tag: str, root: Path, providers: list[str], n: int
) -> list[tuple[str, Result, Result, int]]:
    """(provider, bindingd result, driver result, messages per call) for each figure."""
    env = await connect(endpoint=endpoint)
    rows: list[tuple[str, Result, Result, int]] = []
    peers: dict[str, Any] = {"local": SqlitePeer(root / "peer.sqlite3")}
    try:
        if "nats" in providers:
            peers["nats"] = NatsPeer(tag)
            await peers["nats"].open()
        if "rabbitmq" in providers:
            peers["rabbitmq"] = RabbitPeer(tag)
            await peers["rabbitmq"].open()
        for provider in providers:
            prefix = {"local": "LOCAL", "nats": "NATS", "rabbitmq": "RABBIT"}[provider]
            sender, e2e, peer = env[f"{prefix}_SEND"], env[f"{prefix}_E2E"], peers[provider]
            batch = [{"body": BODY}] * 100
            figures: list[tuple[str, Call, Call, int, int, int]] = [
                ("send, 1 message", lambda s=sender: s.send(BODY), peer.send, 1, n, 1),
                ("send, 1 message, 16 in flight", lambda s=sender: s.send(BODY), peer.send, 1, 2 * n, 16),
                (
                    "send_batch of 100",
                    lambda s=sender, b=batch: s.send_batch(b),
                    peer.send_batch,
                    100,
                    n // 10,
                    1,
                ),
            ]
            for what, ours, theirs, per_call, calls, in_flight in figures:
                results = await interleaved(
                    {f"queue {what} ({provider})": ours, f"{provider} driver, {what}": theirs},
                    calls,
                    in_flight=in_flight,
                    rounds=5,
                )
                mine, peer_result = results.values()
                rows.append((provider, mine, peer_result, per_call))
            consumer = _Consumer(e2e)
            try:
                results = await interleaved(
                    {
                        f"queue send→consume→ack ({provider})": lambda c=consumer, q=e2e: c.round_trip(
                            lambda: q.send(BODY)
                        ),
                        f"{provider} driver, send→consume→ack": peer.round_trip,
                    },
                    n // 2,
                    rounds=5,
                )
            finally:
                await consumer.close()
            mine, peer_result = results.values()
            rows.append((provider, mine, peer_result, 1))
    finally:
        for name in ("nats", "rabbitmq"):
            if name in peers:
                await peers[name].close()
        await env.aclose()
    return rows


async def _cleanup(tag: str, providers: list[str]) -> None:
    names = [f"bench_send_{tag}", f"bench_e2e_{tag}"]
    if "nats" in providers:
        import nats

        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        for name in names:
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
        await nc.close()
    if "rabbitmq" in providers:
        import aio_pika

        connection = await aio_pika.connect(AMQP_URL)
        channel = await connection.channel()
        for name in names:
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        await connection.close()


def run(n: int) -> list[str]:
    """Start a daemon on a temporary project, measure every provider whose backend is up."""
    providers = ["local"] + [name for name, port in (("nats", 4222), ("rabbitmq", 5672)) if _up(port)]
    skipped = sorted({"nats", "rabbitmq"} - set(providers))
    tag = uuid.uuid4().hex[:8]
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bindingd-bench-queue-") as tmp:
        root = Path(tmp)
        (root / "bindingd.yaml").write_text(_project(tag, "nats" in providers, "rabbitmq" in providers))
        proc = start_daemon(root)
        try:
            endpoint = f"unix://{root / '.bindingd' / 'bindingd.sock'}"
            rows = asyncio.run(_measure(endpoint, tag, root, providers, n))
        finally:
            stop(proc)
            asyncio.run(_cleanup(tag, providers))
    lines.append(f"queue bench — {n} single sends per row, {n // 10} batches of 100, {n // 2} round trips")
    lines.append("each bindingd figure beside the same operation straight through the driver (ratio)")
    for _provider, mine, peer, per_call in rows:
        lines.append(_row(mine, peer, per_call))
        lines.append(_row(peer, peer, per_call))
    for name in skipped:
        lines.append(f"queue ({name}): skipped, its server is not running (python tests/services.py {name})")
    return lines


def _row(result: Result, peer: Result, per_call: int) -> str:
    rate = result.calls_per_s * per_call
    return (
        f"{result.name:<46} p50 {result.p50_ms:7.3f} ms ({result.p50_ms / peer.p50_ms:5.2f}x)  "
        f"p99 {result.p99_ms:7.3f} ms  {rate:8.0f} msg/s ({result.calls_per_s / peer.calls_per_s:4.2f}x)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queue")
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores")
    for line in run(200 if args.quick else 1000):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
