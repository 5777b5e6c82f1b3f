"""The local provider's blob files: direct I/O on this machine's filesystem (ext4), a real
filesystem without it (ramfs), and the fallbacks for a filesystem that refuses direct I/O later."""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bindingd.providers.local import blobfile
from bindingd.providers.local.blobfile import (
    ALIGN,
    READ_BLOCK_BYTES,
    WRITE_BUFFER_BYTES,
    BlobReader,
    BlobWriter,
)

MIB = 1024 * 1024
SIZES = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, MIB - 1, MIB, MIB + 1, 2 * MIB + 3 * ALIGN, 9 * MIB + 12345]


def _body(size: int) -> bytes:
    return os.urandom(size)


def _write(path: Path, body: bytes, piece: int) -> BlobWriter:
    writer = BlobWriter(path)
    for i in range(0, len(body), piece):
        writer.write(memoryview(body)[i : i + piece])
    writer.finish()
    return writer


def _read(path: Path, offset: int, length: int, chunk: int = MIB) -> list[bytes]:
    chunks: list[bytes] = []
    with BlobReader(path, offset, length) as reader:
        while block := reader.read_block(chunk):
            assert all(0 < len(c) <= chunk for c in block)
            chunks.extend(block)
    return chunks


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("piece", [MIB, 65536 + 7])
def test_written_bytes_are_the_file(tmp_path: Path, size: int, piece: int) -> None:
    body = _body(size)
    _write(tmp_path / "blob", body, piece)
    assert (tmp_path / "blob").read_bytes() == body
    assert (tmp_path / "blob").stat().st_mode & 0o777 == 0o600


def test_large_files_are_written_and_read_directly_here(tmp_path: Path) -> None:
    """ext4 on these machines takes O_DIRECT: the fast path is the one under test."""
    with BlobWriter(tmp_path / "blob") as writer:
        assert fcntl.fcntl(writer.fileno(), fcntl.F_GETFL) & os.O_DIRECT
        writer.write(_body(3 * MIB))
    with BlobReader(tmp_path / "blob", 0, 3 * MIB) as reader:
        assert fcntl.fcntl(reader._fd, fcntl.F_GETFL) & os.O_DIRECT
    with BlobReader(tmp_path / "blob", 0, MIB - 1) as reader:  # short: through the page cache
        assert not fcntl.fcntl(reader._fd, fcntl.F_GETFL) & os.O_DIRECT


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, 9 * MIB + 12345),
        (1, 9 * MIB),
        (ALIGN - 1, 2 * MIB),
        (ALIGN, MIB),
        (5 * MIB + 17, 4 * MIB + 12328),  # to the last byte
        (READ_BLOCK_BYTES - 1, READ_BLOCK_BYTES + 2),
        (9 * MIB + 12344, 1),
        (100, 0),
        (3, MIB - 1),
    ],
)
def test_a_range_reads_exactly_its_bytes(tmp_path: Path, offset: int, length: int) -> None:
    body = _body(9 * MIB + 12345)
    _write(tmp_path / "blob", body, MIB)
    chunks = _read(tmp_path / "blob", offset, length)
    assert b"".join(chunks) == body[offset : offset + length]
    assert all(len(c) == MIB for c in chunks[:-1])


def test_a_file_shorter_than_its_range_ends_early(tmp_path: Path) -> None:
    body = _body(2 * MIB + 100)
    _write(tmp_path / "blob", body, MIB)
    assert b"".join(_read(tmp_path / "blob", MIB, 4 * MIB)) == body[MIB:]


NO_DIRECT_SCRIPT = """
import fcntl, os, sys
from pathlib import Path
from bindingd.providers.local.blobfile import BlobReader, BlobWriter
root = Path(sys.argv[1])
body = os.urandom(5 * 1024 * 1024 + 3)
with BlobWriter(root / "blob") as writer:
    assert not fcntl.fcntl(writer.fileno(), fcntl.F_GETFL) & os.O_DIRECT
    writer.write(body)
    writer.finish()
with BlobReader(root / "blob", 7, len(body) - 10) as reader:
    chunks = []
    while block := reader.read_block(1024 * 1024):
        chunks.extend(block)
assert b"".join(chunks) == body[7:-3], "read back differs"
assert sorted(p.name for p in root.iterdir()) == ["blob"]
print("ok")
"""


