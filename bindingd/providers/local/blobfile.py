"""Blob files written and read around the page cache (O_DIRECT), as MinIO does for objects.

Through the page cache, every byte of a large body is copied into freshly allocated cache
pages. On these VMs, whose host takes freed memory back, that costs more CPU than hashing the
body, and on any machine it evicts the developer's own files from the cache. Direct I/O moves
the bytes by DMA from one reused, page-aligned buffer. Small bodies and the tail of a large
one still go through the cache, where a repeated get of a small object finds them. Where the
filesystem refuses direct I/O (some FUSE and network filesystems), files are ordinary ones.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
from pathlib import Path

# Direct I/O needs the buffer, the file offset and the length aligned to the device's logical
# block; a page covers the block sizes in use (512 and 4096).
ALIGN = mmap.PAGESIZE
WRITE_BUFFER_BYTES = 1024 * 1024
# The disk serves large direct reads much faster than 1 MiB ones (about 1.5x here).
READ_BLOCK_BYTES = 4 * 1024 * 1024


def _open_direct(path: Path, flags: int) -> tuple[int, bool]:
    """`path` opened with O_DIRECT where the filesystem allows it; (fd, direct)."""
    try:
        return os.open(path, flags | os.O_DIRECT, 0o600), True
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    return os.open(path, flags, 0o600), False


def _stop_direct(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _unmap(buffer: mmap.mmap) -> None:
    """Unmap now, unless a view of the buffer lives on (in the traceback of a failed write, say):
    then it is unmapped when the last view goes."""
    with contextlib.suppress(BufferError):
        buffer.close()


class BlobWriter:
    """A new file, written in order: `write` the chunks, then `finish` (fsync) or `close`.

    Chunks are gathered into whole buffers, each written directly; what is left at the end goes
    through the page cache. One thread at a time.
    """

    def __init__(self, path: Path) -> None:
        self._fd, self._direct = _open_direct(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC)
        self._buffer = mmap.mmap(-1, WRITE_BUFFER_BYTES)
        self._view = memoryview(self._buffer)  # released with the buffer, when no longer used
        self._filled = 0

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes | memoryview) -> None:
        data = memoryview(data)
        while data:
            n = min(len(data), WRITE_BUFFER_BYTES - self._filled)
            self._view[self._filled : self._filled + n] = data[:n]
            self._filled += n
            data = data[n:]
            if self._filled == WRITE_BUFFER_BYTES:
                self._write_buffer()

    def _write_buffer(self) -> None:
        try:
            _write_all(self._fd, self._view[: self._filled])
        except OSError as e:
            # A filesystem that took O_DIRECT at open but wants another alignment: go on buffered.
            if not self._direct or e.errno != errno.EINVAL:
                raise
            self._direct = False
            _stop_direct(self._fd)
            _write_all(self._fd, self._view[: self._filled])
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
            _unmap(self._buffer)


class BlobReader:
    """A range of a stored blob, read in order a block of chunks at a time.

    A range of a write buffer or more is read directly, in blocks of READ_BLOCK_BYTES; a shorter
    one through the page cache, one chunk per call.
    """

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self._position = offset
        self._end = offset + length
        self._buffer: mmap.mmap | None = None
        if length >= WRITE_BUFFER_BYTES:
            self._fd, direct = _open_direct(path, os.O_RDONLY | os.O_CLOEXEC)
            if direct:
                # A block wider than READ_BLOCK_BYTES: a range may start inside a block.
                self._buffer = mmap.mmap(-1, READ_BLOCK_BYTES + ALIGN)
        else:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_block(self, chunk_bytes: int) -> list[bytes]:
        """The next bytes of the range as chunks of at most `chunk_bytes`; an empty list at the
        end of the range (or of the file, if it is shorter)."""
        left = self._end - self._position
        if left <= 0:
            return []
        if self._buffer is None:
            data = os.pread(self._fd, min(chunk_bytes, left), self._position)
            self._position += len(data)
            return [data] if data else []
        size = min(READ_BLOCK_BYTES, left)
        start = self._position - self._position % ALIGN
        skip = self._position - start
        span = -(-(skip + size) // ALIGN) * ALIGN
        with memoryview(self._buffer) as view:
            got = os.preadv(self._fd, [view[:span]], start)
            end = max(skip, min(got, skip + size))
            chunks = [bytes(view[i : min(i + chunk_bytes, end)]) for i in range(skip, end, chunk_bytes)]
        self._position += end - skip
        return chunks

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._buffer is not None:
            _unmap(self._buffer)
            self._buffer = None
