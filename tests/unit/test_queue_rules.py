"""The Cloudflare Queues rules every provider shares: limits at their exact boundaries, retries."""

from __future__ import annotations

import math

import pytest

from bindingd.domain import queue
from bindingd.errors import BindingdError, Reason


def refused(fn, *args: object) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(BindingdError) as caught:
        fn(*args)
    assert caught.value.reason is Reason.INVALID_ARGUMENT
    return caught.value.message


def test_message_size_limit_is_exact() -> None:
    assert queue.check_message(b"x" * queue.MAX_MESSAGE_BYTES, "bytes", None) == 0
    assert "128 KB" in refused(queue.check_message, b"x" * (queue.MAX_MESSAGE_BYTES + 1), "bytes", None)


def test_content_types() -> None:
    assert queue.check_message(b'{"a": [1]}', "json", 5) == 5
    assert queue.check_message("é".encode(), "text", None) == 0
    assert "V8" in refused(queue.check_message, b"{}", "v8", None)
    assert "not one of" in refused(queue.check_message, b"{}", "xml", None)
    assert "not valid JSON" in refused(queue.check_message, b"{nope", "json", None)
    assert "not valid JSON" in refused(queue.check_message, b"[" * 100_000, "json", None)
    assert "UTF-8" in refused(queue.check_message, b"\xff", "text", None)


def test_delay_bounds() -> None:
    assert queue.check_delay(43200) == 43200
    assert "43200" in refused(queue.check_delay, 43201)
    assert "43200" in refused(queue.check_delay, -1)


def test_batch_limits_are_checked_before_anything() -> None:
    assert queue.check_batch([(b"1", "json", None)] * 100, 7) == [7] * 100
    assert "100 messages" in refused(queue.check_batch, [(b"1", "json", None)] * 101, None)
    assert "at least one" in refused(queue.check_batch, [], None)
    full = [(b"x" * (queue.MAX_BATCH_BYTES // 4), "bytes", None)] * 4
    assert queue.check_batch(full, None) == [None] * 4
    assert "256 KB" in refused(queue.check_batch, [*full, (b"x", "bytes", None)], None)
    # A message's own delay wins over the batch's; a bad one anywhere refuses the whole batch.
    assert queue.check_batch([(b"1", "json", 3), (b"2", "json", None)], 9) == [3, 9]
    assert queue.check_batch([(b"1", "json", None)], None) == [None]  # the binding's delivery_delay
    assert "message 1" in refused(queue.check_batch, [(b"1", "json", None), (b"{", "json", None)], None)


def test_consume_settings() -> None:
    assert queue.check_consume(None, None, None) == (10, 1.0, 30.0)
    assert queue.check_consume(100, 0, 43200) == (100, 0, 43200)
    for bad in (
        (0, None, None),
        (101, None, None),
        (None, -1, None),
        (None, math.nan, None),
        (None, None, 0.5),
    ):
        refused(queue.check_consume, *bad)
    refused(queue.check_consume, None, None, math.inf)


def test_retries_count_after_the_first_delivery() -> None:
    # max_retries 3: deliveries 1..4 may fail and be retried up to the 4th, which is the last.
    assert [queue.exhausted(a, 3) for a in (1, 2, 3, 4)] == [False, False, False, True]
    assert queue.exhausted(1, 0)
    assert queue.max_retries_of({}) == 3
    assert "0 or more" in refused(queue.max_retries_of, {"max_retries": -1})
    assert queue.binding_delay({"retry_delay": 30}, "retry_delay") == 30
    assert queue.binding_delay({}, "delivery_delay") == 0
    assert "delivery_delay" in refused(queue.binding_delay, {"delivery_delay": 50000}, "delivery_delay")


def test_nats_attempts_count_on_from_the_daemons_own_figure() -> None:
    from bindingd.providers.nats.queue import attempts_of

    assert attempts_of(1, None) == 1  # a first delivery: JetStream's count
    assert attempts_of(2, 1) == 2  # naked after attempt 1, delivered again
    # A duplicate delivery while leased raised JetStream's count to 3 during attempt 2: the next
    # delivery is attempt 3, not 4 (which would dead-letter it unseen with max_retries 2).
    assert attempts_of(4, 2) == 3
    # A lost redelivery (nats-server #5305) came back as JetStream's first delivery.
    assert attempts_of(1, 2) == 3
    # JetStream counted more deliveries since the nak than reached this daemon: lost ones (a CI
    # run saw that dead-letter a message on its second delivery), or another daemon's, which
    # cannot be told apart. The next attempt is still 3.
    assert attempts_of(9, 2) == 3
