"""A TCP fault proxy of the tests' own, between the daemon and one real backend.

It forwards 127.0.0.1:<port> to the backend's port and, on demand:
- `freeze()`: black-holes traffic, holding every byte both ways while every socket stays open
  (a stalled network: no reset, no EOF) until `thaw()`;
- `cut()`: closes every proxied connection and closes each new one at once (a backend gone
  away) until `restore()`;
- `latency`: seconds added before each chunk is passed on;
- `bytes_per_s`: a slow link, each direction passing at most this many bytes a second;
- `reset_after(n, direction)`: every proxied connection is reset (RST) once `n` bytes have
  passed in `direction` ("down": from the backend, "up": to it), mid-message: a link that
  breaks in the middle of a body or a result, on every attempt, until `restore()`.

It runs on the test's event loop, so only beside `daemon_in_process` (a daemon in this
process); the shared backends themselves are never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.latency = 0.0
        self.bytes_per_s = 0.0
        self.reset_at: dict[str, int] = {}  # direction -> bytes after which a connection is reset
        self.resets = 0
        self.is_cut = False
        self.server: asyncio.Server | None = None
        self.port = 0
        self.accepted = 0
        # Per proxied connection: whether it has ended (the daemon's side closed it, or a cut).
        self.closed: dict[int, bool] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FaultProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    def cut(self) -> None:
        self.is_cut = True
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as when the backend's host goes away

    def restore(self) -> None:
        self.is_cut = False
        self.reset_at.clear()

    def reset_after(self, n: int, direction: str = "down") -> None:
        assert direction in ("up", "down"), direction
        self.reset_at[direction] = n

    def open_connections(self) -> int:
        return sum(not closed for closed in self.closed.values())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.is_cut:
            writer.transport.abort()
            return
        number = len(self.closed)
        self.closed[number] = False
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.closed[number] = True
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        ends = (writer, up_writer)
        pumps = {
            asyncio.create_task(self._pump(reader, up_writer, "up", ends)),
            asyncio.create_task(self._pump(up_reader, writer, "down", ends)),
        }
        self._tasks |= pumps
        try:
            # Either side ending ends both: an EOF is passed on as a close.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.closed[number] = True
            for pump in pumps:
                pump.cancel()
            self._tasks -= pumps
            self._writers -= {writer, up_writer}
            up_writer.close()
            writer.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
        ends: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        passed = 0
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await self.thawed.wait()
                # A slow link passes small chunks, so that bytes trickle rather than burst.
                size = max(1024, int(self.bytes_per_s / 20)) if self.bytes_per_s else 65536
                data = await reader.read(min(size, 65536))
                if not data:
                    return
                if self.latency:
                    await asyncio.sleep(self.latency)
                await self.thawed.wait()  # frozen: the bytes are held, the sockets stay open
                if self.is_cut:
                    return
                limit = self.reset_at.get(direction)
                if limit is not None and passed + len(data) >= limit:
                    # Pass what fits, then reset both sides: the peer sees a message cut short.
                    writer.write(data[: max(0, limit - passed)])
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.drain()
                    self.resets += 1
                    for end in ends:
                        end.transport.abort()
                    return
                passed += len(data)
                writer.write(data)
                await writer.drain()
                if self.bytes_per_s:
                    await asyncio.sleep(len(data) / self.bytes_per_s)

    async def close(self) -> None:
        self.thaw()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
