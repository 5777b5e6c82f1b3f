"""The queue conformance suite: Cloudflare Queues behaviour, the same for every provider.

Each test talks to the real daemon (in this process on a real unix socket, or as a `bindingd
serve` process where it is killed) through the Python client, against the real backend of
the machine (started if down), on every backend of tests/conformance/backends.py that serves
queues. Every test uses queue names of its own and deletes them after.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bindingd_client import (
    BackendTimeout,
    BackendUnavailable,
    Env,
    InvalidArgument,
    Message,
    PermissionDenied,
    Queue,
    connect,
)
from conformance.backends import (
    AMQP_URL,
    NATS_URL,
    Arrived,
    Backend,
    QueueSide,
    nats_cleanup,
    params,
    rabbit_cleanup,
    serving,
    stop_service,
)
from conformance.gateway_backend import developer_config, serving_gateway
from services import ensure
from support import DaemonProcess, bindingd_cli, connected, daemon_in_process, write_project

MAX_RETRIES = 2


def queue_side(backend: Backend) -> QueueSide:
    assert backend.queue is not None
    return backend.queue


@dataclass
class Project:
    config: Path
    backend: Backend
    names: list[str]
    side: QueueSide


# What a backend whose bindings only send (QueueSide.consumes False) runs: the tests of what a
# send delivers, read from the backend's own consumer. The rest consume through the daemon.
SEND_TESTS = {
    "test_send_and_consume_every_content_type",
    "test_limits_are_checked_and_a_bad_batch_sends_nothing",
    "test_delay",
    "test_writes_refused_where_writes_are_refused",
    "test_check_probes_every_queue_binding",
}


def _write(root: Path, backend: Backend, side: QueueSide) -> Project:
    tag = uuid.uuid4().hex[:8]
    jobs, dlq, plain, slow = f"jobs_{tag}", f"jobs_dlq_{tag}", f"plain_{tag}", f"slow_{tag}"
    connections = f"connections:\n      {side.connection}\n" if side.connection else ""
    config = f"""
    version: 1
    {connections}
    bindings:
      JOBS: {{ type: queue, {side.options(jobs)}, max_retries: {MAX_RETRIES}, dead_letter_queue: {dlq} }}
      JOBS_DLQ: {{ type: queue, {side.options(dlq)} }}
      PLAIN: {{ type: queue, {side.options(plain)}, max_retries: 0 }}
      SLOW: {{ type: queue, {side.options(slow)}, delivery_delay: 2, retry_delay: 2 }}
      {side.extra_bindings}
    envs:
      review:
        bindings:
          JOBS: {{ access: read-only }}
      production:
        protected: true
    """
    return Project(write_project(root, config), backend, [jobs, dlq, plain, slow], side)


@pytest.fixture(params=params(serving("queue")))
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    backend: Backend = request.param
    side = queue_side(backend)
    if not side.consumes and request.node.originalname not in SEND_TESTS:
        pytest.skip("the backend's queue bindings only send (its own consumer reads them): see SEND_TESTS")
    if side.per_test is not None:
        side = side.per_test(request)
    if backend.service:
        ensure(backend.service)
    # Behind a gateway, the project written is the gateway's (see `daemon`).
    made = _write(tmp_path / "gateway" if backend.behind_gateway else tmp_path, backend, side)
    yield made
    if backend.service:
        ensure(backend.service)
    side.cleanup(made.names)


@contextlib.asynccontextmanager
async def daemon(
    project: Project, request: pytest.FixtureRequest, env: str | None = None
) -> AsyncIterator[Any]:
    """The daemon in this process serving `project`, or, behind a gateway, a gateway serving it
    and a developer's daemon whose bindings all come from that gateway."""
    if not project.backend.behind_gateway:
        async with daemon_in_process(project.config, env=env) as served:
            yield served
        return
    async with serving_gateway(project.config.parent, project.config, request) as gateway:
        laptop = developer_config(project.config.parent.parent / "laptop", gateway, request)
        async with daemon_in_process(laptop, env=env) as served:
            yield served


