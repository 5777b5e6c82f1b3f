"""SQL: `SELECT 1` through bindingd beside the same query through the driver in this process.

Local SQLite (the `sqlite3` module) and PostgreSQL (an asyncpg pool) are each measured three
ways in interleaved rounds: the driver directly, bindingd (`env.DB.prepare("SELECT 1").all()`,
a streamed Query: header, one page, meta), and the bare gRPC echo floor. bindingd's added
latency per query is its p50 minus the driver's, reported as a ratio to the echo's p50.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import tempfile
from pathlib import Path

import asyncpg
import grpc
from bindingd_client import connect

from bench.echo import METHOD
from bench.measure import Result, interleaved
from bench.processes import start_daemon, stop

PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PROJECT = f"""version: 1
connections:
  pg: {{ kind: postgres, dsn: "{PG_DSN}", max_size: 16 }}
bindings:
  APP_DB: {{ type: sql }}
  PG_DB: {{ type: sql, connection: pg }}
"""


def _postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1.0):
            return True
    except OSError:
        return False


async def _measure(echo_socket: Path, bindingd_socket: Path, state: Path, n: int) -> list[Result]:
    results: list[Result] = []
    async with grpc.aio.insecure_channel(f"unix://{echo_socket}") as channel:
        echo = channel.unary_unary(METHOD)
        payload = b"q" * 40
        env = await connect(endpoint=f"unix://{bindingd_socket}")
        local = sqlite3.connect(state / "sql" / "APP_DB.sqlite3", check_same_thread=False)
        pool = await asyncpg.create_pool(PG_DSN, min_size=16, max_size=16) if _postgres_up() else None
        try:
            app_db, pg_db = env.APP_DB, env.PG_DB
            await app_db.prepare("SELECT 1").all()

            async def sqlite_direct() -> object:
                return local.execute("SELECT 1").fetchall()

            targets = {
                "sql SELECT 1 (local) sqlite3 direct": sqlite_direct,
                "sql SELECT 1 (local) bindingd": lambda: app_db.prepare("SELECT 1").all(),
            }
            if pool is not None:
                targets["sql SELECT 1 (postgres) asyncpg direct"] = lambda: pool.fetch("SELECT 1")
                targets["sql SELECT 1 (postgres) bindingd"] = lambda: pg_db.prepare("SELECT 1").all()
            for label, in_flight, calls in (("sequential", 1, n), ("64 in flight", 64, 2 * n)):
                floor = f"echo floor, {label}"
                measured = await interleaved(
                    {floor: lambda: echo(payload), **{f"{k}, {label}": v for k, v in targets.items()}},
                    calls,
                    in_flight=in_flight,
                )
                results += measured.values()
        finally:
            local.close()
            if pool is not None:
                await pool.close()
            await env.aclose()
    return results


def run(echo_socket: Path, n: int) -> list[Result]:
    """Every figure of the SQL bench; the echo server at `echo_socket` is already serving."""
    with tempfile.TemporaryDirectory(prefix="bindingd-bench-sql-") as tmp:
        root = Path(tmp)
        (root / "bindingd.yaml").write_text(PROJECT)
        daemon = start_daemon(root)
        try:
            return asyncio.run(
                _measure(echo_socket, root / ".bindingd" / "bindingd.sock", root / ".bindingd" / "state", n)
            )
        finally:
            stop(daemon)


def report(results: list[Result]) -> list[str]:
    """One line per figure (ratio to the driver direct) and the added-latency goal per row."""
    by_name = {r.name: r for r in results}
    lines = []
    for label in ("sequential", "64 in flight"):
        floor = by_name[f"echo floor, {label}"]
        lines.append(f"{floor.name:<46} p50 {floor.p50_ms:6.3f} ms  p99 {floor.p99_ms:6.3f} ms")
        for backend, driver in (("local", "sqlite3"), ("postgres", "asyncpg")):
            direct = by_name.get(f"sql SELECT 1 ({backend}) {driver} direct, {label}")
            ours = by_name.get(f"sql SELECT 1 ({backend}) bindingd, {label}")
            if direct is None or ours is None:
                lines.append(f"sql SELECT 1 ({backend}), {label}: not measured (is the server up?)")
                continue
            for result in (direct, ours):
                lines.append(
                    f"{result.name:<46} p50 {result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms  "
                    f"{result.calls_per_s:8.0f} calls/s"
                )
            added = ours.p50_ms - direct.p50_ms
            ratio = added / floor.p50_ms
            lines.append(
                f"  overhead ({backend}, {label}): p50 {ours.p50_ms / direct.p50_ms:5.2f}x the driver, "
                f"p99 {ours.p99_ms / direct.p99_ms:5.2f}x; added {added:.3f} ms = {ratio:.2f}x the echo floor"
            )
            if label == "sequential":
                lines.append(
                    f"goal: sql ({backend}) added latency within 1.5x the echo floor: {ratio:.2f}x, "
                    f"{'met' if ratio <= 1.5 else 'NOT met'}"
                )
    return lines
