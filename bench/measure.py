"""Latency and throughput of an async call, sequential and with N in flight."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    name: str
    p50_ms: float
    p99_ms: float
    calls_per_s: float


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


async def sequential(name: str, call: Callable[[], Awaitable[object]], n: int, warmup: int = 200) -> Result:
    for _ in range(warmup):
        await call()
    samples = []
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    samples.sort()
    return Result(name, statistics.median(samples) * 1000, _percentile(samples, 0.99) * 1000, n / elapsed)


async def concurrent(name: str, call: Callable[[], Awaitable[object]], n: int, in_flight: int = 64) -> Result:
    samples: list[float] = []
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - t0)

    await asyncio.gather(*(call() for _ in range(in_flight)))  # warm up every stream
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    samples.sort()
    return Result(name, statistics.median(samples) * 1000, _percentile(samples, 0.99) * 1000, n / elapsed)