@contextlib.asynccontextmanager
async def client_of(
    project: Project, request: pytest.FixtureRequest, env: str | None = None
) -> AsyncIterator[Env]:
    async with daemon(project, request, env) as served:
        client = await connect(endpoint=f"unix://{served.socket_path}")
        try:
            yield client
        finally:
            await client.aclose()


def own_process_only(project: Project) -> None:
    if project.backend.behind_gateway:
        pytest.skip(
            "needs the daemon as a process of its own; tests/gateway/test_remote.py covers the gateway"
        )


@pytest.fixture
async def env(project: Project, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    async with client_of(project, request) as client:
        yield client


@pytest.fixture
def jobs(env: Env) -> Queue:
    return env.JOBS


async def take(
    queue: Queue,
    n: int,
    *,
    ack: bool = True,
    timeout: float = 60.0,
    batch_size: int = 10,
    visibility_timeout: float | None = None,
    max_wait: float = 0.0,
) -> list[Message]:
    """Consume until `n` messages came (acking each batch unless told not to) or `timeout`."""
    got: list[Message] = []

    async def run() -> None:
        stream = queue.consume(
            batch_size=batch_size, max_wait=max_wait, visibility_timeout=visibility_timeout
        )
        async with contextlib.aclosing(stream):
            async for batch in stream:
                got.extend(batch.messages)
                if ack:
                    await batch.ack_all()
                if len(got) >= n:
                    return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run(), timeout)
    return got


async def nothing_within(queue: Queue, seconds: float) -> bool:
    return await take(queue, 1, ack=False, timeout=seconds) == []


@dataclass
class Deliveries:
    """What reaches JOBS' consumer: consumed (and acked) through the daemon, or, on a backend
    whose bindings only send, read from its own consumer (QueueSide.arrived)."""

    queue: Queue
    env: Env
    side: QueueSide
    name: str  # the queue's name in the project
    seen: set[str] = field(default_factory=set)  # ids handed out so far (own consumer)

    @property
    def consumes(self) -> bool:
        return self.side.consumes

    async def _arrived(self) -> list[Arrived]:
        assert self.side.arrived is not None
        # In the order they were sent (a consumer may record two of one batch in the same ms).
        return sorted(await self.side.arrived(self.env, self.name), key=lambda a: a.timestamp)

    async def next(self, n: int, timeout: float = 60.0) -> list[Arrived]:
        """At least `n` more messages, or what came within `timeout`."""
        if self.consumes:
            got = await take(self.queue, n, timeout=timeout)
            return [Arrived(m.id, m.body, m.content_type, m.attempts, m.timestamp.timestamp()) for m in got]
        deadline = time.monotonic() + timeout
        while True:
            new = [a for a in await self._arrived() if a.id not in self.seen]
            if len(new) >= n or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        self.seen.update(a.id for a in new)
        return new

    async def nothing_within(self, seconds: float) -> bool:
        if self.consumes:
            return await nothing_within(self.queue, seconds)
        await asyncio.sleep(seconds)
        return all(a.id in self.seen for a in await self._arrived())


@pytest.fixture
def deliveries(env: Env, project: Project) -> Deliveries:
    return Deliveries(env.JOBS, env, project.side, project.names[0])


async def test_metrics_tell_the_backlog(jobs: Queue, project: Project) -> None:
    """Queue.metrics(): what is stored and not acked. RabbitMQ tells only the count of the
    messages ready for delivery (no bytes, no age): the suite checks what each backend can tell."""
    empty = await jobs.metrics()
    assert (empty.backlog_count, empty.backlog_bytes, empty.oldest_message_timestamp) == (0, 0, None)
    before = time.time()
    await jobs.send_batch([{"body": "x" * 100, "content_type": "text"} for _ in range(3)])
    counted = project.backend.name != "rabbitmq"
    started = time.monotonic()
    while (m := await jobs.metrics()).backlog_count < 3:  # RabbitMQ counts with a little delay
        assert time.monotonic() - started < 10, m
        await asyncio.sleep(0.1)
    assert m.backlog_count == 3
    if counted:
        assert m.backlog_bytes >= 300
        assert m.oldest_message_timestamp is not None
        assert before - 1 <= m.oldest_message_timestamp.timestamp() <= time.time() + 1
    await take(jobs, 3)
    started = time.monotonic()
    while (m := await jobs.metrics()).backlog_count:
        assert time.monotonic() - started < 10, m
        await asyncio.sleep(0.1)
    assert m.oldest_message_timestamp is None


