"""Queue bindings, mirroring the Workers ``Queue`` producer in snake_case, plus a pull consumer.

Producer: ``send(body, content_type="json", delay_seconds=)`` and ``send_batch([...])`` with
items shaped like Workers' ``MessageSendRequest`` (``{"body", "content_type", "delay_seconds"}``).
Consumer: ``async for batch in env.JOBS.consume(batch_size=10): ...``; each message has ``id``,
``timestamp``, ``body``, ``attempts`` and ``ack()`` / ``retry(delay_seconds=)``; a batch has
``ack_all()`` / ``retry_all()``. A message neither acked nor retried within the visibility
timeout is delivered again.

Bodies are encoded here as the Workers runtime does: ``json`` (the default) with
``json.dumps``, ``text`` as UTF-8, ``bytes`` as given; the daemon stores them as bytes with
their content type and hands them back for decoding.
"""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ._transport import Call
from .proto import queue_pb2

if TYPE_CHECKING:
    from ._transport import AsyncTransport, SyncTransport

__all__ = ["Message", "MessageBatch", "MessageBatchSync", "MessageSync", "Queue", "QueueMetrics", "QueueSync"]

ContentType = Literal["json", "text", "bytes"]
_CONTENT_TYPES = ("json", "text", "bytes", "v8")


def encode_body(body: Any, content_type: str) -> bytes:
    if content_type not in _CONTENT_TYPES:
        raise ValueError(f'content_type must be "json", "text" or "bytes", not {content_type!r}')
    if content_type == "json" or content_type == "v8":
        try:
            return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"a json queue message must be JSON-serializable: {exc}") from None
    if content_type == "text":
        if not isinstance(body, str):
            raise TypeError(f"a text queue message must be str, not {type(body).__name__}")
        return body.encode("utf-8")
    if isinstance(body, str):
        raise TypeError("a bytes queue message must be bytes-like, not str")
    try:
        with memoryview(body) as view:
            return view.tobytes()
    except TypeError:
        raise TypeError(f"a bytes queue message must be bytes-like, not {type(body).__name__}") from None


def decode_body(data: bytes, content_type: str) -> Any:
    if content_type == "json":
        return json.loads(data.decode("utf-8"))
    if content_type == "text":
        return data.decode("utf-8")
    return bytes(data)


def _delay(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"delay_seconds must be a number of seconds, not {type(value).__name__}")
    return int(value)


def _send_item(body: Any, content_type: str, delay_seconds: Any) -> queue_pb2.QueueMessageSend:
    return queue_pb2.QueueMessageSend(
        body=encode_body(body, content_type),
        # "v8" reaches the daemon, which explains why it refuses it.
        content_type=content_type,
        delay_seconds=_delay(delay_seconds),
    )


def _none(_response: Any) -> None:
    return None


def build_send(binding: str, body: Any, content_type: str, delay_seconds: Any) -> Call[None]:
    request = queue_pb2.QueueSendRequest(
        binding=binding, message=_send_item(body, content_type, delay_seconds)
    )
    return Call("Queue.Send", request, _none)


@dataclass(frozen=True)
class QueueMetrics:
    """Workers' ``Queue.metrics()``: messages stored and not acked, their bytes, and when the
    oldest was sent (``None`` when there is none, or the backend cannot tell: RabbitMQ counts
    only messages ready for delivery and knows neither bytes nor age)."""

    backlog_count: int
    backlog_bytes: int
    oldest_message_timestamp: datetime | None


def _metrics(response: queue_pb2.QueueMetricsResponse) -> QueueMetrics:
    oldest = (
        datetime.fromtimestamp(response.oldest_message_timestamp_ms / 1000, UTC)
        if response.HasField("oldest_message_timestamp_ms")
        else None
    )
    return QueueMetrics(response.backlog_count, response.backlog_bytes, oldest)


def build_metrics(binding: str) -> Call[QueueMetrics]:
    return Call("Queue.Metrics", queue_pb2.QueueMetricsRequest(binding=binding), _metrics)


