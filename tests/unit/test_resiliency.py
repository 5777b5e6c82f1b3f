"""Resiliency policies: parsing, backoff, and the circuit breaker's states (no backend)."""

from __future__ import annotations

import pytest

from bindingd.config.model import Connection
from bindingd.domain import resiliency
from bindingd.errors import BindingdError, Reason, backend_unavailable
from bindingd.resiliency import CircuitBreaker


def test_durations() -> None:
    assert resiliency.duration("500ms", "t") == 0.5
    assert resiliency.duration("5s", "t") == 5.0
    assert resiliency.duration("1m", "t") == 60.0
    assert resiliency.duration(2, "t") == 2.0
    for bad in ("soon", "-1s", 0, True, "1h"):
        with pytest.raises(resiliency.PolicyError):
            resiliency.duration(bad, "t")


def test_timeouts_one_for_all_by_class_or_off() -> None:
    assert dict(resiliency.timeouts("2s")) == {"read": 2.0, "write": 2.0, "consume": 2.0}
    assert dict(resiliency.timeouts({"write": "1m"})) == {"read": 30.0, "write": 60.0, "consume": 30.0}
    assert dict(resiliency.timeouts(False)) == {"read": None, "write": None, "consume": None}
    with pytest.raises(resiliency.PolicyError, match='unknown operation class "delete"'):
        resiliency.timeouts({"delete": "1s"})


def test_retry_and_breaker_values() -> None:
    assert resiliency.retry(False) is None
    assert resiliency.retry({"max_retries": 0}) == resiliency.RetryPolicy(max_retries=0)
    with pytest.raises(resiliency.PolicyError, match="max_interval is shorter"):
        resiliency.retry({"initial_interval": "1s", "max_interval": "10ms"})
    with pytest.raises(resiliency.PolicyError, match='unknown key "attempts"'):
        resiliency.retry({"attempts": 3})
    assert resiliency.breaker("off") is None
    with pytest.raises(resiliency.PolicyError, match="from 1 to 1000"):
        resiliency.breaker({"consecutive_failures": 0})


def test_backoff_grows_to_its_maximum_with_jitter_in_its_upper_half() -> None:
    policy = resiliency.RetryPolicy(initial_interval=0.1, max_interval=0.3)
    assert [policy.backoff(n, rand=lambda: 1.0) for n in range(4)] == [0.1, 0.2, 0.3, 0.3]
    assert [policy.backoff(n, rand=lambda: 0.0) for n in range(3)] == [0.05, 0.1, 0.15]


def test_breaker_opens_fails_fast_probes_once_and_closes() -> None:
    now = [100.0]
    policy = resiliency.Resiliency(breaker=resiliency.BreakerPolicy(consecutive_failures=2, open_s=5.0))
    breaker = CircuitBreaker(Connection("db", "postgres", {}, resiliency=policy), clock=lambda: now[0])
    failure = backend_unavailable("cannot reach PostgreSQL")
    for _ in range(2):
        assert breaker.admit() is False
        breaker.failed(False, failure)
    assert breaker.state == "open"
    now[0] += 2.0
    with pytest.raises(BindingdError) as refused:
        breaker.admit()
    assert refused.value.reason == Reason.BACKEND_UNAVAILABLE
    assert 'connection "db" (postgres)' in refused.value.message
    assert "tries it again in 3.0s" in refused.value.message
    now[0] += 3.0
    assert breaker.admit() is True  # the half-open probe
    with pytest.raises(BindingdError):
        breaker.admit()  # one probe at a time
    breaker.failed(True, failure)  # the probe failed: open again for the whole time
    assert breaker.state == "open"
    now[0] += 5.0
    assert breaker.admit() is True
    breaker.succeeded(True)
    assert breaker.state == "closed" and breaker.failures == 0
    assert breaker.admit() is False
