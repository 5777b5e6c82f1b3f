"""The rabbitmq connection entry's client against the real server: a connect cut short, by a
daemon stopping while a health check connects, leaves nothing running (aio-pika's reconnect
task of a connection nobody holds shrugs off a cancel, and the event loop then never finishes
closing: a CI run hung 300 s in a test's teardown)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from services import ensure

from bindingd.errors import BindingdError
from bindingd.providers.rabbitmq.client import RabbitClient

URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture(autouse=True)
def rabbitmq() -> None:
    ensure("rabbitmq")


async def assert_nothing_holds_the_loop(before: set[asyncio.Task[object]]) -> None:
    """No reconnect loop is left, and whatever else is left ends when cancelled, as it is when
    the event loop closes (aiormq may leave the tasks of a handshake cut short for that)."""
    await asyncio.sleep(0.5)  # what ends by itself has had time to
    left = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    assert not [t for t in left if "connection_factory" in repr(t)], left
    for task in left:
        task.cancel()
    if left:
        _, pending = await asyncio.wait(left, timeout=2.0)
        assert not pending, pending


# The connect takes a few ms on loopback: cancelled before, during and after its handshake.
@pytest.mark.parametrize("after_s", [0, 0.001, 0.002, 0.004, 0.008, 0.02])
async def test_a_cancelled_connect_leaves_nothing_holding_the_loop(after_s: float) -> None:
    client = RabbitClient(URL)
    before = asyncio.all_tasks()
    connecting = asyncio.ensure_future(client.connection())
    await asyncio.sleep(after_s)
    connecting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await connecting
    await client.close()
    await assert_nothing_holds_the_loop(before)


async def test_close_during_a_connect_closes_what_it_made_and_refuses_more() -> None:
    client = RabbitClient(URL)
    before = asyncio.all_tasks()
    connecting = asyncio.ensure_future(client.connection())
    await asyncio.sleep(0)
    await client.close()  # waits for the connect under way, then closes its connection
    connection = await connecting
    assert connection.is_closed
    with pytest.raises(BindingdError) as closed:
        await client.connection()
    assert "closed" in str(closed.value)
    await assert_nothing_holds_the_loop(before)