def build_send_batch(binding: str, messages: Iterable[Any], delay_seconds: Any) -> Call[None]:
    items = []
    for item in messages:
        if not isinstance(item, Mapping) or "body" not in item:
            raise TypeError(
                'each send_batch item must be a dict with a "body" (and optional '
                '"content_type", "delay_seconds")'
            )
        items.append(_send_item(item["body"], item.get("content_type", "json"), item.get("delay_seconds")))
    request = queue_pb2.QueueSendBatchRequest(
        binding=binding, messages=items, delay_seconds=_delay(delay_seconds)
    )
    return Call("Queue.SendBatch", request, _none)


def build_consume(
    binding: str, batch_size: int | None, max_wait: float | None, visibility_timeout: float | None
) -> queue_pb2.QueueConsumeRequest:
    return queue_pb2.QueueConsumeRequest(
        binding=binding,
        batch_size=batch_size,
        max_wait_seconds=max_wait,
        visibility_timeout_seconds=visibility_timeout,
    )


def build_settle(binding: str, acks: list[str], retries: list[tuple[str, Any]]) -> Call[None]:
    request = queue_pb2.QueueAckRequest(
        binding=binding,
        acks=acks,
        retries=[queue_pb2.QueueRetry(lease_id=lease, delay_seconds=_delay(d)) for lease, d in retries],
    )
    return Call("Queue.Ack", request, _none)


class _MessageBase:
    """One delivered message: ``id``, ``timestamp`` (UTC datetime), ``body``, ``attempts``."""

    __slots__ = ("_binding", "_lease_id", "_transport", "attempts", "body", "content_type", "id", "timestamp")

    def __init__(self, transport: Any, binding: str, message: queue_pb2.QueueMessage) -> None:
        self._transport = transport
        self._binding = binding
        self._lease_id = message.lease_id
        self.id = message.id
        self.timestamp = datetime.fromtimestamp(message.timestamp_ms / 1000, tz=UTC)
        self.content_type = message.content_type
        self.body = decode_body(message.body, message.content_type)
        self.attempts = message.attempts

    def __repr__(self) -> str:
        return f"<Message {self.id} attempts={self.attempts}>"


class Message(_MessageBase):
    async def ack(self) -> None:
        """Done with it: the message is removed and never delivered again."""
        await self._transport.call(build_settle(self._binding, [self._lease_id], []))

    async def retry(self, delay_seconds: int | None = None) -> None:
        """Deliver it again (after ``delay_seconds``), or dead-letter it after its last retry."""
        await self._transport.call(build_settle(self._binding, [], [(self._lease_id, delay_seconds)]))


class MessageSync(_MessageBase):
    def ack(self) -> None:
        """Done with it: the message is removed and never delivered again."""
        self._transport.call(build_settle(self._binding, [self._lease_id], []))

    def retry(self, delay_seconds: int | None = None) -> None:
        """Deliver it again (after ``delay_seconds``), or dead-letter it after its last retry."""
        self._transport.call(build_settle(self._binding, [], [(self._lease_id, delay_seconds)]))


class MessageBatch:
    """A batch from ``consume``: ``queue``, ``messages``, ``ack_all()``, ``retry_all()``."""

    def __init__(self, transport: AsyncTransport, binding: str, batch: queue_pb2.QueueBatch) -> None:
        self._transport = transport
        self.queue = binding
        self.messages = [Message(transport, binding, m) for m in batch.messages]

    async def ack_all(self) -> None:
        await self._transport.call(build_settle(self.queue, [m._lease_id for m in self.messages], []))

    async def retry_all(self, delay_seconds: int | None = None) -> None:
        retries = [(m._lease_id, delay_seconds) for m in self.messages]
        await self._transport.call(build_settle(self.queue, [], retries))

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.messages)


class MessageBatchSync:
    def __init__(self, transport: SyncTransport, binding: str, batch: queue_pb2.QueueBatch) -> None:
        self._transport = transport
        self.queue = binding
        self.messages = [MessageSync(transport, binding, m) for m in batch.messages]

    def ack_all(self) -> None:
        self._transport.call(build_settle(self.queue, [m._lease_id for m in self.messages], []))

    def retry_all(self, delay_seconds: int | None = None) -> None:
        self._transport.call(
            build_settle(self.queue, [], [(m._lease_id, delay_seconds) for m in self.messages])
        )

    def __iter__(self) -> Iterator[MessageSync]:
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.messages)


