"""Cloudflare Queues rules that hold whatever the backend: limits, content types, ids, retries.

Services call these before a provider sees a request, so every provider behaves the same and
a broken limit gives INVALID_ARGUMENT with the limit in the message. Providers use the retry
rule (`exhausted`) and `new_id` so that ids and attempts mean the same on every backend.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bindingd.errors import invalid_argument
from bindingd.providers.base import Provider

# Cloudflare's KB is 1000 bytes: workerd (Miniflare) refuses a body of 128,001 bytes.
MAX_MESSAGE_BYTES = 128_000
MAX_BATCH_MESSAGES = 100
MAX_BATCH_BYTES = 256_000
MAX_DELAY_S = 12 * 60 * 60
CONTENT_TYPES = ("text", "json", "bytes")
DEFAULT_BATCH_SIZE = 10
MAX_BATCH_SIZE = 100
DEFAULT_MAX_WAIT_S = 1.0
MAX_MAX_WAIT_S = 60.0
DEFAULT_VISIBILITY_S = 30.0
MAX_VISIBILITY_S = float(MAX_DELAY_S)
DEFAULT_MAX_RETRIES = 3


@dataclass(frozen=True)
class OutgoingMessage:
    """A checked message on its way to a backend."""

    id: str
    timestamp_ms: int
    body: bytes
    content_type: str
    delay_s: int


@dataclass(frozen=True)
class Retry:
    lease_id: str
    delay_s: int


def new_id() -> str:
    """A Cloudflare-style message id: 32 hex digits."""
    return uuid.uuid4().hex


def check_delay(delay: int | None, what: str = "delay_seconds") -> int:
    if delay is None:
        return 0
    if not 0 <= delay <= MAX_DELAY_S:
        raise invalid_argument(f"{what} is {delay}; it must be between 0 and {MAX_DELAY_S} (12 hours)")
    return delay


def check_message(body: bytes, content_type: str, delay: int | None, index: int | None = None) -> int:
    """Validate one message; return its delay in seconds."""
    where = "" if index is None else f" (message {index} of the batch)"
    if content_type == "v8":
        raise invalid_argument(
            f'content_type "v8" needs a V8 isolate to decode{where}; send "json", "text" or "bytes"'
        )
    if content_type not in CONTENT_TYPES:
        raise invalid_argument(f'content_type {content_type!r} is not one of "text", "json", "bytes"{where}')
    if len(body) > MAX_MESSAGE_BYTES:
        raise invalid_argument(
            f"queue message is {len(body)} bytes{where}; the limit is 128 KB ({MAX_MESSAGE_BYTES} bytes)"
        )
    if content_type in ("text", "json"):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_argument(f'a "{content_type}" message body is not valid UTF-8{where}') from None
        if content_type == "json":
            try:
                json.loads(text)
            except (ValueError, RecursionError):
                raise invalid_argument(f'a "json" message body is not valid JSON{where}') from None
    return check_delay(delay)


def check_batch(messages: list[tuple[bytes, str, int | None]], default_delay: int | None) -> list[int | None]:
    """Validate a whole batch before anything is sent; return each message's delay (None: the
    message and the batch set none, so the binding's delivery_delay applies)."""
    if not messages:
        raise invalid_argument("send_batch needs at least one message")
    if len(messages) > MAX_BATCH_MESSAGES:
        raise invalid_argument(
            f"batch of {len(messages)} messages; the limit is {MAX_BATCH_MESSAGES} messages per batch"
        )
    total = sum(len(body) for body, _, _ in messages)
    if total > MAX_BATCH_BYTES:
        raise invalid_argument(
            f"batch bodies add up to {total} bytes; the limit is 256 KB ({MAX_BATCH_BYTES} bytes) per batch"
        )
    check_delay(default_delay)
    delays: list[int | None] = []
    for index, (body, content_type, delay) in enumerate(messages):
        chosen = default_delay if delay is None else delay
        check_message(body, content_type, chosen, index)
        delays.append(chosen)
    return delays


