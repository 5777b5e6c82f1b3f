"""Run every benchmark in one process tree and print each figure beside its floor.

    python -m bench [--quick]

The floor is a bare grpc.aio echo server in a child process on a unix socket; bindingd runs as
`bindingd serve` in another child process on a project in a temporary folder. Both are driven
from this process with the same client loop, so the ratio is bindingd's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from bindingd_client import connect

from bench import queue as queue_bench
from bench.echo import METHOD
from bench.measure import Result, interleaved

PROJECT = """version: 1
bindings:
  CACHE: { type: kv }
"""
VALUE = "v" * 100


def _start(command: list[str], cwd: Path, ready: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bench: {' '.join(command)} did not start")
        time.sleep(0.05)
    time.sleep(0.3)
    return proc


def _row(result: Result, floor: Result) -> str:
    return (
        f"{result.name:<34} p50 {result.p50_ms:6.3f} ms ({result.p50_ms / floor.p50_ms:4.2f}x)  "
        f"p99 {result.p99_ms:6.3f} ms ({result.p99_ms / floor.p99_ms:4.2f}x)  "
        f"{result.calls_per_s:8.0f} calls/s ({result.calls_per_s / floor.calls_per_s:4.2f}x)"
    )


async def _kv(echo_socket: Path, bindingd_socket: Path, n: int) -> list[tuple[Result, Result]]:
    rows: list[tuple[Result, Result]] = []
    async with grpc.aio.insecure_channel(f"unix://{echo_socket}") as channel:
        echo = channel.unary_unary(METHOD)
        payload = b"k" * 120
        env = await connect(endpoint=f"unix://{bindingd_socket}")
        try:
            await env.CACHE.put("bench", VALUE)
            kv = env.CACHE
            counter = iter(range(10**9))
            for label, in_flight, calls in (("sequential", 1, n), ("64 in flight", 64, 2 * n)):
                floor_name = f"echo floor, {label}"
                results = await interleaved(
                    {
                        floor_name: lambda: echo(payload),
                        f"kv get (local), {label}": lambda: kv.get("bench"),
                        f"kv put (local), {label}": lambda: kv.put(f"p{next(counter) % 1000}", VALUE),
                    },
                    calls,
                    in_flight=in_flight,
                )
                floor = results[floor_name]
                rows += [(result, floor) for result in results.values()]
        finally:
            await env.aclose()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    args = parser.parse_args()
    n = 500 if args.quick else 3000
    with tempfile.TemporaryDirectory(prefix="bindingd-bench-") as tmp:
        root = Path(tmp)
        (root / "bindingd.yaml").write_text(PROJECT)
        echo_socket = root / "echo.sock"
        bindingd_socket = root / ".bindingd" / "bindingd.sock"
        echo = _start([sys.executable, "-m", "bench.echo", str(echo_socket)], Path.cwd(), echo_socket)
        daemon = _start(
            [sys.executable, "-m", "bindingd", "serve", "--log-level", "warning"],
            root,
            root / ".bindingd" / "endpoint",
        )
        try:
            rows = asyncio.run(_kv(echo_socket, bindingd_socket, n))
        finally:
            for proc in (echo, daemon):
                proc.terminate()
                proc.wait(30)
    print(
        f"bindingd bench — {os.cpu_count()} cores, {n} calls per sequential row, {2 * n} per concurrent row"
    )
    print(
        "each figure with its ratio to the echo floor of this run (lower latency, higher calls/s is better)"
    )
    for result, floor in rows:
        print(_row(result, floor))
    by_name = {result.name: (result, floor) for result, floor in rows}
    get_seq, floor_seq = by_name["kv get (local), sequential"]
    get_par, floor_par = by_name["kv get (local), 64 in flight"]
    _goal(
        "kv get p50 within 1.5x the echo floor", get_seq.p50_ms / floor_seq.p50_ms, 1.5, lower_is_better=True
    )
    _goal("kv get throughput at least 0.7x the floor's", get_par.calls_per_s / floor_par.calls_per_s, 0.7)
    print()
    for line in queue_bench.run(200 if args.quick else 1000):
        print(line)
    return 0


def _goal(what: str, ratio: float, bound: float, *, lower_is_better: bool = False) -> None:
    met = ratio <= bound if lower_is_better else ratio >= bound
    print(f"goal: {what}: {ratio:.2f}x, {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    raise SystemExit(main())
