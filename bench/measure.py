"""Latency and throughput of async calls, sequential and with N in flight.

Targets are measured in interleaved rounds (floor, then each bindingd call, then the floor
again, ...) so that the load of a shared machine drifting during the run hits them all alike.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Call = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Result:
    name: str
    p50_ms: float
    p99_ms: float
    calls_per_s: float


@dataclass
class _Samples:
    latencies: list[float] = field(default_factory=list)
    calls: int = 0
    elapsed: float = 0.0

    def result(self, name: str) -> Result:
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return Result(name, statistics.median(ordered) * 1000, p99 * 1000, self.calls / self.elapsed)


async def _sequential(call: Call, n: int, into: _Samples) -> None:
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        into.latencies.append(time.perf_counter() - t0)
    into.elapsed += time.perf_counter() - started
    into.calls += n


async def _concurrent(call: Call, n: int, into: _Samples, in_flight: int) -> None:
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await call()
            into.latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    into.elapsed += time.perf_counter() - started
    into.calls += n


async def interleaved(
    targets: dict[str, Call], n: int, *, in_flight: int = 1, rounds: int = 10
) -> dict[str, Result]:
    """Each target called `n` times in all, `in_flight` at a time, over interleaved rounds."""
    samples = {name: _Samples() for name in targets}
    for call in targets.values():  # warm up channels, caches and every stream
        await asyncio.gather(*(call() for _ in range(max(in_flight, 50))))
    for _ in range(rounds):
        for name, call in targets.items():
            if in_flight == 1:
                await _sequential(call, n // rounds, samples[name])
            else:
                await _concurrent(call, n // rounds, samples[name], in_flight)
    return {name: s.result(name) for name, s in samples.items()}
