"""One Protocol per binding type. A provider implements one of them for one backend.

Providers raise `bindingd.errors.BindingdError` for every failure they can name (the service
adds the binding and env to the message) and never see gRPC types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bindingd.queue import OutgoingMessage, Retry


@runtime_checkable
class Provider(Protocol):
    async def start(self) -> None:
        """Open files or pools. Must not wait on a remote backend: readiness never does."""

    async def close(self) -> None:
        """Release everything; in-flight calls have finished or been cancelled."""

    async def check(self) -> str:
        """Probe the backend once (reachable, authenticated); return a short detail or raise."""


@dataclass(frozen=True)
class KVRecord:
    key: str
    value: bytes
    # JSON text as given at put time, or None.
    metadata_json: str | None
    # Seconds since the epoch, or None for a key that never expires.
    expiration: int | None


@dataclass(frozen=True)
class KVKeyInfo:
    name: str
    expiration: int | None
    metadata_json: str | None


@runtime_checkable
class KVProvider(Provider, Protocol):
    """Workers KV storage. Limits are checked by the service before a provider is called.

    `now` is passed in (seconds since the epoch) so that every provider treats a key whose
    expiration is <= now as absent, whatever its backend's own clock and cleanup do.
    """

    async def get(self, key: str, now: float) -> KVRecord | None: ...

    async def get_many(self, keys: list[str], now: float, max_bytes: int) -> list[KVRecord | None]:
        """The records of `keys`, in the same order; None where absent or expired. When the
        values add up to more than `max_bytes`, raise `bindingd.kv.bulk_too_large()` without
        holding them all."""

    async def put(
        self, key: str, value: bytes, expiration: int | None, metadata_json: str | None
    ) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def list(
        self, prefix: str, after: str | None, limit: int, now: float
    ) -> tuple[list[KVKeyInfo], bool]:
        """Up to `limit` live keys starting with `prefix` and sorting after `after` (by UTF-8
        bytes), in order; the bool says whether more keys follow."""


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


@runtime_checkable
class QueueProvider(Provider, Protocol):
    """A Cloudflare Queue. Limits are checked by the service before a provider is called.

    Delivery is at-least-once: a message is stored durably before `send` returns, is removed
    only by an ack, and a delivery neither acked nor retried within its visibility timeout is
    delivered again with attempts + 1. A message whose delivery failed with
    `bindingd.queue.exhausted(attempts, max_retries)` true goes to the binding's dead-letter
    queue if it has one, else it is dropped and logged.
    """

    async def send(self, messages: list[OutgoingMessage]) -> None:
        """Store every message (each after its own delay); all of them or, on failure, raise."""

    async def receive(self, max_messages: int, visibility_s: float, wait_s: float) -> list[QueueDelivery]:
        """Up to `max_messages` deliverable messages, leased for `visibility_s` seconds, waiting
        up to `wait_s` for the first one; [] when none came."""

    async def settle(self, acks: list[str], retries: list[Retry]) -> QueueSettled:
        """Ack (remove) and retry (deliver again after the delay) leased messages."""
