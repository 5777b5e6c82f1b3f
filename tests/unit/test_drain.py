"""The lame-duck part of a drain (daemon and gateway alike): serve until calls pause, but never
so long that the calls being answered lose the rest of the grace period."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bindingd.server.app import DRAIN_ANSWER_S, DRAIN_QUIET_S, serve_until_quiet


@dataclass
class Calls:
    calls_in_flight: int = 0
    last_call_at: float = field(default_factory=time.monotonic)


async def test_a_pause_in_the_calls_ends_it() -> None:
    calls = Calls(last_call_at=time.monotonic() - DRAIN_QUIET_S)
    started = time.monotonic()
    await serve_until_quiet(calls, grace_s=10.0)
    assert time.monotonic() - started < 1.0


async def test_a_call_being_answered_holds_it() -> None:
    calls = Calls(calls_in_flight=1, last_call_at=time.monotonic() - 60)
    waiting = asyncio.ensure_future(serve_until_quiet(calls, grace_s=10.0))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    calls.calls_in_flight = 0
    await asyncio.wait_for(waiting, 1.0)


async def test_calls_that_never_pause_leave_the_rest_of_the_grace_period_to_those_answered() -> None:
    """A load balancer that does not check health, or a busy worker, keeps calls coming: the wait
    ends DRAIN_ANSWER_S before the end of the grace period (half of a shorter one), not at its
    end, where grpc's stop() would have no time left and cancel every call in flight."""
    calls = Calls()
    grace_s = 3.0  # longer than 2 * DRAIN_ANSWER_S: the wait ends DRAIN_ANSWER_S before its end

    async def arriving() -> None:
        while True:
            calls.last_call_at = time.monotonic()
            await asyncio.sleep(0.01)

    feeder = asyncio.ensure_future(arriving())
    try:
        started = time.monotonic()
        await asyncio.wait_for(serve_until_quiet(calls, grace_s), grace_s)
        waited = time.monotonic() - started
    finally:
        feeder.cancel()
    assert grace_s - DRAIN_ANSWER_S - 0.1 <= waited < grace_s - DRAIN_ANSWER_S / 2, waited


async def test_a_short_grace_period_is_shared_half_and_half() -> None:
    calls = Calls(calls_in_flight=1)
    started = time.monotonic()
    await serve_until_quiet(calls, grace_s=0.6)
    assert 0.25 <= time.monotonic() - started < 0.5