async def test_send_and_consume_every_content_type(deliveries: Deliveries) -> None:
    jobs = deliveries.queue
    before = time.time()
    await jobs.send({"n": 1, "s": "é"})
    await jobs.send("plain text ✓", content_type="text")
    await jobs.send(bytes(range(256)), content_type="bytes")
    got = await deliveries.next(3)
    assert [m.body for m in got] == [{"n": 1, "s": "é"}, "plain text ✓", bytes(range(256))]
    assert [m.content_type for m in got] == ["json", "text", "bytes"]
    for m in got:
        assert len(m.id) == 32 and int(m.id, 16) >= 0
        assert m.attempts == 1
        assert before - 1 <= m.timestamp <= time.time() + 1
    assert len({m.id for m in got}) == 3
    assert await deliveries.nothing_within(1.5)


async def test_limits_are_checked_and_a_bad_batch_sends_nothing(deliveries: Deliveries) -> None:
    jobs = deliveries.queue
    with pytest.raises(InvalidArgument, match="128 KB"):
        await jobs.send(b"x" * 128_001, content_type="bytes")
    with pytest.raises(InvalidArgument, match="100 messages"):
        await jobs.send_batch([{"body": i} for i in range(101)])
    with pytest.raises(InvalidArgument, match="256 KB"):
        await jobs.send_batch([{"body": b"x" * 100_000, "content_type": "bytes"}] * 3)
    with pytest.raises(InvalidArgument, match="43200"):
        await jobs.send(1, delay_seconds=43201)
    with pytest.raises(InvalidArgument, match="43200"):
        await jobs.send_batch([{"body": 1}, {"body": 2, "delay_seconds": -1}])
    with pytest.raises(InvalidArgument, match="v8"):
        await jobs.send({"a": 1}, content_type="v8")  # type: ignore[arg-type]
    # The largest allowed message and batch go through.
    await jobs.send(b"y" * 128_000, content_type="bytes")
    await jobs.send_batch([{"body": b"z" * (2 * 1024), "content_type": "bytes"}] * 100)
    if deliveries.consumes:
        with pytest.raises(InvalidArgument, match="batch_size"):
            await take(jobs, 1, batch_size=101)
        got = await take(jobs, 101, batch_size=100, ack=False)
        assert len(got) == 101
        with pytest.raises(InvalidArgument, match="43200"):
            await got[0].retry(delay_seconds=43201)
        await asyncio.gather(*(m.ack() for m in got))
    else:
        arrived = await deliveries.next(101)
        assert len(arrived) == 101 and arrived[0].body == b"y" * 128_000
    # Nothing of the refused sends arrived (nor more than once of the others).
    assert await deliveries.nothing_within(1.5)


async def test_order_within_one_producer(jobs: Queue) -> None:
    for i in range(30):
        await jobs.send(i)
    await jobs.send_batch([{"body": i} for i in range(30, 60)])
    got = await take(jobs, 60, batch_size=7)
    assert [m.body for m in got] == list(range(60))


async def test_delay(deliveries: Deliveries) -> None:
    jobs = deliveries.queue
    await jobs.send("late", content_type="text", delay_seconds=3)
    await jobs.send_batch([{"body": "batch-late"}], delay_seconds=3)
    await jobs.send("now", content_type="text")
    started = time.monotonic()
    first = await deliveries.next(1)
    assert [m.body for m in first] == ["now"]
    later = await deliveries.next(2, timeout=30)
    assert sorted(m.body for m in later) == ["batch-late", "late"]
    assert time.monotonic() - started >= 2.0