def test_a_filesystem_without_direct_io_gets_buffered_files(tmp_path: Path) -> None:
    """ramfs has no direct I/O (and the kernel creates a file before it refuses O_DIRECT at
    open): a real ramfs, mounted in a mount namespace of its own."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed: no ramfs to mount")
    mount = tmp_path / "ramfs"
    mount.mkdir()
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--map-root-user",
            "sh",
            "-c",
            'mount -t ramfs none "$0" && exec "$@"',
            str(mount),
            sys.executable,
            "-c",
            NO_DIRECT_SCRIPT,
            str(mount),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    refused = done.stderr.startswith(("unshare:", "mount:")) and "not permitted" in done.stderr
    if refused:  # the namespace or the mount, not the code under test
        pytest.skip(f"this machine lets no process mount a ramfs: {done.stderr.strip()}")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def _refusing_direct(real: Callable[..., int], first_direct_bytes: int = 0) -> Callable[..., int]:
    """A system call that answers EINVAL on a direct fd (a filesystem that took O_DIRECT but
    wants another alignment), after a first short direct write of `first_direct_bytes` if any.
    No filesystem here behaves so; the calls are made to."""
    calls = 0

    def call(fd: int, data: Any, *args: Any) -> int:
        nonlocal calls
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            calls += 1
            if calls == 1 and first_direct_bytes:
                return real(fd, memoryview(data)[:first_direct_bytes], *args)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, *args)

    return call


@pytest.mark.parametrize("first_direct_bytes", [0, ALIGN, 1000])
def test_a_refused_direct_write_goes_on_buffered_without_writing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_direct_bytes: int
) -> None:
    monkeypatch.setattr(blobfile.os, "write", _refusing_direct(os.write, first_direct_bytes))
    body = _body(2 * MIB + 5)
    _write(tmp_path / "blob", body, MIB)
    assert (tmp_path / "blob").read_bytes() == body


def test_a_refused_direct_read_goes_on_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = _body(3 * MIB + 5)
    _write(tmp_path / "blob", body, MIB)
    monkeypatch.setattr(blobfile.os, "preadv", _refusing_direct(os.preadv))
    assert b"".join(_read(tmp_path / "blob", 3, 3 * MIB)) == body[3 : 3 * MIB + 3]


def test_buffers_are_unmapped_when_done(tmp_path: Path) -> None:
    writer = BlobWriter(tmp_path / "blob")
    buffer = writer._buffer
    writer.write(_body(2 * MIB + 1))
    writer.finish()
    assert buffer.closed
    # Many readers open at once (a multipart complete opens every part first): each holds its
    # read buffer only while its range is being read.
    readers = [BlobReader(tmp_path / "blob", 0, 2 * MIB + 1) for _ in range(3)]
    for reader in readers:
        assert reader._buffer is None
        while reader.read_block(MIB):
            pass
        assert reader._buffer is None
    for reader in readers:
        reader.close()


def test_a_dropped_reader_or_writer_closes_its_file(tmp_path: Path) -> None:
    """A get whose body never started, an open whose caller was cancelled: collected, closed."""
    (tmp_path / "blob").write_bytes(_body(2 * MIB))
    reader = BlobReader(tmp_path / "blob", 0, 2 * MIB)
    writer = BlobWriter(tmp_path / "new")
    fds = [reader._fd, writer.fileno()]
    del reader, writer
    gc.collect()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_other_open_errors_are_not_hidden(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        BlobWriter(tmp_path / "blob")  # a blob name is never reused
    with pytest.raises(FileNotFoundError):
        BlobReader(tmp_path / "gone", 0, 2 * WRITE_BUFFER_BYTES)


def test_close_without_finish_leaves_the_file_to_the_caller(tmp_path: Path) -> None:
    writer = BlobWriter(tmp_path / "blob")
    writer.write(_body(MIB + 5))
    writer.close()
    writer.close()  # twice is harmless
    assert (tmp_path / "blob").stat().st_size == MIB  # the whole buffer; the caller removes it
