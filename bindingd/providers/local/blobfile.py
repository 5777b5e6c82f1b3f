"""Blob files written and read around the page cache (O_DIRECT), as MinIO does for objects.

Through the page cache, every byte of a large body is copied into freshly allocated cache
pages. On these VMs, whose host takes freed memory back, that costs more CPU than hashing the
body, and on any machine it evicts the developer's own files from the cache. Direct I/O moves
the bytes by DMA from a page-aligned buffer that each file reuses from start to end. Small
bodies and the tail of a large one still go through the cache, where a repeated get of a small
object finds them. Where there is no direct I/O (a filesystem without it, such as tmpfs before
Linux 6.6, ramfs, some FUSE and network filesystems; or an OS without O_DIRECT, such as macOS),
the same classes read and write through the page cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
from pathlib import Path

# 0 where the OS has no O_DIRECT: then files are never direct.
O_DIRECT: int = getattr(os, "O_DIRECT", 0)
# Direct I/O needs the buffer, the file offset and the length aligned to the device's logical
# block; a page covers the block sizes in use (512 and 4096). A filesystem that wants more
# answers EINVAL, and the file goes on through the page cache.
ALIGN = mmap.PAGESIZE
WRITE_BUFFER_BYTES = 1024 * 1024
# The disk serves large direct reads faster than 1 MiB ones (about 1.4x here at 2 MiB).
READ_BLOCK_BYTES = 2 * 1024 * 1024


def _start_direct(fd: int) -> bool:
    """Turn direct I/O on for `fd`; False where the filesystem or the OS has none. (Opening with
    O_DIRECT would not do: the kernel creates the file before it refuses the flag.)"""
    if not O_DIRECT:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | O_DIRECT)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        return False
    return True


def _stop_direct(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~O_DIRECT)


def _unmap(buffer: mmap.mmap) -> None:
    """Unmap now, unless a view of the buffer lives on (in the traceback of a failed write):
    then it is unmapped when the last view goes."""
    with contextlib.suppress(BufferError):
        buffer.close()


class BlobWriter:
    """A new file, written in order: `write` the chunks, then `finish` (fsync) or `close`.

    Chunks are gathered into whole buffers, each written directly; what is left at the end goes
    through the page cache. One thread at a time. A writer dropped unclosed (its opening was
    cancelled) closes its file when it is collected.
    """

    _fd = -1
    _view: memoryview | None = None

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            self._direct = _start_direct(self._fd)
            self._buffer = mmap.mmap(-1, WRITE_BUFFER_BYTES)
        except BaseException:
            self.close()
            raise
        self._view = memoryview(self._buffer)
        self._filled = 0

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes | memoryview) -> None:
        assert self._view is not None, "write after close"
        data = memoryview(data)
        while data:
            n = min(len(data), WRITE_BUFFER_BYTES - self._filled)
            self._view[self._filled : self._filled + n] = data[:n]
            self._filled += n
            data = data[n:]
            if self._filled == WRITE_BUFFER_BYTES:
                self._write_buffer()

    def _write_buffer(self) -> None:
        assert self._view is not None
        left = self._view[: self._filled]
        while left:
            try:
                written = os.write(self._fd, left)
            except OSError as e:
                # A filesystem that took O_DIRECT but wants another alignment (or a short
                # direct write left the rest unaligned): the rest goes through the page cache.
                if not self._direct or e.errno != errno.EINVAL:
                    raise
                self._direct = False
                _stop_direct(self._fd)
                continue
            left = left[written:]
        self._filled = 0

    def finish(self) -> None:
        """Write the tail (less than a buffer, so through the page cache), fsync and close."""
        if self._filled:
            if self._direct:
                self._direct = False
                _stop_direct(self._fd)
            self._write_buffer()
        os.fsync(self._fd)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._view is not None:
            self._view.release()
            self._view = None
            _unmap(self._buffer)


class BlobReader:
    """A range of a stored blob, read in order a block of chunks at a time.

    A range of a write buffer or more is read directly, in blocks of READ_BLOCK_BYTES into a
    buffer that lives until the range is read; a shorter one through the page cache, a chunk
    per call. A reader dropped unclosed (a get whose body never started) closes its file when
    it is collected.
    """

    _fd = -1
    _buffer: mmap.mmap | None = None

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self._position = offset
        self._end = offset + length
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._direct = length >= WRITE_BUFFER_BYTES and _start_direct(self._fd)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def read_block(self, chunk_bytes: int) -> list[bytes]:
        """The next bytes of the range as chunks of at most `chunk_bytes`; an empty list at the
        end of the range (or of the file, if it is shorter)."""
        left = self._end - self._position
        if left > 0 and self._direct:
            try:
                chunks = self._read_direct(chunk_bytes, min(READ_BLOCK_BYTES, left))
            except OSError as e:
                # A filesystem that took O_DIRECT but wants another alignment: nothing was read;
                # the rest goes through the page cache.
                if e.errno != errno.EINVAL:
                    raise
                self._direct = False
                _stop_direct(self._fd)
            else:
                if not chunks:
                    self._release()
                return chunks
        self._release()
        if left <= 0:
            return []
        data = os.pread(self._fd, min(chunk_bytes, left), self._position)
        self._position += len(data)
        return [data] if data else []

    def _read_direct(self, chunk_bytes: int, size: int) -> list[bytes]:
        if self._buffer is None:
            # A block wider than READ_BLOCK_BYTES: a range may start inside a block.
            self._buffer = mmap.mmap(-1, READ_BLOCK_BYTES + ALIGN)
        start = self._position - self._position % ALIGN
        skip = self._position - start
        span = -(-(skip + size) // ALIGN) * ALIGN
        with memoryview(self._buffer) as view:
            got = os.preadv(self._fd, [view[:span]], start)
            end = max(skip, min(got, skip + size))
            chunks = [bytes(view[i : min(i + chunk_bytes, end)]) for i in range(skip, end, chunk_bytes)]
        self._position += end - skip
        if self._position >= self._end:
            self._release()
        return chunks

    def _release(self) -> None:
        if self._buffer is not None:
            _unmap(self._buffer)
            self._buffer = None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._release()
