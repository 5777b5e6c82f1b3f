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
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from bindingd_client import connect

from bench import gateway as gateway_bench
from bench import http as http_bench
from bench import metrics as metrics_bench
from bench import objects
from bench import queue as queue_bench
from bench import sql as sql_bench
from bench.echo import METHOD
from bench.measure import Result, interleaved
from bench.processes import start, start_daemon, stop

REDIS_URL = "redis://127.0.0.1:6379/0"
PROJECT = f"""version: 1
connections:
  bench-redis: {{ kind: redis, url: "{REDIS_URL}" }}
bindings:
  CACHE: {{ type: kv }}
  CACHE_REDIS: {{ type: kv, connection: bench-redis, prefix: "bindingd-bench:" }}
  DB: {{ type: sql }}
"""
VALUE = "v" * 100


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


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        return True
    except OSError:
        return False


async def _kv_redis(bindingd_socket: Path, n: int) -> list[tuple[Result, Result]]:
    """KV on Redis through bindingd beside the same calls through redis-py in this process.

    The peer does only what the provider does per call (one HMGET per get; HSET, index ZADD in
    one MULTI per put), so the ratio is what going through bindingd adds.
    """
    rows: list[tuple[Result, Result]] = []
    direct = aioredis.Redis.from_url(REDIS_URL)
    env = await connect(endpoint=f"unix://{bindingd_socket}")
    try:
        await env.CACHE_REDIS.put("bench", VALUE)
        await direct.hset(b"bindingd-bench-direct:k:bench", mapping={b"v": VALUE.encode()})
        kv = env.CACHE_REDIS
        counter = iter(range(10**9))

        async def direct_put() -> None:
            key = f"p{next(counter) % 1000}"
            pipe = direct.pipeline(transaction=True)
            pipe.delete(f"bindingd-bench-direct:k:{key}")
            pipe.hset(f"bindingd-bench-direct:k:{key}", mapping={b"v": VALUE.encode()})
            pipe.zadd("bindingd-bench-direct:index", {key: 0})
            await pipe.execute()

        for label, in_flight, calls in (("sequential", 1, n), ("64 in flight", 64, 2 * n)):
            results = await interleaved(
                {
                    f"redis-py get, {label}": lambda: direct.hmget(
                        b"bindingd-bench-direct:k:bench", [b"v", b"m", b"e"]
                    ),
                    f"kv get (redis), {label}": lambda: kv.get("bench"),
                    f"redis-py put, {label}": direct_put,
                    f"kv put (redis), {label}": lambda: kv.put(f"p{next(counter) % 1000}", VALUE),
                },
                calls,
                in_flight=in_flight,
            )
            for op in ("get", "put"):
                peer = results[f"redis-py {op}, {label}"]
                rows += [(peer, peer), (results[f"kv {op} (redis), {label}"], peer)]
    finally:
        await env.aclose()
        for pattern in ("bindingd-bench:*", "bindingd-bench-direct:*"):
            async for name in direct.scan_iter(match=pattern, count=1000):
                await direct.unlink(name)
        await direct.aclose()
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
        echo = start([sys.executable, "-m", "bench.echo", str(echo_socket)], Path.cwd(), echo_socket)
        daemon = start_daemon(root)
        try:
            rows = asyncio.run(_kv(echo_socket, bindingd_socket, n))
            redis_rows = asyncio.run(_kv_redis(bindingd_socket, n)) if _redis_up() else []
            http_results = asyncio.run(http_bench.measure(bindingd_socket, n))
            php_result = http_bench.php_kv_get(bindingd_socket, n)
            sql_results = sql_bench.run(echo_socket, n)
            gateway_lines = gateway_bench.run(echo_socket, n, quick=args.quick)
        finally:
            for proc in (echo, daemon):
                stop(proc)
    print(
        f"bindingd bench — {os.cpu_count()} cores, {n} calls per sequential row, {2 * n} per concurrent row"
    )
    print(
        "each figure with its ratio to the echo floor of this run (lower latency, higher calls/s is better)"
    )
    for result, floor in rows:
        print(_row(result, floor))
    if redis_rows:
        print("kv on redis: each figure with its ratio to redis-py called directly in this process")
        for result, peer in redis_rows:
            print(_row(result, peer))
        floor = next(f for r, f in rows if r.name == "echo floor, sequential")
        for result, peer in redis_rows:
            if result is not peer and result.name.endswith("sequential"):
                added = result.p50_ms - peer.p50_ms
                print(
                    f"{result.name}: bindingd adds {added:.3f} ms per call at p50, "
                    f"{added / floor.p50_ms:.2f}x the echo floor's whole round trip"
                )
    else:
        print("kv on redis: skipped, no redis on 127.0.0.1:6379 (python tests/services.py redis starts it)")
    by_name = {result.name: (result, floor) for result, floor in rows}
    get_seq, floor_seq = by_name["kv get (local), sequential"]
    get_par, floor_par = by_name["kv get (local), 64 in flight"]
    _goal(
        "kv get p50 within 1.5x the echo floor", get_seq.p50_ms / floor_seq.p50_ms, 1.5, lower_is_better=True
    )
    _goal("kv get throughput at least 0.7x the floor's", get_par.calls_per_s / floor_par.calls_per_s, 0.7)
    print()
    print("\n".join(http_bench.report(http_results, php_result)))
    print()
    print("\n".join(gateway_lines))
    print()
    print("\n".join(objects.report(objects.measure(quick=args.quick))))
    print("sql: SELECT 1 through bindingd beside the driver in this process and the echo floor")
    for line in sql_bench.report(sql_results):
        print(line)
    print()
    for line in queue_bench.run(200 if args.quick else 1000):
        print(line)
    print()
    for line in metrics_bench.run(1000 if args.quick else 8000):
        print(line)
    print()
    return _node(quick=args.quick)


def _node(*, quick: bool) -> int:
    """The Node client beside Miniflare (bench/node/bindings.mjs), when node and the build are here."""
    node = shutil.which("node")
    script = Path(__file__).parent / "node" / "bindings.mjs"
    built = Path(__file__).parent.parent / "clients" / "node" / "dist" / "index.js"
    if node is None:
        print("node client vs miniflare: skipped, no `node` on PATH (install Node >= 20, then make bench)")
        return 0
    if not built.exists():
        print("node client vs miniflare: skipped, the Node client is not built (make node)")
        return 0
    sys.stdout.flush()
    command = [node, str(script), *(["--quick"] if quick else [])]
    finished = subprocess.run(command, check=False)
    if finished.returncode != 0:
        print(f"node client vs miniflare: {' '.join(command)} failed with exit status {finished.returncode}")
    return finished.returncode


def _goal(what: str, ratio: float, bound: float, *, lower_is_better: bool = False) -> None:
    met = ratio <= bound if lower_is_better else ratio >= bound
    print(f"goal: {what}: {ratio:.2f}x, {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    raise SystemExit(main())