async def test_binding_delivery_and_retry_delays(env: Env) -> None:
    # delivery_delay and retry_delay (Cloudflare's producer and consumer settings) apply when a
    # call gives no delay of its own; an explicit 0 wins.
    slow = env.SLOW
    started = time.monotonic()
    await slow.send("default delay", content_type="text")
    await slow.send_batch([{"body": "now", "content_type": "text", "delay_seconds": 0}])
    assert [m.body for m in await take(slow, 1, timeout=1.0)] == ["now"]
    later = await take(slow, 1, ack=False, timeout=30)
    assert [m.body for m in later] == ["default delay"]
    assert time.monotonic() - started >= 1.5
    retried_at = time.monotonic()
    await later[0].retry()
    again = await take(slow, 1, timeout=30)
    assert [(m.body, m.attempts) for m in again] == [("default delay", 2)]
    assert time.monotonic() - retried_at >= 1.5


async def test_retry_with_delay(jobs: Queue) -> None:
    await jobs.send({"job": 1})
    first = await take(jobs, 1, ack=False)
    assert first[0].attempts == 1
    retried_at = time.monotonic()
    await first[0].retry(delay_seconds=3)
    again = await take(jobs, 1, ack=False, timeout=30)
    assert time.monotonic() - retried_at >= 2.0
    assert (again[0].id, again[0].body, again[0].attempts) == (first[0].id, {"job": 1}, 2)
    await again[0].ack()
    assert await nothing_within(jobs, 2)


async def test_visibility_timeout_redelivers_what_was_not_acked(jobs: Queue) -> None:
    await jobs.send_batch([{"body": "a"}, {"body": "b"}])
    first = await take(jobs, 2, ack=False, visibility_timeout=2)
    assert sorted(m.body for m in first) == ["a", "b"]
    by_body = {m.body: m for m in first}
    await by_body["a"].ack()
    again = await take(jobs, 1, ack=False, timeout=30, visibility_timeout=30)
    assert [(m.body, m.attempts, m.id) for m in again] == [("b", 2, by_body["b"].id)]
    await again[0].ack()
    assert await nothing_within(jobs, 4)


async def test_max_retries_then_dead_letter_queue(env: Env) -> None:
    jobs, dlq = env.JOBS, env.JOBS_DLQ
    await jobs.send({"poison": True})
    attempts = []
    for _ in range(MAX_RETRIES + 1):
        got = await take(jobs, 1, ack=False, timeout=30)
        attempts.append(got[0].attempts)
        await got[0].retry()
    assert attempts == [1, 2, 3]
    assert await nothing_within(jobs, 2)
    dead = await take(dlq, 1, timeout=30)
    assert [m.body for m in dead] == [{"poison": True}]


async def test_expired_leases_count_towards_max_retries(env: Env) -> None:
    await env.JOBS.send("slow", content_type="text")
    for attempt in range(1, MAX_RETRIES + 2):
        got = await take(env.JOBS, 1, ack=False, timeout=30, visibility_timeout=1)
        assert got[0].attempts == attempt
    dead = await take(env.JOBS_DLQ, 1, timeout=30)
    assert [m.body for m in dead] == ["slow"]


async def test_without_dead_letter_queue_the_message_is_dropped(env: Env) -> None:
    await env.PLAIN.send("once", content_type="text")
    got = await take(env.PLAIN, 1, ack=False)
    await got[0].retry()  # max_retries 0: that was the last delivery
    assert await nothing_within(env.PLAIN, 2)


async def test_two_consumers_each_message_to_one(jobs: Queue) -> None:
    total = 400
    for start in range(0, total, 100):
        await jobs.send_batch([{"body": i} for i in range(start, start + 100)])
    seen: list[list[int]] = [[], []]

    async def consumer(into: list[int]) -> None:
        while sum(map(len, seen)) < total:
            got = await take(jobs, 1, batch_size=5, timeout=5)
            into.extend(m.body for m in got)

    await asyncio.wait_for(asyncio.gather(consumer(seen[0]), consumer(seen[1])), 120)
    assert sorted(seen[0] + seen[1]) == list(range(total))
    assert not set(seen[0]) & set(seen[1])
    assert seen[0] and seen[1]


async def test_ten_thousand_messages_none_lost_or_duplicated(jobs: Queue) -> None:
    total = 10_000
    for start in range(0, total, 100):
        await jobs.send_batch([{"body": i} for i in range(start, start + 100)])
    got = await take(jobs, total, batch_size=100, timeout=240)
    bodies = [m.body for m in got]
    assert len(bodies) == total
    assert sorted(bodies) == list(range(total))
    assert await nothing_within(jobs, 2)


