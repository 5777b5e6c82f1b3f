"""A body on its way to a file, for every provider that writes one (the local store's blobs,
the spools of the S3 and Cloudflare providers): hashing and writing while the next chunks are
received, threads that a cancelled call still waits for, and the temp files of a put (held
while in use, removed at start when a killed daemon left them).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from bindingd.domain.objects import BodyChunk, Digests
from bindingd.errors import BindingdError, backend_unavailable

T = TypeVar("T")

# A temp file written to this recently may belong to a put in progress in another daemon.
LEFTOVER_AGE_S = 60.0


async def wait_to_the_end(job: asyncio.Future[object]) -> None:
    """Wait until `job` is done (not for its result), even if this wait is cancelled: the
    cancellation goes on once it is done, and nobody reads the job's outcome then."""
    cancelled = False
    while not job.done():
        try:
            await asyncio.wait([job])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not job.cancelled():
            job.exception()  # read: a failure of a job whose caller left is no one's to log
        raise asyncio.CancelledError


async def to_thread_to_the_end(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` on a worker thread. A cancelled caller still waits for it to return before
    the cancellation goes on: the thread may be using a file that the caller then closes."""
    job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    await wait_to_the_end(job)
    return job.result()


# How many received chunks may wait for a put's hashing or disk: the receive goes on while
# they work. A put holds at most 2 * READ_AHEAD_CHUNKS + 1 chunks (the ones a lane is working
# on, the ones waiting, the one being received): 5 MiB with the clients' 1 MiB chunks.
READ_AHEAD_CHUNKS = 2


class _Lane:
    """Runs `fn` on each pushed chunk, in order, on a worker thread, while the caller goes on
    receiving. The worker takes all the chunks waiting at once: when it falls behind, one thread
    hand-over serves several chunks (hand-overs cost this VM more CPU than copying a chunk).
    A failure is raised by the next `push` or by `finish`; the chunks still waiting are dropped.
    """

    def __init__(self, fn: Callable[[BodyChunk], object]) -> None:
        self._fn = fn
        self._queue: asyncio.Queue[BodyChunk | None] = asyncio.Queue(READ_AHEAD_CHUNKS)
        self._error: Exception | None = None
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        finished = False
        while not finished:
            waiting = [await self._queue.get()]
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            chunks = [chunk for chunk in waiting if chunk is not None]
            finished = len(chunks) < len(waiting)  # `finish` queued None after the last chunk
            if not chunks or self._error is not None:
                continue  # after a failure, drain: `push` must never wait on a stopped lane
            try:
                await to_thread_to_the_end(self._each, chunks)
            except Exception as e:
                self._error = e

    def _each(self, chunks: list[BodyChunk]) -> None:
        for chunk in chunks:
            self._fn(chunk)

    async def push(self, chunk: BodyChunk) -> None:
        if self._error is not None:
            raise self._error
        await self._queue.put(chunk)

    async def finish(self) -> None:
        """Wait until every chunk is done; raise the lane's failure."""
        await self._queue.put(None)
        await asyncio.shield(self.task)
        if self._error is not None:
            raise self._error


async def write_body(
    f: BinaryIO, body: AsyncIterator[BodyChunk], digests: Digests, max_bytes: int, too_large: BindingdError
) -> None:
    """Hash and write `body` to `f` while the next chunks are received: the md5 and the disk
    writes each run on a lane of their own, at their own pace (hashlib releases the GIL for
    large buffers, and so does the write system call). The md5 of every byte (the etag) is the
    bound of a put.
    """
    hashing = _Lane(digests.update)
    writing = _Lane(f.write)
    try:
        size = 0
        async for chunk in body:
            size += len(chunk)
            if size > max_bytes:
                raise too_large
            await hashing.push(chunk)
            await writing.push(chunk)
        await hashing.finish()
        await writing.finish()
    finally:
        # Both lanes end before the caller closes the file, even if this call is cancelled.
        hashing.task.cancel()
        writing.task.cancel()
        await wait_to_the_end(asyncio.gather(hashing.task, writing.task, return_exceptions=True))


async def spool_body(
    folder: Path,
    body: AsyncIterator[BodyChunk],
    digests: Digests,
    max_bytes: int,
    too_large: BindingdError,
) -> Path:
    """`body` in a new temp file of `folder` (held while written, see hold_temp_file), hashed
    into `digests` and checked against the digests it was given. A provider that sends a body
    on whole (S3, the Cloudflare proxy) spools it first: its length and digests are known before
    it leaves. The file is removed if anything fails; a disk that refuses it is
    BACKEND_UNAVAILABLE, naming the folder."""
    path = folder / uuid.uuid4().hex
    try:
        f = await asyncio.to_thread(open, path, "wb")
    except OSError as e:
        raise _unwritable(folder, e) from e
    try:
        hold_temp_file(f)
        await write_body(f, body, digests, max_bytes, too_large)
        await asyncio.to_thread(f.close)
        digests.verify()
    except BaseException as e:
        f.close()
        path.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _unwritable(folder, e) from e
        raise
    return path


def _unwritable(folder: Path, e: OSError) -> BindingdError:
    return backend_unavailable(f"cannot write the spool folder {folder}: {e}")


def hold_temp_file(f: BinaryIO) -> None:
    """Mark a temp file as in use by this process (released when it is closed or the process
    dies), so that another daemon starting on the same folder leaves it alone."""
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_leftovers(folder: Path) -> None:
    """Remove the temp files of a daemon killed mid-put: never part of an object. Another daemon
    may be serving this folder at the same time (`bindingd call` for another env starts one), so
    a file that is held (see hold_temp_file) or was written in the last LEFTOVER_AGE_S stays."""
    now = time.time()
    for path in folder.iterdir():
        try:
            with path.open("rb") as f:
                if now - os.fstat(f.fileno()).st_mtime < LEFTOVER_AGE_S:
                    continue
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                path.unlink(missing_ok=True)
        except FileNotFoundError:
            continue