def check_consume(
    batch_size: int | None, max_wait: float | None, visibility: float | None
) -> tuple[int, float, float]:
    size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if not 1 <= size <= MAX_BATCH_SIZE:
        raise invalid_argument(f"batch_size is {size}; it must be between 1 and {MAX_BATCH_SIZE}")
    wait = DEFAULT_MAX_WAIT_S if max_wait is None else max_wait
    if not 0 <= wait <= MAX_MAX_WAIT_S:
        raise invalid_argument(f"max_wait is {wait} s; it must be between 0 and {MAX_MAX_WAIT_S:.0f} s")
    lease = DEFAULT_VISIBILITY_S if visibility is None else visibility
    if not 1 <= lease <= MAX_VISIBILITY_S:
        raise invalid_argument(
            f"visibility_timeout is {lease} s; it must be between 1 and {MAX_VISIBILITY_S:.0f} s (12 hours)"
        )
    return size, wait, lease


def max_retries_of(options: Mapping[str, Any]) -> int:
    """The binding's `max_retries` option (default 3); a negative one is refused at start."""
    value = int(options.get("max_retries", DEFAULT_MAX_RETRIES))
    if value < 0:
        raise invalid_argument(f"max_retries is {value}; it must be 0 or more (the default is 3)")
    return value


def dead_letter_queue_of(options: Mapping[str, Any], queue: str) -> str | None:
    """The binding's `dead_letter_queue` option; its own queue is refused at start, since a
    message dead-lettered into the queue it failed in would loop there forever."""
    name: str | None = options.get("dead_letter_queue")
    if name is not None and name == queue:
        raise invalid_argument(
            f"dead_letter_queue is {name!r}, the binding's own queue; name another queue (or none)"
        )
    return name


def binding_delay(options: Mapping[str, Any], name: str) -> int:
    """The binding's `delivery_delay` or `retry_delay` option (default 0), checked like a delay."""
    return check_delay(options.get(name), f"the binding's {name} option")


def exhausted(attempts: int, max_retries: int) -> bool:
    """Whether a message that failed its `attempts`-th delivery has used up its retries.

    As in Cloudflare Queues, `max_retries` counts retries after the first delivery: a message
    is delivered at most max_retries + 1 times, then dead-lettered (or dropped).
    """
    return attempts > max_retries


# The contract of a queue provider: what it returns, and the Protocol it implements.


@dataclass(frozen=True)
class QueueDelivery:
    """One delivery of a queue message, leased to the consumer that received it."""

    id: str
    timestamp_ms: int
    body: bytes
    content_type: str
    # 1 on the first delivery; one more for every retry or expired lease before this one.
    attempts: int
    lease_id: str


@dataclass(frozen=True)
class QueueSettled:
    acked: int
    retried: int
    # Lease ids no longer held (expired or unknown): nothing was done for them.
    expired: list[str]


@dataclass(frozen=True)
class QueueBacklog:
    """Workers' Queue.metrics(): messages stored and not acked, their bytes (0 when the backend
    cannot tell), and when the oldest was sent (None when none, or the backend cannot tell)."""

    count: int
    bytes: int
    oldest_ms: int | None


@runtime_checkable
class QueueProvider(Provider, Protocol):
    """A Cloudflare Queue. Limits are checked by the service before a provider is called.

    Delivery is at-least-once: a message is stored durably before `send` returns, is removed
    only by an ack, and a delivery neither acked nor retried within its visibility timeout is
    delivered again with attempts + 1. A message whose delivery failed with
    `exhausted(attempts, max_retries)` true goes to the binding's dead-letter
    queue if it has one, else it is dropped and logged.
    """

    async def send(self, messages: list[OutgoingMessage]) -> None:
        """Store every message (each after its own delay); all of them or, on failure, raise."""

    async def receive(self, max_messages: int, visibility_s: float, wait_s: float) -> list[QueueDelivery]:
        """Up to `max_messages` deliverable messages, leased for `visibility_s` seconds, waiting
        up to `wait_s` for the first one; [] when none came."""

    async def settle(self, acks: list[str], retries: list[Retry]) -> QueueSettled:
        """Ack (remove) and retry (deliver again after the delay) leased messages."""

    async def backlog(self) -> QueueBacklog:
        """The queue's backlog (see QueueBacklog)."""