@pytest.mark.parametrize("env_name", ["review", "production"])
async def test_writes_refused_where_writes_are_refused(
    project: Project, env_name: str, request: pytest.FixtureRequest
) -> None:
    async with client_of(project, request, env_name) as client:
        with pytest.raises(PermissionDenied):
            await client.JOBS.send(1)
        with pytest.raises(PermissionDenied):
            await client.JOBS.send_batch([{"body": 1}])
        if project.side.consumes:
            with pytest.raises(PermissionDenied):
                await take(client.JOBS, 1)


async def test_sigkill_mid_consume_loses_nothing_acked_or_not(project: Project) -> None:
    own_process_only(project)
    total = 300
    root = project.config.parent
    daemon = DaemonProcess(root).start()
    acked: list[int] = []
    try:
        client = await connect(endpoint=daemon.endpoint)
        try:
            for start in range(0, total, 100):
                await client.JOBS.send_batch([{"body": i} for i in range(start, start + 100)])
            stream = client.JOBS.consume(batch_size=20, max_wait=0, visibility_timeout=3)
            async with contextlib.aclosing(stream):
                async for batch in stream:
                    half = batch.messages[: len(batch) // 2]
                    for m in half:
                        await m.ack()
                    acked.extend(m.body for m in half)
                    if len(acked) >= 50:
                        # Killed with leases held and a stream open.
                        daemon.signal(signal.SIGKILL)
                        break
        finally:
            await client.aclose()
        assert daemon.proc is not None
        daemon.proc.wait(30)
        daemon.start()
        client = await connect(endpoint=daemon.endpoint)
        try:
            rest = await take(
                client.JOBS, total - len(acked), batch_size=50, timeout=120, visibility_timeout=60
            )
        finally:
            await client.aclose()
    finally:
        daemon.stop()
    rest_bodies = [m.body for m in rest]
    assert not set(acked) & set(rest_bodies), "an acked message was delivered again"
    assert sorted(acked + rest_bodies) == list(range(total))


async def test_consumers_end_promptly_when_the_daemon_drains(project: Project) -> None:
    own_process_only(project)
    daemon = DaemonProcess(project.config.parent).start()
    client = await connect(endpoint=daemon.endpoint)
    ended = asyncio.Event()

    async def consume() -> None:
        with contextlib.suppress(Exception):
            async for _ in client.JOBS.consume(max_wait=0):
                pass
        ended.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.sleep(1.0)
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        await asyncio.wait_for(ended.wait(), 8)
        assert daemon.proc is not None
        assert await asyncio.to_thread(daemon.proc.wait, 20) == 0
        # Well inside the 10 s grace period: the stream noticed the drain.
        assert time.monotonic() - started < 8
    finally:
        task.cancel()
        await client.aclose()
        daemon.stop()


@pytest.mark.serial  # stops the shared server
@pytest.mark.parametrize("backend", params(serving("queue", lambda b: bool(b.stop))))
async def test_backend_restart_mid_run(backend: Backend, tmp_path: Path) -> None:
    ensure(backend.service)
    made = _write(tmp_path, backend, queue_side(backend))
    try:
        async with daemon_in_process(made.config) as daemon:
            client = await connect(endpoint=f"unix://{daemon.socket_path}")
            try:
                await client.JOBS.send_batch([{"body": i} for i in range(50)])
                first = await take(client.JOBS, 10, batch_size=10)
                await asyncio.to_thread(stop_service, backend)
                # Down: sends fail with the table's error, not a hang or an INTERNAL.
                with pytest.raises((BackendUnavailable, BackendTimeout)):
                    await client.JOBS.send("while down")
                # A consumer is told too, rather than waiting as on an empty queue.
                with pytest.raises((BackendUnavailable, BackendTimeout)):
                    await take(client.JOBS, 1, timeout=30)
                await asyncio.to_thread(ensure, backend.service)
                # The daemon reconnects by itself; sends may fail while it does, none is lost.
                sent_after = await _send_until_accepted(client.JOBS, [{"body": i} for i in range(50, 80)])
                assert sent_after
                rest: list[Message] = []
                deadline = time.monotonic() + 120
                # A send that failed while the backend was down may still have been stored.
                while len({m.body for m in rest} - {"while down"}) < 70 and time.monotonic() < deadline:
                    rest += await take(client.JOBS, 70, batch_size=20, timeout=10)
            finally:
                await client.aclose()
    finally:
        await asyncio.to_thread(ensure, backend.service)
        await asyncio.to_thread(queue_side(backend).cleanup, made.names)
    # "while down" may have been stored after all (a timeout is not a refusal): not counted.
    bodies = {m.body for m in first + rest} - {"while down"}
    assert sorted(bodies) == list(range(80))


async def _send_until_accepted(queue: Queue, batch: list[dict[str, object]]) -> bool:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            await queue.send_batch(batch)
            return True
        except (BackendUnavailable, BackendTimeout):
            await asyncio.sleep(1.0)
    return False


def test_check_probes_every_queue_binding(project: Project) -> None:
    own_process_only(project)
    result = bindingd_cli("check", cwd=project.config.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "JOBS" in result.stdout and "JOBS_DLQ" in result.stdout


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("nats", "nats://app:pw-never-shown@127.0.0.1:1"),
        ("rabbitmq", "amqp://app:pw-never-shown@127.0.0.1:1/"),
    ],
)
async def test_unreachable_backend_is_backend_unavailable(kind: str, url: str, tmp_path: Path) -> None:
    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          down: {{ kind: {kind}, url: "{url}" }}
        bindings:
          JOBS: {{ type: queue, connection: down }}
        """,
    )
    # The daemon starts and serves at once: readiness never waits on a remote backend.
    async with connected(config) as client:
        with pytest.raises(BackendUnavailable) as sent:
            await client.JOBS.send(1)
        with pytest.raises(BackendUnavailable) as consumed:
            await take(client.JOBS, 1, timeout=30)
    for error in (sent.value, consumed.value):
        assert "JOBS" in str(error) and "127.0.0.1:1" in str(error)
        assert "pw-never-shown" not in str(error)


async def test_a_late_ack_or_retry_leaves_a_message_leased_again_alone(jobs: Queue) -> None:
    await jobs.send("x", content_type="text")
    first = await take(jobs, 1, ack=False, visibility_timeout=1)
    second = await take(jobs, 1, ack=False, timeout=30, visibility_timeout=2)
    assert [(m.id, m.attempts) for m in second] == [(first[0].id, 2)]
    # Both too late: the message is leased to `second` now, then its lease runs out too.
    await first[0].ack()
    await first[0].retry()
    third = await take(jobs, 1, ack=False, timeout=30, visibility_timeout=30)
    assert [(m.id, m.attempts) for m in third] == [(first[0].id, 3)]
    await third[0].ack()
    assert await nothing_within(jobs, 3)


async def test_dead_lettered_once_and_gone_from_the_queue(env: Env) -> None:
    await env.JOBS.send_batch([{"body": i} for i in range(5)])
    for _ in range(MAX_RETRIES + 1):
        got = await take(env.JOBS, 5, ack=False, timeout=30, visibility_timeout=1, batch_size=5)
        assert sorted(m.body for m in got) == list(range(5))
    dead = await take(env.JOBS_DLQ, 5, timeout=30)
    assert sorted(m.body for m in dead) == list(range(5))
    assert [m.attempts for m in dead] == [1] * 5
    assert await nothing_within(env.JOBS_DLQ, 3)
    assert await nothing_within(env.JOBS, 1)


CONSUMER_SCRIPT = """
import asyncio, sys
from bindingd_client import connect

