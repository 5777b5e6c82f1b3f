"""Object throughput: a 1 GiB put and get through bindingd (local provider) beside a plain copy.

    python -m bench.objects [--quick]

The floor is a plain file copy of the same file, in 1 MiB reads and writes with an fsync at
the end, which is what a put costs the disk too. Put reads the source file through the client;
get receives the whole body in the client and counts it. (Writing it to a file there would
time this VM's page cache instead: fresh pages cost the client 2-5 CPU s per GiB, more than
the daemon's whole share, and vary with how recently the host took memory back.) Rounds
interleave (copy, put, get) so machine drift hits all three alike; each figure is the median.
The daemon's RSS is sampled from /proc throughout.

Beside MiB/s, the CPU seconds per GiB that the client (this process) and the daemon spent on a
put and a get: on a shared 2-core machine they move far less with the load than MiB/s does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
from bindingd_client import R2ObjectBody, connect

from bench.processes import start_daemon, stop

MIB = 1024 * 1024
PROJECT = "version: 1\nbindings:\n  ASSETS: { type: objects }\n"


@dataclass(frozen=True)
class ObjectFigures:
    size: int
    copy_mb_s: float
    put_mb_s: float
    get_mb_s: float
    idle_rss: int
    peak_rss: int
    load: tuple[float, float, float]  # os.getloadavg() at the end
    # CPU seconds per GiB (user + system, all threads), medians: client and daemon.
    put_cpu: tuple[float, float]
    get_cpu: tuple[float, float]
    http_put_mb_s: float = 0.0
    http_get_mb_s: float = 0.0


class PeakRss:
    """The highest RSS (bytes) of process `pid` while the block runs, sampled by a thread;
    `idle` is its RSS when this was made."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.idle = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.idle) / (1 << 20)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


@dataclass
class _Rounds:
    copies: list[float]
    puts: list[float]
    gets: list[float]
    # (client, daemon) CPU seconds per GiB of each put and get.
    put_cpu: list[tuple[float, float]]
    get_cpu: list[tuple[float, float]]
    # The same through the HTTP endpoint (/objects on http.sock, aiohttp as the client).
    http_puts: list[float] = field(default_factory=list)
    http_gets: list[float] = field(default_factory=list)


class _Phase:
    """Wall time and the client's and daemon's CPU time of one put or get."""

    def __init__(self, client: psutil.Process, daemon: psutil.Process) -> None:
        self.processes = (client, daemon)

    def __enter__(self) -> _Phase:
        self.cpu = [_cpu_seconds(p) for p in self.processes]
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        client, daemon = (
            _cpu_seconds(p) - before for p, before in zip(self.processes, self.cpu, strict=True)
        )
        self.cpu_per_gib = (client, daemon)

    def figures(self, size: int) -> tuple[float, tuple[float, float]]:
        """MiB/s and (client, daemon) CPU seconds per GiB."""
        gib = size / (1024 * MIB)
        client, daemon = self.cpu_per_gib
        return size / MIB / self.seconds, (client / gib, daemon / gib)


def _copy(src: Path, dst: Path) -> None:
    with src.open("rb") as f, dst.open("wb") as out:
        while chunk := f.read(MIB):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def _write_source(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(block)


async def _rounds(endpoint: str, root: Path, size: int, rounds: int, daemon: psutil.Process) -> _Rounds:
    src, copied = root / "src.bin", root / "copy.bin"
    done = _Rounds([], [], [], [], [])
    client = psutil.Process()
    env = await connect(endpoint=endpoint)
    try:
        bucket = env.ASSETS
        for _ in range(rounds):
            started = time.perf_counter()
            await asyncio.to_thread(_copy, src, copied)
            done.copies.append(size / MIB / (time.perf_counter() - started))
            copied.unlink()

            with _Phase(client, daemon) as put, src.open("rb") as f:
                await bucket.put("bench/1gib", f)
            speed, cpu = put.figures(size)
            done.puts.append(speed)
            done.put_cpu.append(cpu)

            with _Phase(client, daemon) as get:
                got = await bucket.get("bench/1gib")
                assert isinstance(got, R2ObjectBody)
                received = 0
                async for chunk in got:
                    received += len(chunk)
            assert received == size, f"get returned {received} of {size} bytes"
            speed, cpu = get.figures(size)
            done.gets.append(speed)
            done.get_cpu.append(cpu)
            await _http_round(endpoint, src, size, done)
    finally:
        await env.aclose()
    return done


async def _http_round(endpoint: str, src: Path, size: int, done: _Rounds) -> None:
    """A put (the body streamed from the file) and a get (counted) through /objects."""
    socket_path = Path(endpoint.removeprefix("unix://")).with_name("http.sock")
    url = "http://bindingd/objects/ASSETS/bench/http"
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path))) as session:
        started = time.perf_counter()
        with src.open("rb") as f:
            async with session.put(url, data=f) as r:
                assert r.status == 200, await r.text()
        done.http_puts.append(size / MIB / (time.perf_counter() - started))
        started = time.perf_counter()
        received = 0
        async with session.get(url) as r:
            assert r.status == 200, await r.text()
            async for chunk in r.content.iter_any():
                received += len(chunk)
        assert received == size, f"HTTP get returned {received} of {size} bytes"
        done.http_gets.append(size / MIB / (time.perf_counter() - started))