class _QueueBase:
    __slots__ = ("_binding", "_transport")

    def __init__(self, transport: Any, binding: str) -> None:
        self._transport = transport
        self._binding = binding

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._binding}>"


class Queue(_QueueBase):
    """A queue binding for asyncio code: ``await env.JOBS.send({"id": 7})``."""

    _transport: AsyncTransport

    async def send(
        self, body: Any, *, content_type: ContentType = "json", delay_seconds: int | None = None
    ) -> None:
        """Send one message; returns once the backend stored it."""
        await self._transport.call(build_send(self._binding, body, content_type, delay_seconds))

    async def send_batch(
        self, messages: Iterable[Mapping[str, Any]], *, delay_seconds: int | None = None
    ) -> None:
        """Send up to 100 messages (256 KB) at once: all of them, or none if one breaks a limit."""
        await self._transport.call(build_send_batch(self._binding, messages, delay_seconds))

    async def metrics(self) -> QueueMetrics:
        """The backlog: ``backlog_count``, ``backlog_bytes``, ``oldest_message_timestamp``."""
        return await self._transport.call(build_metrics(self._binding))

    async def consume(
        self,
        *,
        batch_size: int | None = None,
        max_wait: float | None = None,
        visibility_timeout: float | None = None,
    ) -> AsyncIterator[MessageBatch]:
        """Batches as messages arrive, until you stop iterating or the daemon stops.

        ``batch_size`` (1-100, default 10) messages or whatever came within ``max_wait`` seconds
        (default 1) of the first; each message is leased for ``visibility_timeout`` seconds
        (default 30).
        """
        asks: asyncio.Queue[queue_pb2.QueueConsumeRequest | None] = asyncio.Queue()
        asks.put_nowait(build_consume(self._binding, batch_size, max_wait, visibility_timeout))

        async def requests() -> AsyncIterator[queue_pb2.QueueConsumeRequest]:
            while (ask := await asks.get()) is not None:
                yield ask

        # The daemon sends a batch only when asked, so nothing is leased to a consumer that
        # stopped iterating: the next batch is asked for when the caller wants it.
        stream = self._transport.duplex("Queue.Consume", requests())
        try:
            async for batch in stream:
                yield MessageBatch(self._transport, self._binding, batch)
                asks.put_nowait(queue_pb2.QueueConsumeRequest())
        finally:
            asks.put_nowait(None)
            await stream.aclose()


class QueueSync(_QueueBase):
    """A queue binding for blocking code (``connect_sync()``); same methods, no ``await``."""

    _transport: SyncTransport

    def send(
        self, body: Any, *, content_type: ContentType = "json", delay_seconds: int | None = None
    ) -> None:
        self._transport.call(build_send(self._binding, body, content_type, delay_seconds))

    def send_batch(self, messages: Iterable[Mapping[str, Any]], *, delay_seconds: int | None = None) -> None:
        self._transport.call(build_send_batch(self._binding, messages, delay_seconds))

    def metrics(self) -> QueueMetrics:
        return self._transport.call(build_metrics(self._binding))

    def consume(
        self,
        *,
        batch_size: int | None = None,
        max_wait: float | None = None,
        visibility_timeout: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[MessageBatchSync]:
        """Like ``Queue.consume``; ``timeout`` ends the stream (BackendTimeout) after that many seconds."""
        asks: queue.SimpleQueue[queue_pb2.QueueConsumeRequest | None] = queue.SimpleQueue()
        asks.put(build_consume(self._binding, batch_size, max_wait, visibility_timeout))
        stream = self._transport.duplex("Queue.Consume", iter(asks.get, None), timeout=timeout)
        try:
            for batch in stream:
                yield MessageBatchSync(self._transport, self._binding, batch)
                asks.put(queue_pb2.QueueConsumeRequest())
        finally:
            asks.put(None)
            stream.close()