async def main():
    client = await connect(endpoint=sys.argv[1])
    async for batch in client.JOBS.consume(batch_size=10, max_wait=0.5, visibility_timeout=2):
        for m in batch.messages[:3]:
            await m.ack()
        print(len(batch.messages), flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_consumer_process_killed_mid_batch_gets_its_leases_back(
    project: Project, request: pytest.FixtureRequest
) -> None:
    async with daemon(project, request) as served:
        endpoint = f"unix://{served.socket_path}"
        client = await connect(endpoint=endpoint)
        try:
            await client.JOBS.send_batch([{"body": i} for i in range(10)])
            consumer = subprocess.Popen(
                [sys.executable, "-c", CONSUMER_SCRIPT, endpoint], stdout=subprocess.PIPE
            )
            try:
                assert consumer.stdout is not None
                line = await asyncio.wait_for(asyncio.to_thread(consumer.stdout.readline), 60)
                assert line.strip() == b"10"
            finally:
                consumer.kill()
                await asyncio.to_thread(consumer.wait, 30)
            rest = await take(client.JOBS, 7, timeout=60, visibility_timeout=30)
            assert len(rest) == 7
            assert [m.attempts for m in rest] == [2] * 7
            assert await nothing_within(client.JOBS, 3)
        finally:
            await client.aclose()


async def test_a_binding_that_is_its_own_dead_letter_queue_is_refused(project: Project) -> None:
    own_process_only(project)
    tag = uuid.uuid4().hex[:8]
    name = f"selfdlq_{tag}"
    side = queue_side(project.backend)
    connections = f"connections:\n  {side.connection}\n" if side.connection else ""
    config = write_project(
        project.config.parent / "self",
        f"version: 1\n{connections}bindings:\n"
        f"  LOOP: {{ type: queue, {side.options(name)}, dead_letter_queue: {name} }}\n",
    )
    try:
        async with connected(config) as client:
            with pytest.raises(InvalidArgument) as refused:
                await client.LOOP.send(1)
    finally:
        await asyncio.to_thread(side.cleanup, [name])
    assert "LOOP" in str(refused.value) and "dead_letter_queue" in str(refused.value)


@pytest.mark.parametrize(
    "options", ["stream: 'a.b'", "stream: ok_name, dead_letter_queue: 'd*'", "ack_wait: 0"]
)
async def test_nats_names_and_ack_wait_nats_refuses_are_invalid_argument(
    options: str, tmp_path: Path
) -> None:
    ensure("nats")
    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          nats: {{ kind: nats, url: '{NATS_URL}' }}
        bindings:
          JOBS: {{ type: queue, connection: nats, {options} }}
        """,
    )
    async with connected(config) as client:
        with pytest.raises(InvalidArgument) as refused:
            await client.JOBS.send(1)
    assert "JOBS" in str(refused.value)


async def test_rabbitmq_receives_cancelled_mid_fetch_leave_other_leases_alone() -> None:
    """A consumer that goes away cancels its receive; on RabbitMQ that must not close the
    channel holding every other consumer's unacked messages (their acks would be lost and the
    messages delivered again). Driven on the provider itself: through a socket, hitting the
    moment of the fetch is left to chance."""
    from bindingd.config.model import Connection
    from bindingd.domain.queue import OutgoingMessage
    from bindingd.providers.connections import SharedConnections
    from bindingd.providers.rabbitmq.queue import RabbitQueue

    ensure("rabbitmq")
    name = f"cancel_{uuid.uuid4().hex[:8]}"
    provider = RabbitQueue(
        Connection("rabbit", "rabbitmq", {"url": AMQP_URL}), SharedConnections(), name, 100, None
    )
    await provider.start()
    try:
        batch = [OutgoingMessage(uuid.uuid4().hex, 0, str(i).encode(), "text", 0) for i in range(100)]
        await provider.send(batch)
        held = await provider.receive(5, 60, 1)
        assert len(held) == 5
        for i in range(200):
            fetch = asyncio.ensure_future(provider.receive(10, 1, 0))
            await asyncio.sleep((i % 20) * 0.0002)
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetch
        settled = await provider.settle([d.lease_id for d in held], [])
        assert (settled.acked, settled.expired) == (5, [])
        assert await provider.receive(100, 60, 0) is not None  # the consumer can go on
    finally:
        await provider.close()
        await asyncio.to_thread(rabbit_cleanup, [name])


GONE_CONSUMER_SCRIPT = """
import asyncio, sys
import nats

