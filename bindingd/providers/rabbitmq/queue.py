"""Cloudflare Queues on RabbitMQ (aio-pika): a durable queue per binding, persistent messages.

- Sending: one message through a channel with publisher confirms; a batch in one AMQP
  transaction (tx.select / tx.commit), so a batch is stored whole or not at all.
- Delays without plugins: a message delayed d seconds goes to the durable queue
  `<queue>.delay.<d>` (x-message-ttl d s, dead-lettering into `<queue>` through the default
  exchange). One queue per delay value, so every message in it expires in the order it came;
  each expires itself (x-expires) once unused for a minute past its TTL.
- Consuming: basic.get on a channel of the provider (the daemon pulls exactly what a consumer
  asked for). RabbitMQ has no visibility timeout, so the daemon keeps the leases: a lease that
  runs out is republished with attempts + 1 and the original acked (or dead-lettered after its
  last retry). If the daemon dies, RabbitMQ requeues every unacked message when the
  connection drops. Attempts travel in a header; a message RabbitMQ redelivered after a lost
  connection counts one more.
- An ack is followed by a synchronous method on the same channel: AMQP processes a channel's
  frames in order, so once that answers, the ack is applied and the message never comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from bindingd.config.model import Binding, Connection
from bindingd.config.urls import connection_address
from bindingd.domain.queue import (
    OutgoingMessage,
    QueueBacklog,
    QueueDelivery,
    QueueSettled,
    Retry,
    dead_letter_queue_of,
    exhausted,
    max_retries_of,
)
from bindingd.errors import BindingdError, backend_unavailable, describe
from bindingd.providers.connections import ProviderContext
from bindingd.providers.leases import Lease, Leases, log_dead_letter
from bindingd.providers.rabbitmq.client import FAILURES, OPERATION_TIMEOUT_S, RabbitClient, map_error

log = structlog.get_logger("bindingd.queue.rabbitmq")
T = TypeVar("T")

# An idle consumer polls with basic.get at this pace, doubling up to the max while empty.
POLL_MIN_S = 0.002
POLL_MAX_S = 0.05
# A delay queue is deleted this long after its messages' TTL once nothing uses it.
DELAY_QUEUE_SPARE_MS = 60_000
REDECLARE_AFTER_S = 30.0
H_ATTEMPTS, H_TIME, H_TYPE = "x-bindingd-attempts", "x-bindingd-timestamp-ms", "x-bindingd-content-type"


@dataclass
class _Lease(Lease):
    message: AbstractIncomingMessage


class RabbitQueue:
    """The rabbitmq queue provider; one per binding, one durable queue per binding."""

    def __init__(
        self,
        connection: Connection,
        connections: Any,
        queue: str,
        max_retries: int,
        dead_letter_queue: str | None,
    ) -> None:
        # Messages that left after their last retry: bindingd_queue_messages_total{event="dead_lettered"}.
        self.dead_lettered = 0
        self.connection = connection
        # For messages: never the credentials the URL may hold.
        self.address = connection_address(connection)
        self._connections = connections
        self.queue = queue
        self.max_retries = max_retries
        self.dead_letter_queue = dead_letter_queue
        self._client: RabbitClient | None = None
        self._channels: dict[str, AbstractChannel] = {}
        self._channel_lock = asyncio.Lock()
        self._tx_lock = asyncio.Lock()
        self._get_lock = asyncio.Lock()
        self._declared: dict[str, float] = {}
        self._leases: Leases[_Lease] = Leases()
        self._keeper: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> RabbitQueue:
        assert binding.connection is not None
        options = binding.options
        queue = options.get("queue", binding.name)
        return cls(
            binding.connection,
            context.connections,
            queue,
            max_retries_of(options),
            dead_letter_queue_of(options, queue),
        )

    async def start(self) -> None:
        self._client = await self._connections.acquire(self.connection, RabbitClient)

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keeper
        # Unsettled leases go back to the queue at once when their channel closes.
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        self._leases.clear()
        if self._client is not None:
            await self._connections.release(self.connection)

    async def check(self) -> str:
        """Reachable and authenticated; the queue is looked at, never created, by a probe."""
        try:
            channel = await self._channel("probe")
            declared = await channel.declare_queue(self.queue, passive=True, timeout=OPERATION_TIMEOUT_S)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return f"rabbitmq at {self.address}, queue {self.queue} not created yet"
        except FAILURES as e:
            raise self._error(e) from None
        count = declared.declaration_result.message_count
        return f"rabbitmq at {self.address}, queue {self.queue} ({count} messages)"

    async def backlog(self) -> QueueBacklog:
        """RabbitMQ tells only the messages ready for delivery: leased (unacked) and delayed ones
        are not counted, and neither their bytes nor their age are known (0 and None)."""
        # A channel of its own: a passive declare of a queue not made yet closes its channel.
        assert self._client is not None, "provider not started"
        channel = None
        try:
            channel = await (await self._client.connection()).channel()
            declared = await channel.declare_queue(self.queue, passive=True, timeout=OPERATION_TIMEOUT_S)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return QueueBacklog(0, 0, None)
        except FAILURES as e:
            raise self._error(e) from None
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        return QueueBacklog(int(declared.declaration_result.message_count or 0), 0, None)

    def _error(self, e: BaseException) -> BindingdError:
        """An AMQP failure as the error table's reason: a queue declared otherwise is this
        binding's own; the rest is the connection's (`client.map_error`)."""
        if isinstance(e, aiormq.exceptions.ChannelPreconditionFailed):
            return backend_unavailable(
                f"rabbitmq refused queue {self.queue}: {describe(e)}; it exists with other settings, "
                "give the binding a `queue` of its own"
            )
        return map_error(e, self.connection)

    async def _channel(self, kind: str) -> AbstractChannel:
        """A channel per use: "confirm" (publisher confirms), "tx" (transactions), "get"."""
        channel = self._channels.get(kind)
        if channel is not None and not channel.is_closed:
            return channel
        assert self._client is not None, "provider not started"
        async with self._channel_lock:
            channel = self._channels.get(kind)
            if channel is None or channel.is_closed:
                connection = await self._client.connection()
                channel = await connection.channel(publisher_confirms=kind == "confirm")
                self._channels[kind] = channel
                self._declared.clear()
            return channel

    async def _declare(
        self, channel: AbstractChannel, name: str, arguments: dict[str, Any] | None = None
    ) -> None:
        """Declare a durable queue (again after REDECLARE_AFTER_S, which keeps a delay queue alive)."""
        key = f"{id(channel)}:{name}"
        if time.monotonic() - self._declared.get(key, -REDECLARE_AFTER_S) < REDECLARE_AFTER_S:
            return
        await channel.declare_queue(name, durable=True, arguments=arguments, timeout=OPERATION_TIMEOUT_S)
        self._declared[key] = time.monotonic()

    async def _route(self, channel: AbstractChannel, delay_s: int, queue: str | None = None) -> str:
        """The queue to publish to for `delay_s`, declared."""
        target = queue or self.queue
        await self._declare(channel, target)
        if not delay_s:
            return target
        name = f"{target}.delay.{delay_s}"
        await self._declare(
            channel,
            name,
            {
                "x-message-ttl": delay_s * 1000,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": target,
                "x-expires": delay_s * 1000 + DELAY_QUEUE_SPARE_MS,
            },
        )
        return name

    @staticmethod
    def _message(
        body: bytes, message_id: str, timestamp_ms: int, content_type: str, attempts: int
    ) -> aio_pika.Message:
        return aio_pika.Message(
            body,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={H_ATTEMPTS: attempts, H_TIME: timestamp_ms, H_TYPE: content_type},
        )

    async def send(self, messages: list[OutgoingMessage]) -> None:
        await _uncancelled(self._send(messages))

    async def _send(self, messages: list[OutgoingMessage]) -> None:
        try:
            if len(messages) == 1:
                m = messages[0]
                channel = await self._channel("confirm")
                target = await self._route(channel, m.delay_s)
                await channel.default_exchange.publish(
                    self._message(m.body, m.id, m.timestamp_ms, m.content_type, 0),
                    routing_key=target,
                    timeout=OPERATION_TIMEOUT_S,
                )
                return
            async with self._tx_lock:
                channel = await self._channel("tx")
                targets = [await self._route(channel, m.delay_s) for m in messages]
                async with channel.transaction():
                    for m, target in zip(messages, targets, strict=True):
                        await channel.default_exchange.publish(
                            self._message(m.body, m.id, m.timestamp_ms, m.content_type, 0), routing_key=target
                        )
        except FAILURES as e:
            raise self._error(e) from None

    async def receive(self, max_messages: int, visibility_s: float, wait_s: float) -> list[QueueDelivery]:
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._keep_leases())
        deadline = time.monotonic() + wait_s
        pause = POLL_MIN_S
        while True:
            out = await _uncancelled(self._fetch(max_messages, visibility_s))
            if out or time.monotonic() >= deadline:
                return out
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, POLL_MAX_S)

    async def _fetch(self, max_messages: int, visibility_s: float) -> list[QueueDelivery]:
        """Lease up to `max_messages` that are in the queue now (basic.get, no waiting)."""
        out: list[QueueDelivery] = []
        try:
            channel = await self._channel("get")
            await self._declare(channel, self.queue)
            queue = await channel.get_queue(self.queue, ensure=False)
            async with self._get_lock:
                while len(out) < max_messages:
                    message = await queue.get(no_ack=False, fail=False, timeout=OPERATION_TIMEOUT_S)
                    if message is None:
                        break
                    delivery = await self._lease(message, visibility_s)
                    if delivery is not None:
                        out.append(delivery)
        except FAILURES as e:
            if out:
                return out  # leased already: hand them out; the error shows on the next call
            raise self._error(e) from None
        return out

    async def _lease(self, message: AbstractIncomingMessage, visibility_s: float) -> QueueDelivery | None:
        headers = message.headers or {}
        attempts = int(headers.get(H_ATTEMPTS, 0) or 0) + 1 + (1 if message.redelivered else 0)
        if exhausted(attempts - 1, self.max_retries):
            await self._dead_letter(message, attempts - 1)
            return None
        lease_id = self._leases.grant(
            _Lease(attempts=attempts, deadline=time.monotonic() + visibility_s, message=message)
        )
        return QueueDelivery(
            id=message.message_id or "",
            timestamp_ms=int(headers.get(H_TIME, 0) or 0),
            body=message.body,
            content_type=str(headers.get(H_TYPE, "bytes")),
            attempts=attempts,
            lease_id=lease_id,
        )

    async def settle(self, acks: list[str], retries: list[Retry]) -> QueueSettled:
        return await _uncancelled(self._settle(acks, retries))

    async def _settle(self, acks: list[str], retries: list[Retry]) -> QueueSettled:
        expired: list[str] = []
        acked = retried = 0
        try:
            for lease_id in acks:
                lease = self._leases.take(lease_id)
                if lease is None or not _channel_open(lease.message):
                    expired.append(lease_id)
                    continue
                await lease.message.ack()
                acked += 1
            for retry in retries:
                lease = self._leases.take(retry.lease_id)
                if lease is None or not _channel_open(lease.message):
                    expired.append(retry.lease_id)
                    continue
                await self._redeliver(lease, retry.delay_s)
                retried += 1
            if acked:
                # A synchronous method after the acks: when it answers, they are applied.
                channel = await self._channel("get")
                await channel.declare_queue(self.queue, passive=True, timeout=OPERATION_TIMEOUT_S)
        except FAILURES as e:
            raise self._error(e) from None
        return QueueSettled(acked, retried, expired)

    async def _redeliver(self, lease: _Lease, delay_s: int) -> None:
        """A failed delivery: back in the queue with its attempts (after `delay_s`), or dead-lettered."""
        if exhausted(lease.attempts, self.max_retries):
            await self._dead_letter(lease.message, lease.attempts)
            return
        channel = await self._channel("confirm")
        target = await self._route(channel, delay_s)
        await self._republish(channel, lease.message, target, lease.attempts)
        await lease.message.ack()

    async def _republish(
        self, channel: AbstractChannel, message: AbstractIncomingMessage, queue: str, attempts: int
    ) -> None:
        """A copy of a received message, with its id, timestamp and type, to `queue`."""
        headers = message.headers or {}
        await channel.default_exchange.publish(
            self._message(
                message.body,
                message.message_id or "",
                int(headers.get(H_TIME, 0) or 0),
                str(headers.get(H_TYPE, "bytes")),
                attempts,
            ),
            routing_key=queue,
            timeout=OPERATION_TIMEOUT_S,
        )

    async def _dead_letter(self, message: AbstractIncomingMessage, attempts: int) -> None:
        if self.dead_letter_queue:
            channel = await self._channel("confirm")
            await self._declare(channel, self.dead_letter_queue)
            await self._republish(channel, message, self.dead_letter_queue, 0)
        log_dead_letter(log, self.dead_letter_queue, message.message_id, attempts, queue=self.queue)
        self.dead_lettered += 1
        await message.ack()

    async def _keep_leases(self) -> None:
        """Leases that ran out: republished with attempts + 1, or dead-lettered. A failure is
        only logged: the message stays unacked, and RabbitMQ requeues it when the channel closes."""
        await self._leases.upkeep(self._expire, None, log, queue=self.queue)

    async def _expire(self, lease: _Lease) -> None:
        if _channel_open(lease.message):  # else the connection dropped: RabbitMQ requeued it already
            await self._redeliver(lease, 0)


async def _uncancelled(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end even if the caller is cancelled (a consumer went away, a client
    gave up): aiormq closes a channel whose RPC is cancelled, and the shared channels hold
    every consumer's unacked messages and every sender's pending confirms. What it leased is
    then handed back by the lease keeper when the lease runs out, like any unacked lease."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise


def _channel_open(message: AbstractIncomingMessage) -> bool:
    try:
        return not message.channel.is_closed
    except aio_pika.exceptions.ChannelInvalidStateError:
        return False