def measure(*, quick: bool = False) -> ObjectFigures:
    size = (256 if quick else 1024) * MIB
    rounds = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="bindingd-bench-objects-") as tmp:
        root = Path(tmp)
        (root / "bindingd.yaml").write_text(PROJECT)
        _write_source(root / "src.bin", size)
        daemon = start_daemon(root)
        try:
            endpoint = f"unix://{root / '.bindingd' / 'bindingd.sock'}"
            process = psutil.Process(daemon.pid)
            idle = process.memory_info().rss
            with PeakRss(daemon.pid) as rss:
                done = asyncio.run(_rounds(endpoint, root, size, rounds, process))
        finally:
            stop(daemon)
    return ObjectFigures(
        size=size,
        copy_mb_s=statistics.median(done.copies),
        put_mb_s=statistics.median(done.puts),
        get_mb_s=statistics.median(done.gets),
        idle_rss=idle,
        peak_rss=rss.peak,
        load=os.getloadavg(),
        put_cpu=_median_pair(done.put_cpu),
        get_cpu=_median_pair(done.get_cpu),
        http_put_mb_s=statistics.median(done.http_puts),
        http_get_mb_s=statistics.median(done.http_gets),
    )


def _median_pair(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def report(figures: ObjectFigures) -> list[str]:
    copy = figures.copy_mb_s
    return [
        f"objects, {figures.size // MIB} MiB object (local provider), MiB/s beside a plain file copy",
        f"{'plain file copy (floor)':<34} {copy:8.0f} MiB/s",
        f"{'objects put (local)':<34} {figures.put_mb_s:8.0f} MiB/s ({figures.put_mb_s / copy:4.2f}x)  "
        f"CPU s/GiB client {figures.put_cpu[0]:.2f} daemon {figures.put_cpu[1]:.2f}",
        f"{'objects get (local)':<34} {figures.get_mb_s:8.0f} MiB/s ({figures.get_mb_s / copy:4.2f}x)  "
        f"CPU s/GiB client {figures.get_cpu[0]:.2f} daemon {figures.get_cpu[1]:.2f}",
        f"{'objects put over HTTP (/objects)':<34} {figures.http_put_mb_s:8.0f} MiB/s "
        f"({figures.http_put_mb_s / copy:4.2f}x)",
        f"{'objects get over HTTP (/objects)':<34} {figures.http_get_mb_s:8.0f} MiB/s "
        f"({figures.http_get_mb_s / copy:4.2f}x)",
        f"{'daemon RSS idle / peak':<34} {figures.idle_rss / MIB:8.1f} / {figures.peak_rss / MIB:.1f} MiB "
        f"(+{(figures.peak_rss - figures.idle_rss) / MIB:.1f} MiB)",
        f"machine load average (1/5/15 min) at the end: {' / '.join(f'{x:.2f}' for x in figures.load)}",
        f"goal: objects put at least 300 MB/s: {figures.put_mb_s * MIB / 1e6:.0f} MB/s, "
        f"{'met' if figures.put_mb_s * MIB / 1e6 >= 300 else 'NOT met'}",
        f"goal: objects get at least 300 MB/s: {figures.get_mb_s * MIB / 1e6:.0f} MB/s, "
        f"{'met' if figures.get_mb_s * MIB / 1e6 >= 300 else 'NOT met'}",
        f"goal: daemon RSS less than 100 MiB above idle: "
        f"{'met' if figures.peak_rss - figures.idle_rss < 100 * MIB else 'NOT met'}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.objects")
    parser.add_argument("--quick", action="store_true", help="a 256 MiB object, one round")
    args = parser.parse_args()
    print("\n".join(report(measure(quick=args.quick))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