async def main():
    nc = await nats.connect(sys.argv[1])
    psub = await nc.jetstream().pull_subscribe_bind("bindingd", sys.argv[2])
    fetch = asyncio.ensure_future(psub.fetch(1, timeout=600))
    await asyncio.sleep(0.2)
    await nc.flush()
    print("fetching", flush=True)
    await fetch

asyncio.run(main())
"""


async def _kill_a_nats_consumer_mid_fetch(stream: str) -> None:
    """Another consumer of the stream (a second daemon, a script) killed while its fetch waits:
    its pull request stays on the consumer with nobody listening."""
    gone = subprocess.Popen(
        [sys.executable, "-c", GONE_CONSUMER_SCRIPT, NATS_URL, stream], stdout=subprocess.PIPE
    )
    try:
        assert gone.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(gone.stdout.readline), 30)
        assert line.strip() == b"fetching"
    finally:
        gone.kill()
        await asyncio.to_thread(gone.wait, 30)


@pytest.fixture
async def nats_jobs(tmp_path: Path) -> AsyncIterator[tuple[Queue, str]]:
    """JOBS on a NATS stream of its own (ack_wait 3, max_retries 5) and the stream's name."""
    ensure("nats")
    name = f"gone_{uuid.uuid4().hex[:8]}"
    config = write_project(
        tmp_path,
        f"""
        version: 1
        connections:
          nats: {{ kind: nats, url: '{NATS_URL}' }}
        bindings:
          JOBS: {{ type: queue, connection: nats, stream: {name}, ack_wait: 3, max_retries: 5 }}
        """,
    )
    try:
        async with connected(config) as client:
            yield client.JOBS, name
    finally:
        await asyncio.to_thread(nats_cleanup, [name])


