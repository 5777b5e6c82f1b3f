"""Resiliency policies of a connection: timeouts, retries and a circuit breaker (no I/O here).

Dapr's resiliency spec is the anchor (timeouts, retries with exponential backoff, circuit
breakers tripped by consecutive failures), written per connection in bindingd.yaml:

    connections:
      cache:
        kind: redis
        url: redis://127.0.0.1:6379/0
        resiliency:
          timeout: { read: 30s, write: 30s, consume: 30s }   # or one duration for all, or off
          retry: { max_retries: 2, initial_interval: 50ms, max_interval: 1s }   # or off
          circuit_breaker: { consecutive_failures: 5, open: 10s }   # or off

Every key is optional; what is not written takes the default below. Only idempotent operations
are retried (KV get/list, object head/get/list, SQL in a read-only transaction, queue receive),
and only after BackendUnavailable (a refused or reset connection): a write whose outcome is
unknown is never sent twice, and a call that timed out is not made to wait that long again.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, replace
from typing import Any

# Operation classes: what a timeout is chosen by.
READ = "read"
WRITE = "write"
CONSUME = "consume"
OP_CLASSES = (READ, WRITE, CONSUME)

# An outer bound on each call, over the provider's own timeouts and connection retries (the
# s3 and redis `timeout`, the sql statement `timeout`), which normally answer first.
DEFAULT_TIMEOUTS = {READ: 30.0, WRITE: 30.0, CONSUME: 30.0}
# Exponential backoff: initial_interval, doubled at each retry up to max_interval, each wait
# drawn uniformly from its upper half (jitter, so that callers that failed together do not
# retry together).
DEFAULT_MAX_RETRIES = 2
DEFAULT_INITIAL_INTERVAL = 0.05
DEFAULT_MAX_INTERVAL = 1.0
MULTIPLIER = 2.0
DEFAULT_CONSECUTIVE_FAILURES = 5
DEFAULT_OPEN = 10.0

KEYS = ("timeout", "retry", "circuit_breaker")
RETRY_KEYS = ("max_retries", "initial_interval", "max_interval")
BREAKER_KEYS = ("consecutive_failures", "open")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


class PolicyError(ValueError):
    """A resiliency value that is not valid; the loader adds the file and line."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = DEFAULT_MAX_RETRIES
    initial_interval: float = DEFAULT_INITIAL_INTERVAL
    max_interval: float = DEFAULT_MAX_INTERVAL

    def backoff(self, retry: int, rand: Any = random.random) -> float:
        """Seconds to wait before retry number `retry` (0 for the first)."""
        interval = min(self.max_interval, self.initial_interval * MULTIPLIER**retry)
        return interval / 2 + interval / 2 * rand()


@dataclass(frozen=True)
class BreakerPolicy:
    consecutive_failures: int = DEFAULT_CONSECUTIVE_FAILURES
    open_s: float = DEFAULT_OPEN


@dataclass(frozen=True)
class Resiliency:
    """A connection's policy. A timeout of None, `retry` or `breaker` None: turned off."""

    timeouts: tuple[tuple[str, float | None], ...] = tuple(DEFAULT_TIMEOUTS.items())
    retry: RetryPolicy | None = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy | None = field(default_factory=BreakerPolicy)

    def timeout(self, op_class: str) -> float | None:
        return dict(self.timeouts).get(op_class)

    def describe(self) -> str:
        """One line for `bindingd check`."""
        timeouts = ", ".join(f"{c} {_seconds(t)}" for c, t in self.timeouts)
        retry = (
            "off"
            if self.retry is None
            else f"{self.retry.max_retries} for idempotent ops, backoff "
            f"{_seconds(self.retry.initial_interval)}..{_seconds(self.retry.max_interval)} with jitter"
        )
        b = self.breaker
        breaker = (
            "off"
            if b is None
            else f"open {_seconds(b.open_s)} after {b.consecutive_failures} failures in a row"
        )
        return f"timeout {timeouts}; retry {retry}; circuit breaker {breaker}"

    def as_json(self) -> dict[str, Any]:
        return {
            "timeout": dict(self.timeouts),
            "retry": None if self.retry is None else vars(self.retry),
            "circuit_breaker": None if self.breaker is None else vars(self.breaker),
        }


DEFAULT = Resiliency()


def _seconds(value: float | None) -> str:
    if value is None:
        return "off"
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def _off(value: Any) -> bool:
    # YAML 1.1 reads a bare `off` as false.
    return value is False or value == "off"


def duration(value: Any, what: str, *, allow_zero: bool = False) -> float:
    """Seconds from a number or a string like "500ms", "5s", "1m"."""
    if isinstance(value, bool):
        raise PolicyError(f"{what}: expected a duration like 500ms, 5s or 1m, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise PolicyError(f"{what}: expected a duration like 500ms, 5s or 1m, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero) or seconds > 86_400:
        raise PolicyError(f"{what}: {value!r} is out of range (more than 0, at most a day)")
    return seconds


def count(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PolicyError(f"{what}: expected a whole number from {low} to {high}, got {value!r}")
    return value


def timeouts(value: Any) -> tuple[tuple[str, float | None], ...]:
    """`timeout:` one duration for every class, `off`, or a mapping by class (the others keep
    their default)."""
    if _off(value):
        return tuple((c, None) for c in OP_CLASSES)
    if not isinstance(value, dict):
        single = duration(value, "timeout")
        return tuple((c, single) for c in OP_CLASSES)
    chosen: dict[str, float | None] = dict(DEFAULT_TIMEOUTS)
    for key, item in value.items():
        if key not in OP_CLASSES:
            raise PolicyError(f'timeout: unknown operation class "{key}" (allowed: {", ".join(OP_CLASSES)})')
        chosen[key] = None if _off(item) else duration(item, f"timeout.{key}")
    return tuple(chosen.items())


def retry(value: Any) -> RetryPolicy | None:
    if _off(value):
        return None
    if not isinstance(value, dict):
        raise PolicyError("retry: expected a mapping (max_retries, initial_interval, max_interval) or off")
    _known(value, RETRY_KEYS, "retry")
    policy = RetryPolicy()
    if "max_retries" in value:
        policy = replace(policy, max_retries=count(value["max_retries"], "retry.max_retries", 0, 10))
    if "initial_interval" in value:
        initial = duration(value["initial_interval"], "retry.initial_interval")
        policy = replace(policy, initial_interval=initial)
    if "max_interval" in value:
        policy = replace(policy, max_interval=duration(value["max_interval"], "retry.max_interval"))
    if (
        "max_interval" in value
        and "initial_interval" in value
        and policy.max_interval < policy.initial_interval
    ):
        raise PolicyError("retry: max_interval is shorter than initial_interval")
    return policy


def breaker(value: Any) -> BreakerPolicy | None:
    if _off(value):
        return None
    if not isinstance(value, dict):
        raise PolicyError("circuit_breaker: expected a mapping (consecutive_failures, open) or off")
    _known(value, BREAKER_KEYS, "circuit_breaker")
    policy = BreakerPolicy()
    if "consecutive_failures" in value:
        n = count(value["consecutive_failures"], "circuit_breaker.consecutive_failures", 1, 1000)
        policy = replace(policy, consecutive_failures=n)
    if "open" in value:
        policy = replace(policy, open_s=duration(value["open"], "circuit_breaker.open"))
    return policy


def _known(value: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    for key in value:
        if key not in allowed:
            raise PolicyError(f'{what}: unknown key "{key}" (allowed: {", ".join(allowed)})')
