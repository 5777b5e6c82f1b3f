"""Objects on local files: `.bindingd/state/objects/<BINDING>/` holds the bodies, SQLite the rest.

Each body is a file named by a generated id under `blobs/`; the key lives only in SQLite, so no
key (`..`, `/`, unicode, 1024 bytes) can name a path. A put streams into `tmp/`, is fsynced,
renamed into `blobs/` and recorded in one transaction; until then nothing is visible, and a put
that fails or is cancelled removes its temp file; a start removes what a killed daemon left
(temp files, and blobs that no object or part names). Writes to SQLite run on the store's
writer thread (see store.py), which also makes an `only_if` check and the write that follows
one step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog

from bindingd.config.model import Binding
from bindingd.domain import objects
from bindingd.domain.objects import (
    CHUNK_BYTES,
    BodyChunk,
    Conditional,
    Digests,
    HttpMetadata,
    ObjectInfo,
    ObjectListing,
    ObjectRead,
    PutOptions,
    RangeSpec,
)
from bindingd.errors import backend_unavailable, invalid_argument
from bindingd.providers.bodies import (
    hold_temp_file,
    remove_leftovers,
    to_thread_to_the_end,
    wait_to_the_end,
    write_body,
)
from bindingd.providers.connections import ProviderContext
from bindingd.providers.local.blobfile import BlobReader, BlobWriter
from bindingd.providers.local.sqlite import BUSY_MS, private_folder
from bindingd.providers.local.store import SqliteStore, prefix_clauses, prefix_upper_bound

log = structlog.get_logger("bindingd.objects")

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key       TEXT PRIMARY KEY,
    blob      TEXT NOT NULL,
    version   TEXT NOT NULL,
    size      INTEGER NOT NULL,
    etag      TEXT NOT NULL,
    uploaded  INTEGER NOT NULL,
    http      TEXT NOT NULL,
    custom    TEXT NOT NULL,
    checksums TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    key       TEXT NOT NULL,
    http      TEXT NOT NULL,
    custom    TEXT NOT NULL
);
-- Uploads completed or aborted: aborting one again succeeds, as in R2; an unknown id fails.
CREATE TABLE IF NOT EXISTS finished_uploads (
    upload_id TEXT PRIMARY KEY,
    key       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS parts (
    upload_id   TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    blob        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    etag        TEXT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
"""
COLUMNS = "key, version, size, etag, uploaded, http, custom, checksums"


def _named_blobs(conn: sqlite3.Connection) -> set[str]:
    """The blob files the store's objects and parts name."""
    return {row[0] for row in conn.execute("SELECT blob FROM objects UNION ALL SELECT blob FROM parts")}


def _info(row: tuple[Any, ...], *, http: bool = True, custom: bool = True) -> ObjectInfo:
    key, version, size, etag, uploaded, http_json, custom_json, checksums_json = row
    return ObjectInfo(
        key=key,
        version=version,
        size=size,
        etag=etag,
        uploaded=uploaded,
        http_metadata=HttpMetadata(**json.loads(http_json)) if http else HttpMetadata(),
        custom_metadata=json.loads(custom_json) if custom else {},
        checksums={k: bytes.fromhex(v) for k, v in json.loads(checksums_json).items()},
    )


