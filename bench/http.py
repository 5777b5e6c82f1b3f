"""KV get over HTTP/JSON (the Connect endpoint on .bindingd/http.sock) beside the same get over
gRPC from the Python client, both on the same `bindingd serve`, sequential, keep-alive.

The HTTP caller is aiohttp on the unix socket posting the JSON a curl or PHP caller would send;
the goal of issue 16 is a p50 at most 1.5x the gRPC one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import aiohttp
from bindingd_client import connect

from bench.measure import Result, interleaved


async def measure(bindingd_socket: Path, n: int) -> tuple[Result, Result, Result]:
    """(gRPC get, HTTP/JSON get, HTTP/JSON SQL SELECT 1) results; then the PHP client's get."""
    http_socket = bindingd_socket.with_name("http.sock")
    env = await connect(endpoint=f"unix://{bindingd_socket}")
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(http_socket), limit=1))
    headers = {"content-type": "application/json"}
    get_body = json.dumps({"binding": "CACHE", "key": "bench"})
    sql_body = json.dumps({"binding": "DB", "statement": {"sql": "SELECT 1"}})
    try:
        await env.CACHE.put("bench", "v" * 100)
        kv = env.CACHE

        async def http_get() -> object:
            async with session.post(
                "http://bindingd/bindingd.v1.KV/Get", data=get_body, headers=headers
            ) as r:
                assert r.status == 200
                return await r.read()

        async def http_sql() -> object:
            async with session.post(
                "http://bindingd/bindingd.v1.Database/Query", data=sql_body, headers=headers
            ) as r:
                assert r.status == 200
                return await r.read()

        results = await interleaved(
            {
                "kv get over gRPC (python client)": lambda: kv.get("bench"),
                "kv get over HTTP/JSON (aiohttp)": http_get,
                "sql SELECT 1 over HTTP/JSON": http_sql,
            },
            n,
        )
    finally:
        await session.close()
        await env.aclose()
    grpc_get, http_get_r, sql = results.values()
    return grpc_get, http_get_r, sql


def php_kv_get(bindingd_socket: Path, n: int) -> Result | str:
    """The PHP client's KV get (bench/kv_get.php, curl over the unix socket), or why not."""
    if shutil.which("php") is None:
        return "php client kv get: skipped, no `php` on PATH (.ci/run installs php-cli php-curl)"
    script = Path(__file__).with_name("kv_get.php")
    env = {**os.environ, "BINDINGD_ENDPOINT": f"unix://{bindingd_socket}"}
    done = subprocess.run(["php", str(script), str(n)], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return f"php client kv get: failed: {done.stderr.strip()[-300:]}"
    p50, p99, rate = (float(x) for x in done.stdout.split())
    return Result("kv get from PHP (bindingd/client)", p50, p99, rate)


def report(results: tuple[Result, Result, Result], php: Result | str) -> list[str]:
    grpc_get, http_get, _sql = results
    lines = ["http/json: the Connect endpoint on http.sock beside gRPC, sequential, keep-alive"]
    for r in (*results, *([php] if isinstance(php, Result) else [])):
        lines.append(
            f"{r.name:<34} p50 {r.p50_ms:6.3f} ms  p99 {r.p99_ms:6.3f} ms  {r.calls_per_s:8.0f} calls/s"
        )
    ratio = http_get.p50_ms / grpc_get.p50_ms
    met = "met" if ratio <= 1.5 else "NOT met"
    lines.append(f"goal: HTTP/JSON kv get p50 at most 1.5x the gRPC one: {ratio:.2f}x, {met}")
    if isinstance(php, str):
        lines.append(php)
    else:
        lines.append(f"PHP client kv get p50: {php.p50_ms / grpc_get.p50_ms:.2f}x the Python gRPC one")
    return lines