# The lease the two tests below let run out after killing a consumer mid-fetch.
LEASE_S = 4


async def test_nats_a_consumer_killed_mid_fetch_does_not_reset_attempts(nats_jobs: tuple[Queue, str]) -> None:
    """nats-server before 2.10.14 drops the redelivery of a lease that runs out while only such a
    dead pull request waits, and rewinds its stream cursor: the message came back as a first
    delivery (num_delivered 1), an expired lease counted as attempt 1, not 2. The same happens,
    by chance, when the daemon's own expired poll is the only request waiting."""
    jobs, stream = nats_jobs
    await jobs.send("x", content_type="text")
    leased_at = time.monotonic()
    first = await take(jobs, 1, ack=False, visibility_timeout=LEASE_S)
    assert [m.attempts for m in first] == [1]
    await _kill_a_nats_consumer_mid_fetch(stream)
    # The case is a lease that runs out after the kill: on a loaded machine the kill can take a
    # while, so the lease is long enough to outlast it, and the test says so if it did not.
    assert time.monotonic() - leased_at < LEASE_S, "the kill took longer than the lease"
    await asyncio.sleep(LEASE_S + 1 - (time.monotonic() - leased_at))  # the lease runs out
    second = await take(jobs, 1, ack=False, timeout=30, visibility_timeout=30)
    assert [(m.id, m.attempts) for m in second] == [(first[0].id, 2)]
    await second[0].ack()
    assert await nothing_within(jobs, 4)


async def test_nats_a_lost_redelivery_does_not_hand_out_a_leased_message(
    nats_jobs: tuple[Queue, str],
) -> None:
    """With two messages in flight, the cursor the server rewinds points at the other one, which
    it then delivers again as new while its lease still holds."""
    jobs, stream = nats_jobs
    await jobs.send_batch([{"body": "a"}, {"body": "b"}])
    leased_at = time.monotonic()
    a = await take(jobs, 1, ack=False, visibility_timeout=LEASE_S, batch_size=1)
    b = await take(jobs, 1, ack=False, visibility_timeout=60, batch_size=1)
    assert [m.body for m in a + b] == ["a", "b"]
    await _kill_a_nats_consumer_mid_fetch(stream)
    assert time.monotonic() - leased_at < LEASE_S, "the kill took longer than the lease"
    # The lease of `a` runs out after the kill; `b` stays leased.
    await asyncio.sleep(LEASE_S + 1 - (time.monotonic() - leased_at))
    again = await take(jobs, 1, ack=False, timeout=30, visibility_timeout=60)
    assert [m.body for m in again] == ["a"]
    assert await nothing_within(jobs, 4)
    await again[0].ack()
    await b[0].ack()
    assert await nothing_within(jobs, 4)