class LocalObjects:
    """The local objects provider; one folder and one SQLite file per binding."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.db_path = root / "objects.sqlite3"
        self.store = SqliteStore(
            self.db_path, store="object store", thread_name=f"objects-{root.name}", where=root
        )

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> LocalObjects:
        return cls(context.state_dir / "objects" / binding.name)

    async def start(self) -> None:
        try:
            private_folder(self.blobs)
            private_folder(self.tmp)
            remove_leftovers(self.tmp)
        except OSError as e:
            raise self.store.open_failure(e) from e
        await self.store.open(SCHEMA, then=self._remove_orphan_blobs)

    def _remove_orphan_blobs(self, conn: sqlite3.Connection) -> None:
        """On the writer thread at start: remove the blob files that no object or part names. A
        daemon killed between moving a blob in and recording it, or between recording a
        replacement or a delete and removing the old file, leaves one behind.

        Candidates come from a read and a listing, without a lock. Every blob is moved in and
        recorded under the store's write lock, so a candidate is checked again under that lock,
        whichever daemon wrote it. Best effort: when another process holds the lock, the store
        is read-only or anything fails, a later start does it, and this one goes on at once."""
        try:
            with os.scandir(self.blobs) as entries:
                files = {e.name for e in entries if not e.is_dir(follow_symlinks=False)}
            if not files - _named_blobs(conn):
                return
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                conn.execute("BEGIN IMMEDIATE")
            finally:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
            try:
                for name in files - _named_blobs(conn):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.blobs / name)
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")  # nothing was written: this lets the lock go
        except (sqlite3.Error, OSError) as e:
            log.warning("orphan blobs not removed this time", store=str(self.root), reason=str(e))

    async def close(self) -> None:
        await self.store.close()

    async def check(self) -> str:
        self.store.read("SELECT 1")
        return f"folder {self.root.name}"

    # --- reads ---------------------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo | None:
        rows = self.store.read(f"SELECT {COLUMNS} FROM objects WHERE key = ?", (key,))
        return _info(rows[0]) if rows else None

    async def get(self, key: str, range: RangeSpec | None, only_if: Conditional | None) -> ObjectRead | None:
        # An overwrite may remove the blob between the lookup and the open: look again.
        for _attempt in (1, 2, 3):
            rows = self.store.read(f"SELECT blob, {COLUMNS} FROM objects WHERE key = ?", (key,))
            if not rows:
                return None
            blob, *row = rows[0]
            info = _info(tuple(row))
            if not objects.condition_met(only_if, info):
                return ObjectRead(info, 0, info.size, None)
            offset, length = objects.resolve_range(range, info.size)
            try:
                f = BlobReader(self.blobs / blob, offset, length)
            except FileNotFoundError:
                continue
            return ObjectRead(info, offset, length, self._body(f, length))
        raise backend_unavailable(f'object "{key}" kept changing while it was being read; try again')

    async def _body(self, f: BlobReader, length: int) -> AsyncGenerator[bytes, None]:
        """The blob's bytes in chunks; the next block is read on a thread while this one is sent.
        The file is closed once no thread reads it, however the body ends."""
        pending: asyncio.Future[list[bytes]] | None = None
        try:
            left = length
            if left > 0:
                pending = asyncio.ensure_future(asyncio.to_thread(f.read_block, CHUNK_BYTES))
            while pending is not None:
                await wait_to_the_end(pending)
                chunks = pending.result()
                pending = None
                if not chunks:
                    raise backend_unavailable("the object's file is shorter than its recorded size")
                left -= sum(len(chunk) for chunk in chunks)
                if left > 0:
                    pending = asyncio.ensure_future(asyncio.to_thread(f.read_block, CHUNK_BYTES))
                for chunk in chunks:
                    yield chunk
        finally:
            try:
                if pending is not None:
                    await wait_to_the_end(pending)
                    if not pending.cancelled():
                        pending.exception()  # read: the body ended, this block is not wanted
            finally:
                f.close()

    async def list(
        self,
        *,
        prefix: str,
        delimiter: str,
        cursor: str,
        start_after: str,
        limit: int,
        include_http_metadata: bool,
        include_custom_metadata: bool,
    ) -> ObjectListing:
        after = objects.decode_cursor(cursor, prefix)
        if after is None and start_after:
            after = start_after
        found: list[ObjectInfo] = []
        prefixes: list[str] = []
        last = ""
        # Where to resume: strictly after a key, or at the first key past a delimited prefix.
        lower, inclusive = after, False
        if after is not None and objects.delimited(after, prefix, delimiter) == after:
            lower, inclusive = prefix_upper_bound(after), True
        truncated = False
        while not truncated:
            rows = self._page(prefix, lower, inclusive, limit + 1)
            if not rows:
                break
            for row in rows:
                key = row[0]
                rolled = objects.delimited(key, prefix, delimiter)
                if len(found) + len(prefixes) == limit:
                    truncated = True
                    break
                if rolled is None:
                    found.append(_info(row, http=include_http_metadata, custom=include_custom_metadata))
                    last, lower, inclusive = key, key, False
                else:
                    prefixes.append(rolled)
                    last, lower, inclusive = rolled, prefix_upper_bound(rolled), True
                    break  # skip the rest of this prefix with a new query
            else:
                if len(rows) <= limit:
                    break
            if lower is None:
                break
        return ObjectListing(
            objects=found,
            delimited_prefixes=prefixes,
            truncated=truncated,
            cursor=objects.encode_cursor(prefix, last) if truncated else "",
        )

    def _page(self, prefix: str, lower: str | None, inclusive: bool, limit: int) -> list[tuple[Any, ...]]:
        clauses, params = prefix_clauses(prefix)
        if lower is not None:
            clauses.append("key >= ?" if inclusive else "key > ?")
            params.append(lower)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self.store.read(
            f"SELECT {COLUMNS} FROM objects {where} ORDER BY key LIMIT ?", (*params, limit)
        )

    # --- writes --------------------------------------------------------------------------------

    async def check_put(self, options: PutOptions) -> None:
        """Files and SQLite hold any metadata the rules allow."""

    async def put(self, key: str, body: AsyncIterator[BodyChunk], options: PutOptions) -> ObjectInfo | None:
        blob, digests = await self._receive(body, options.checksums, objects.MAX_PUT_BYTES, None)
        try:
            checksums = digests.verify()
            info = ObjectInfo(
                key=key,
                version=uuid.uuid4().hex,
                size=digests.size,
                etag=checksums["md5"].hex(),
                uploaded=int(time.time() * 1000),
                http_metadata=options.http_metadata,
                custom_metadata=options.custom_metadata,
                checksums=checksums,
            )
            stored = await self.store.write(self._commit_object, blob, info, options.only_if)
        except BaseException:
            (self.tmp / blob).unlink(missing_ok=True)
            raise
        return info if stored else None

    async def _receive(
        self, body: AsyncIterator[BodyChunk], verify: dict[str, bytes], max_bytes: int, part: int | None
    ) -> tuple[str, Digests]:
        """Stream `body` into a new fsynced temp file; its name and digests. Cleans up on failure."""
        name = uuid.uuid4().hex
        path = self.tmp / name
        digests = Digests(verify)
        try:
            f = await asyncio.to_thread(BlobWriter, path)
        except OSError as e:
            raise backend_unavailable(f"cannot write to the local object store {self.root}: {e}") from e
        too_large = objects.put_too_large() if part is None else objects.part_too_large(part)
        try:
            hold_temp_file(f)
            await write_body(f, body, digests, max_bytes, too_large)
            await to_thread_to_the_end(f.finish)
        except BaseException as e:
            f.close()
            path.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise backend_unavailable(f"cannot write to the local object store {self.root}: {e}") from e
            raise
        return name, digests

    def _commit_object(
        self, conn: sqlite3.Connection, blob: str, info: ObjectInfo, only_if: Conditional | None
    ) -> bool:
        """On the writer thread: check `only_if`, move the body in, record it; False if not met."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(f"SELECT blob, {COLUMNS} FROM objects WHERE key = ?", (info.key,)).fetchall()
            current = _info(tuple(rows[0][1:])) if rows else None
            if not objects.condition_met(only_if, current):
                conn.execute("ROLLBACK")
                (self.tmp / blob).unlink(missing_ok=True)
                return False
            os.replace(self.tmp / blob, self.blobs / blob)
            conn.execute(
                f"INSERT OR REPLACE INTO objects (blob, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (blob, *_row(info)),
            )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            (self.blobs / blob).unlink(missing_ok=True)
            raise
        if rows:
            (self.blobs / rows[0][0]).unlink(missing_ok=True)
        return True

    async def delete(self, keys: list[str]) -> None:
        await self.store.write(self._delete, keys)

    def _delete(self, conn: sqlite3.Connection, keys: list[str]) -> None:
        marks = ",".join("?" * len(keys))
        conn.execute("BEGIN IMMEDIATE")
        try:
            blobs = [r[0] for r in conn.execute(f"SELECT blob FROM objects WHERE key IN ({marks})", keys)]
            conn.execute(f"DELETE FROM objects WHERE key IN ({marks})", keys)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        for blob in blobs:
            (self.blobs / blob).unlink(missing_ok=True)

    # --- multipart -----------------------------------------------------------------------------

    async def create_multipart_upload(
        self, key: str, http_metadata: HttpMetadata, custom_metadata: dict[str, str]
    ) -> str:
        upload_id = secrets.token_urlsafe(32)
        await self.store.execute(
            "INSERT INTO uploads (upload_id, key, http, custom) VALUES (?, ?, ?, ?)",
            (upload_id, key, json.dumps(asdict(http_metadata)), json.dumps(custom_metadata)),
        )
        return upload_id

    def _upload(self, key: str, upload_id: str) -> tuple[str, str]:
        rows = self.store.read(
            "SELECT http, custom FROM uploads WHERE upload_id = ? AND key = ?", (upload_id, key)
        )
        if not rows:
            raise objects.no_such_upload(upload_id)
        return rows[0]

    async def check_upload(self, key: str, upload_id: str) -> None:
        self._upload(key, upload_id)

    async def upload_part(
        self, key: str, upload_id: str, part_number: int, body: AsyncIterator[BodyChunk]
    ) -> str:
        blob, digests = await self._receive(body, {}, objects.MAX_PART_BYTES, part_number)
        etag = digests.verify()["md5"].hex()
        try:
            await self.store.write(self._commit_part, blob, upload_id, part_number, digests.size, etag)
        except BaseException:
            (self.tmp / blob).unlink(missing_ok=True)
            raise
        return etag

    def _commit_part(
        self, conn: sqlite3.Connection, blob: str, upload_id: str, part_number: int, size: int, etag: str
    ) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not conn.execute("SELECT 1 FROM uploads WHERE upload_id = ?", (upload_id,)).fetchall():
                raise objects.no_such_upload(upload_id)
            old = conn.execute(
                "SELECT blob FROM parts WHERE upload_id = ? AND part_number = ?", (upload_id, part_number)
            ).fetchall()
            os.replace(self.tmp / blob, self.blobs / blob)
            conn.execute(
                "INSERT OR REPLACE INTO parts (upload_id, part_number, blob, size, etag)"
                " VALUES (?, ?, ?, ?, ?)",
                (upload_id, part_number, blob, size, etag),
            )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            (self.blobs / blob).unlink(missing_ok=True)
            raise
        if old:
            (self.blobs / old[0][0]).unlink(missing_ok=True)

    async def complete_multipart_upload(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo:
        http_json, custom_json = self._upload(key, upload_id)
        stored = {
            number: (blob, size, etag)
            for number, blob, size, etag in self.store.read(
                "SELECT part_number, blob, size, etag FROM parts WHERE upload_id = ?", (upload_id,)
            )
        }
        ordered = sorted(parts)
        for number, etag in ordered:
            if number not in stored or stored[number][2] != etag.strip('"'):
                raise invalid_argument(
                    f"part {number} with etag {etag} was not uploaded to this multipart upload; "
                    "pass the parts that upload_part() returned"
                )
        objects.check_part_sizes([(number, stored[number][1]) for number, _ in ordered])
        name = uuid.uuid4().hex
        try:
            try:
                joined = await asyncio.to_thread(self._concatenate, name, [stored[n][:2] for n, _ in ordered])
            except OSError as e:
                raise backend_unavailable(f"cannot write to the local object store {self.root}: {e}") from e
            if not joined:
                self._upload(key, upload_id)  # gone: aborted or completed meanwhile
                raise invalid_argument(
                    f'a part of multipart upload "{upload_id}" was uploaded again while it was being '
                    "completed; call complete() again with the parts that upload_part() returned"
                )
            info = ObjectInfo(
                key=key,
                version=uuid.uuid4().hex,
                size=sum(stored[n][1] for n, _ in ordered),
                etag=objects.multipart_etag([stored[n][2] for n, _ in ordered]),
                uploaded=int(time.time() * 1000),
                http_metadata=HttpMetadata(**json.loads(http_json)),
                custom_metadata=json.loads(custom_json),
                checksums={},
            )
            await self.store.write(self._commit_multipart, name, info, upload_id)
        except BaseException:
            (self.tmp / name).unlink(missing_ok=True)
            raise
        return info

    def _concatenate(self, name: str, blobs: list[tuple[str, int]]) -> bool:
        """The parts (blob, size) joined into tmp/`name`; False when a part's file is gone (an
        abort, a complete or a new upload of that part came between). Every part is opened first:
        once open, its file may be removed by another call without changing what is read here."""
        with contextlib.ExitStack() as files:
            try:
                parts = [files.enter_context(BlobReader(self.blobs / blob, 0, size)) for blob, size in blobs]
            except FileNotFoundError:
                return False
            with BlobWriter(self.tmp / name) as out:
                for part in parts:  # a part's read buffer is released once it has been read
                    while chunks := part.read_block(CHUNK_BYTES):
                        for chunk in chunks:
                            out.write(chunk)
                out.finish()
        return True

    def _commit_multipart(
        self, conn: sqlite3.Connection, blob: str, info: ObjectInfo, upload_id: str
    ) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not conn.execute("SELECT 1 FROM uploads WHERE upload_id = ?", (upload_id,)).fetchall():
                raise objects.no_such_upload(upload_id)
            old = conn.execute("SELECT blob FROM objects WHERE key = ?", (info.key,)).fetchall()
            part_blobs = [
                r[0] for r in conn.execute("SELECT blob FROM parts WHERE upload_id = ?", (upload_id,))
            ]
            os.replace(self.tmp / blob, self.blobs / blob)
            conn.execute(
                f"INSERT OR REPLACE INTO objects (blob, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (blob, *_row(info)),
            )
            conn.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            conn.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            conn.execute(
                "INSERT OR IGNORE INTO finished_uploads (upload_id, key) VALUES (?, ?)", (upload_id, info.key)
            )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            (self.blobs / blob).unlink(missing_ok=True)
            raise
        for old_blob in [r[0] for r in old] + part_blobs:
            (self.blobs / old_blob).unlink(missing_ok=True)

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        await self.store.write(self._abort, key, upload_id)

    def _abort(self, conn: sqlite3.Connection, key: str, upload_id: str) -> None:
        """On the writer thread: abort the upload. One already completed or aborted is left as it
        is (R2's abort is idempotent, and does not undo a complete); an unknown one is an error."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            known = (upload_id, key)
            if not conn.execute("SELECT 1 FROM uploads WHERE upload_id = ? AND key = ?", known).fetchall():
                conn.execute("ROLLBACK")
                finished = "SELECT 1 FROM finished_uploads WHERE upload_id = ? AND key = ?"
                if conn.execute(finished, known).fetchall():
                    return
                raise objects.no_such_upload(upload_id)
            blobs = [r[0] for r in conn.execute("SELECT blob FROM parts WHERE upload_id = ?", (upload_id,))]
            conn.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            conn.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            conn.execute("INSERT OR IGNORE INTO finished_uploads (upload_id, key) VALUES (?, ?)", known)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for blob in blobs:
            (self.blobs / blob).unlink(missing_ok=True)


def _row(info: ObjectInfo) -> tuple[object, ...]:
    return (
        info.key,
        info.version,
        info.size,
        info.etag,
        info.uploaded,
        json.dumps(asdict(info.http_metadata)),
        json.dumps(info.custom_metadata),
        json.dumps({k: v.hex() for k, v in info.checksums.items()}),
    )
