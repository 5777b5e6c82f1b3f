"""The local provider's blob files: direct I/O on this machine's real filesystem, and the
buffered fallback for a filesystem that refuses it."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

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


def test_a_filesystem_without_direct_io_gets_buffered_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some FUSE and network filesystems answer O_DIRECT with EINVAL; none is mounted here, so
    the refusal is made at the os.open call."""
    real_open = os.open

    def refusing_open(path: object, flags: int, *args: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(blobfile.os, "open", refusing_open)
    body = _body(5 * MIB + 3)
    writer = _write(tmp_path / "blob", body, MIB)
    assert writer._direct is False
    assert b"".join(_read(tmp_path / "blob", 7, 5 * MIB - 4)) == body[7:]


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
