"""Leases the daemon keeps for queue backends that have no visibility timeout of their own (NATS,
RabbitMQ): a delivered message is leased to its consumer until its deadline, and a lease that
runs out is handed back (or dead-lettered) by the provider's upkeep, run here every tick.

A lease is removed by `take` only, whoever settles it first (an ack, a retry, the upkeep): the
others then find it gone, and a settle reports it as expired.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bindingd.errors import describe

# How often leases are checked (expired ones handed back, long ones kept alive).
LEASE_TICK_S = 0.25


@dataclass
class Lease:
    attempts: int
    # time.monotonic() when the lease runs out.
    deadline: float


L = TypeVar("L", bound=Lease)


class Leases(Generic[L]):
    """The live leases of one provider, by lease id."""

    def __init__(self, on_take: Callable[[str, L], None] | None = None) -> None:
        self._by_id: dict[str, L] = {}
        # Told of every lease taken, so a provider can drop what it keeps beside it.
        self._on_take = on_take

    def grant(self, lease: L) -> str:
        lease_id = uuid.uuid4().hex
        self._by_id[lease_id] = lease
        return lease_id

    def get(self, lease_id: str) -> L | None:
        return self._by_id.get(lease_id)

    def take(self, lease_id: str) -> L | None:
        """The lease, removed; None when it ran out or was settled already."""
        lease = self._by_id.pop(lease_id, None)
        if lease is not None and self._on_take is not None:
            self._on_take(lease_id, lease)
        return lease

    def __iter__(self) -> Iterator[L]:
        return iter(list(self._by_id.values()))

    def clear(self) -> None:
        self._by_id.clear()

    async def upkeep(
        self,
        expire: Callable[[L], Awaitable[None]],
        refresh: Callable[[L, float], Awaitable[None]] | None,
        log: Any,
        **where: str,
    ) -> None:
        """Forever, every tick: `expire` each lease that ran out (taken first: a settle that won
        the race leaves nothing to expire), `refresh` each other one. A failure is logged and the
        loop goes on: the backend hands an unsettled message back by itself."""
        while True:
            await asyncio.sleep(LEASE_TICK_S)
            now = time.monotonic()
            for lease_id, lease in list(self._by_id.items()):
                try:
                    if now >= lease.deadline:
                        if self.take(lease_id) is not None:
                            await expire(lease)
                    elif refresh is not None:
                        await refresh(lease, now)
                except Exception as e:
                    log.debug("lease upkeep failed", error=describe(e), **where)


def log_dead_letter(
    log: Any, dead_letter_queue: str | None, message_id: str | None, attempts: int, **where: str
) -> None:
    """What a provider says when a message leaves after its last retry."""
    if dead_letter_queue:
        log.info(
            "message moved to the dead-letter queue",
            **where,
            dead_letter_queue=dead_letter_queue,
            id=message_id,
            attempts=attempts,
        )
    else:
        log.warning("message dropped after its last retry", **where, id=message_id, attempts=attempts)
