"""Remote bindings: KV get and an object's body through daemon -> gateway (TLS on loopback) ->
local provider, beside the echo floor and the same calls on a local binding of the same daemon.

    worker (this process) -> bindingd serve --env staging -> bindingd gateway serve -> local kv

Everything is set up as a team would: `gateway init`, a gateway.yaml with a policy, `gateway
grant`, `bindingd login` with its own XDG_CONFIG_HOME.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from bindingd_client import connect

from bench.echo import METHOD
from bench.measure import Result, interleaved
from bench.objects import PeakRss
from bench.processes import start, stop

GATEWAY_YAML = """\
version: 1
gateway:
  id: bench-gw
  listen: "127.0.0.1:{port}"
  tls: {{ cert: gw/server.pem, key: gw/server.key }}
  signing_key: gw/signing.key
  state: {{ kind: sqlite, path: gw/state.sqlite3 }}
  audit: {{ path: gw/audit.jsonl }}
bindings:
  CACHE: {{ type: kv }}
  ASSETS: {{ type: objects }}
envs:
  staging: {{ token_ttl: 3600 }}
policy:
  grants:
    - {{ who: "user:bench", env: staging, bindings: "*", actions: [read, write] }}
"""
VALUE = "v" * 100
OBJECT_MIB = 1024


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bindingd", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise SystemExit(f"bench: bindingd {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def run(echo_socket: Path, n: int, *, quick: bool) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="bindingd-bench-gw-") as tmp:
        root = Path(tmp)
        admin, laptop = root / "admin", root / "laptop"
        admin.mkdir()
        laptop.mkdir()
        _cli("gateway", "init", "gw", cwd=admin)
        port = _port()
        (admin / "gateway.yaml").write_text(GATEWAY_YAML.format(port=port))
        (laptop / "team-ca.pem").write_bytes((admin / "gw" / "ca.pem").read_bytes())
        (laptop / "bindingd.yaml").write_text(
            "version: 1\nbindings:\n  LOCAL_CACHE: { type: kv }\n"
            f'envs:\n  staging:\n    gateway: {{ url: "localhost:{port}", ca: team-ca.pem }}\n'
            "    bindings:\n      LOCAL_CACHE: { local: true }\n"
        )
        gateway = subprocess.Popen(
            [sys.executable, "-m", "bindingd", "gateway", "serve", "--config", "gateway.yaml"],
            cwd=admin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        daemon = relay = echo_tls = None
        try:
            # The two-hop floor: a bare relay on a unix socket to a bare echo over TLS.
            gw = admin / "gw"
            tls_port, relay_socket = _port(), root / "relay.sock"
            echo_tls = start(
                [
                    sys.executable,
                    "-m",
                    "bench.echo",
                    "--tls",
                    str(gw / "server.pem"),
                    str(gw / "server.key"),
                    str(tls_port),
                    str(root / "echo-tls.ready"),
                ],
                Path.cwd(),
                root / "echo-tls.ready",
            )
            relay = start(
                [
                    sys.executable,
                    "-m",
                    "bench.echo",
                    "--relay",
                    str(relay_socket),
                    f"localhost:{tls_port}",
                    str(gw / "ca.pem"),
                ],
                Path.cwd(),
                relay_socket,
            )
            environ = {"XDG_CONFIG_HOME": str(root / "xdg")}
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or gateway.poll() is not None:
                        raise SystemExit("bench: the gateway did not start") from None
                    time.sleep(0.1)
            code = _cli("gateway", "grant", "--config", "gateway.yaml", "--user", "bench", cwd=admin)
            _cli("login", "--env", "staging", "--code", code.splitlines()[-1], cwd=laptop, env=environ)
            command = [
                sys.executable,
                "-m",
                "bindingd",
                "serve",
                "--env",
                "staging",
                "--log-level",
                "warning",
            ]
            proc = subprocess.Popen(
                command,
                cwd=laptop,
                env={**os.environ, **environ},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            daemon = proc
            start_wait = laptop / ".bindingd" / "endpoint"
            deadline = time.monotonic() + 30
            while not start_wait.exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("bench: the daemon did not start")
                time.sleep(0.05)
            lines = asyncio.run(
                _measure(
                    echo_socket,
                    relay_socket,
                    laptop / ".bindingd" / "bindingd.sock",
                    n,
                    quick,
                    (proc.pid, gateway.pid),
                )
            )
            return lines + _check_costs(admin / "gateway.yaml", lines)
        finally:
            for p in (daemon, gateway, relay, echo_tls):
                if p is not None:
                    stop(p)


def _check_costs(gateway_yaml: Path, lines: list[str]) -> list[str]:
    """What the gateway's per-call checks cost, each measured alone in this process: the token
    check (first sight of a token, with its Ed25519 verification, and a token seen before), the
    policy decision and the audit line (built and written to a file)."""
    from bindingd.gateway import tokens
    from bindingd.gateway.audit import AuditLog
    from bindingd.gateway.config import load_gateway_config

    config = load_gateway_config(gateway_yaml)
    key = tokens.load_signing_key(config.signing_key)
    ring = tokens.keyring([key])
    now = time.time()
    minted = [
        tokens.mint(
            key,
            sub="bench",
            audience=config.id,
            env="staging",
            bindings={"CACHE": ["read"]},
            jkt="bench-device",
            now=now,
            ttl_s=3600,
        )[0]
        for _ in range(200)
    ]
    cache = tokens.VerifiedTokens()

    def verify(token: str, verified: tokens.VerifiedTokens | None) -> None:
        tokens.verify(
            token,
            audience=config.id,
            env="staging",
            now=now + 1,
            public_keys=ring,
            is_revoked=lambda c: False,
            verified=verified,
        )

    def per_call_us(fn: Callable[[], object], n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - started) / n * 1e6

    fresh = iter(minted)
    first = per_call_us(lambda: verify(next(fresh), None), len(minted))
    verify(minted[0], cache)
    seen = per_call_us(lambda: verify(minted[0], cache), 5000)
    question = ("bench", (), "staging", "CACHE", "kv", "read")
    decide_first = per_call_us(lambda: config.policy.evaluate(*question), 5000)
    decide = per_call_us(lambda: config.policy.decide(*question), 5000)
    event = {
        "event": "call",
        "decision": "allow",
        "user": "bench",
        "jti": "j" * 22,
        "env": "staging",
        "binding": "CACHE",
        "binding_type": "kv",
        "method": "/bindingd.v1.KV/Get",
        "action": "read",
        "subject": "bench",
        "status": "OK",
        "request_id": "r" * 16,
        "latency_ms": 1.234,
        "bytes_in": 20,
        "bytes_out": 120,
        "peer": "ipv4:127.0.0.1:50000",
    }
    with tempfile.TemporaryDirectory() as tmp, AuditLog(path=Path(tmp) / "audit.jsonl") as audit:
        line = per_call_us(lambda: audit.write(event), 5000)
    whole = next((x for x in lines if x.startswith("kv get (via gateway), sequential")), "")
    p50 = float(whole.split("p50")[1].split("ms")[0]) * 1000 if whole else float("nan")
    return [
        f"gateway checks per call (each alone, this process): token first seen {first:.0f} us, "
        f"token seen before {seen:.1f} us, policy {decide_first:.1f} us to decide "
        f"({decide:.1f} us decided before), audit line {line:.1f} us (written after the answer); "
        f"the whole call via gateway p50 {p50:.0f} us"
    ]


async def _measure(
    echo_socket: Path,
    relay_socket: Path,
    bindingd_socket: Path,
    n: int,
    quick: bool,
    pids: tuple[int, int],
) -> list[str]:
    verdicts: list[str] = []
    lines = [
        "remote bindings: daemon -> gateway (TLS, loopback) -> local kv; ratios to the echo floor. "
        "The relay floor is two bare grpc.aio hops (a relay on a unix socket, an echo over TLS): "
        "what any two-hop design in grpc.aio costs before it checks, looks up or logs anything"
    ]
    async with (
        grpc.aio.insecure_channel(f"unix://{echo_socket}") as channel,
        grpc.aio.insecure_channel(f"unix://{relay_socket}") as relay_channel,
    ):
        echo = channel.unary_unary(METHOD)
        relay = relay_channel.unary_unary(METHOD)
        payload = b"k" * 120
        env = await connect(endpoint=f"unix://{bindingd_socket}")
        try:
            await env.CACHE.put("bench", VALUE)
            await env.LOCAL_CACHE.put("bench", VALUE)
            for label, in_flight, calls in (("sequential", 1, n), ("64 in flight", 64, 2 * n)):
                results: dict[str, Result] = await interleaved(
                    {
                        f"echo floor, {label}": lambda: echo(payload),
                        f"relay floor, {label}": lambda: relay(payload),
                        f"kv get (local), {label}": lambda: env.LOCAL_CACHE.get("bench"),
                        f"kv get (via gateway), {label}": lambda: env.CACHE.get("bench"),
                    },
                    calls,
                    in_flight=in_flight,
                )
                floor = results[f"echo floor, {label}"]
                for r in results.values():
                    lines.append(
                        f"{r.name:<34} p50 {r.p50_ms:6.3f} ms ({r.p50_ms / floor.p50_ms:4.2f}x)  "
                        f"{r.calls_per_s:8.0f} calls/s ({r.calls_per_s / floor.calls_per_s:4.2f}x)"
                    )
                two_hops, via = results[f"relay floor, {label}"], results[f"kv get (via gateway), {label}"]
                lines.append(
                    f"  via gateway beside the relay floor, {label}: "
                    f"p50 {via.p50_ms / two_hops.p50_ms:.2f}x, "
                    f"calls/s {via.calls_per_s / two_hops.calls_per_s:.2f}x"
                )
                p50_goal = "kv get via gateway p50 at most 2.5x the echo floor"
                verdicts.append(
                    _goal(p50_goal, via.p50_ms / floor.p50_ms, 2.5)
                    if in_flight == 1
                    else _goal(
                        "kv get via gateway, 64 in flight, at least 0.4x the echo floor's calls/s",
                        via.calls_per_s / floor.calls_per_s,
                        0.4,
                        at_least=True,
                    )
                )
            # The body is made and read a chunk at a time on this side too, so that only the
            # daemon's and the gateway's memory is measured.
            mib = 32 if quick else OBJECT_MIB
            chunk = os.urandom(1 << 20)

            async def body() -> AsyncIterator[bytes]:
                for _ in range(mib):
                    yield chunk

            daemon_pid, gateway_pid = pids
            with PeakRss(daemon_pid) as put_daemon, PeakRss(gateway_pid) as put_gateway:
                started = time.perf_counter()
                await env.ASSETS.put("big.bin", body())
                put_s = time.perf_counter() - started
            with PeakRss(daemon_pid) as get_daemon, PeakRss(gateway_pid) as get_gateway:
                started = time.perf_counter()
                got = await env.ASSETS.get("big.bin")
                assert got is not None
                size = 0
                async for part in got.body:
                    size += len(part)
                get_s = time.perf_counter() - started
            assert size == mib << 20
            lines.append(
                f"object of {mib} MiB via gateway (both hops, TLS on the second): "
                f"put {mib * 1.048576 / put_s:.0f} MB/s, get {mib * 1.048576 / get_s:.0f} MB/s; "
                "RSS over idle: "
                f"daemon +{put_daemon.growth_mib:.0f}/+{get_daemon.growth_mib:.0f} MiB, "
                f"gateway +{put_gateway.growth_mib:.0f}/+{get_gateway.growth_mib:.0f} MiB (put/get)"
            )
            slowest = min(mib * 1.048576 / put_s, mib * 1.048576 / get_s)
            growth = max(m.growth_mib for m in (put_daemon, put_gateway, get_daemon, get_gateway))
            met = slowest >= 200 and growth <= 64
            verdicts.append(
                f"goal: {mib} MiB via gateway at least 200 MB/s each way, each process within +64 MiB: "
                f"{slowest:.0f} MB/s, +{growth:.0f} MiB, {'met' if met else 'NOT met'}"
                + ("" if mib == OBJECT_MIB else f" (the goal is for {OBJECT_MIB} MiB: run without --quick)")
            )
        finally:
            await env.aclose()
    return lines + verdicts


def _goal(what: str, ratio: float, bound: float, *, at_least: bool = False) -> str:
    met = ratio >= bound if at_least else ratio <= bound
    return f"goal: {what}: {ratio:.2f}x, {'met' if met else 'NOT met'}"
