"""Cloudflare Queues on one SQLite file, `.bindingd/state/queues/queues.sqlite3`.

Every local queue is rows of one table, keyed by queue name, so moving a message to its
dead-letter queue is one UPDATE in one transaction. A message is committed (WAL, synchronous
NORMAL: it survives a SIGKILL of the daemon) before `send` returns. Visibility is one column,
`visible_at`: a delay, a retry delay or a lease all push it into the future; a lease that runs
out simply makes the row visible again, so nothing depends on the daemon being alive.

Writes (send, claim, ack) run on the store's writer thread (see store.py); the "is anything
visible?" probe of an idle consumer runs on the event loop (WAL readers never wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

from bindingd.config.model import Binding
from bindingd.domain.queue import (
    OutgoingMessage,
    QueueBacklog,
    QueueDelivery,
    QueueSettled,
    Retry,
    dead_letter_queue_of,
    exhausted,
    max_retries_of,
)
from bindingd.errors import BindingdError
from bindingd.providers.connections import ProviderContext
from bindingd.providers.local.store import SqliteStore

log = structlog.get_logger("bindingd.queue.local")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT NOT NULL,
    id           TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    body         BLOB NOT NULL,
    content_type TEXT NOT NULL,
    -- deliveries so far
    attempts     INTEGER NOT NULL DEFAULT 0,
    -- seconds since the epoch before which the row is not deliverable
    visible_at   REAL NOT NULL,
    -- set while (or since) a consumer leased the row
    lease_id     TEXT
);
CREATE INDEX IF NOT EXISTS messages_queue ON messages (queue, seq);
CREATE INDEX IF NOT EXISTS messages_lease ON messages (lease_id) WHERE lease_id IS NOT NULL;
"""
# How often an idle consumer looks for a visible message (sends in this daemon wake it at once).
POLL_S = 0.02
# How often messages whose last lease ran out are dead-lettered without waiting for a consumer.
SWEEP_S = 1.0


class LocalQueue:
    """The local queue provider; one per binding, all queues in one file."""

    def __init__(self, path: Path, queue: str, dead_letter_queue: str | None, max_retries: int) -> None:
        # Messages that left after their last retry: bindingd_queue_messages_total{event="dead_lettered"}.
        self.dead_lettered = 0
        self.path = path
        self.queue = queue
        self.dead_letter_queue = dead_letter_queue
        self.max_retries = max_retries
        self.store = SqliteStore(path, store="queue store", thread_name=f"queue-{queue}")
        self._sent = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        # Sends waiting for the next commit, and the task committing them.
        self._pending: list[tuple[list[tuple[Any, ...]], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> LocalQueue:
        options = binding.options
        queue = options.get("queue", binding.name)
        return cls(
            context.state_dir / "queues" / "queues.sqlite3",
            queue,
            dead_letter_queue_of(options, queue),
            max_retries_of(options),
        )

    async def start(self) -> None:
        await self.store.open(SCHEMA)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.store.close()

    async def check(self) -> str:
        self.store.read("SELECT 1")
        return f"sqlite file {self.path.name}, queue {self.queue}"

    async def backlog(self) -> QueueBacklog:
        await self._flush_pending()
        ((count, size, oldest),) = self.store.read(
            "SELECT count(*), coalesce(sum(length(body)), 0), min(timestamp_ms)"
            " FROM messages WHERE queue = ?",
            (self.queue,),
        )
        return QueueBacklog(int(count), int(size), None if oldest is None else int(oldest))

    async def _flush_pending(self) -> None:
        """Sends of this daemon still being committed are counted once they are."""
        if self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flusher)

    async def send(self, messages: list[OutgoingMessage]) -> None:
        """Stored once committed. Sends that arrive while a commit is running are committed
        together in the next one (group commit): one fsync-free WAL commit for many callers."""
        now = time.time()
        rows = [(self.queue, m.id, m.timestamp_ms, m.body, m.content_type, now + m.delay_s) for m in messages]
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A caller that went away (cancelled) does not leave an unread failure behind.
        stored.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.append((rows, stored))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        await asyncio.shield(stored)
        self._sent.set()

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []

            def insert(conn: sqlite3.Connection, group: list[Any] = group) -> None:
                with _transaction(conn):
                    for rows, _ in group:
                        conn.executemany(
                            "INSERT INTO messages (queue, id, timestamp_ms, body, content_type, visible_at)"
                            " VALUES (?, ?, ?, ?, ?, ?)",
                            rows,
                        )

            try:
                await self.store.write(insert)
            except Exception as e:
                for _, stored in group:
                    if not stored.done():
                        stored.set_exception(e)
            else:
                for _, stored in group:
                    if not stored.done():
                        stored.set_result(None)

    async def receive(self, max_messages: int, visibility_s: float, wait_s: float) -> list[QueueDelivery]:
        deadline = time.monotonic() + wait_s
        while True:
            if self._any_visible():
                claimed = await self._claim_shielded(max_messages, visibility_s)
                if claimed:
                    return claimed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent.wait(), min(POLL_S * 10, remaining))

    async def settle(self, acks: list[str], retries: list[Retry]) -> QueueSettled:
        def apply(conn: sqlite3.Connection) -> QueueSettled:
            expired: list[str] = []
            acked = retried = 0
            now = time.time()
            with _transaction(conn):
                for lease_id in acks:
                    cur = conn.execute(
                        "DELETE FROM messages WHERE queue = ? AND lease_id = ?", (self.queue, lease_id)
                    )
                    if cur.rowcount:
                        acked += 1
                    else:
                        expired.append(lease_id)
                for retry in retries:
                    row = conn.execute(
                        "SELECT seq, id, attempts FROM messages WHERE queue = ? AND lease_id = ?",
                        (self.queue, retry.lease_id),
                    ).fetchone()
                    if row is None:
                        expired.append(retry.lease_id)
                        continue
                    seq, message_id, attempts = row
                    retried += 1
                    if exhausted(attempts, self.max_retries):
                        self._dead_letter(conn, seq, message_id, attempts, now)
                    else:
                        conn.execute(
                            "UPDATE messages SET lease_id = NULL, visible_at = ? WHERE seq = ?",
                            (now + retry.delay_s, seq),
                        )
            return QueueSettled(acked, retried, expired)

        settled = await self.store.write(apply)
        if settled.retried:
            self._sent.set()
        return settled

    async def _sweep(self) -> None:
        """Dead-letter messages whose last lease ran out, even when nobody consumes the queue."""
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.store.write(self._sweep_once)
            except BindingdError as e:
                log.warning("dead-letter sweep failed", queue=self.queue, error=e.message)

    def _sweep_once(self, conn: sqlite3.Connection) -> None:
        now = time.time()
        with _transaction(conn):
            rows = conn.execute(
                "SELECT seq, id, attempts FROM messages WHERE lease_id IS NOT NULL AND queue = ?"
                " AND visible_at <= ? AND attempts > ?",
                (self.queue, now, self.max_retries),
            ).fetchall()
            for seq, message_id, attempts in rows:
                self._dead_letter(conn, seq, message_id, attempts, now)

    def _any_visible(self) -> bool:
        rows = self.store.read(
            "SELECT 1 FROM messages WHERE queue = ? AND visible_at <= ? LIMIT 1", (self.queue, time.time())
        )
        return bool(rows)

    async def _claim_shielded(self, max_messages: int, visibility_s: float) -> list[QueueDelivery]:
        """Claim on the writer thread; if the consumer is cancelled meanwhile, hand the claimed
        messages back at once (and uncount the attempt) instead of leaving them leased."""
        task = asyncio.ensure_future(self.store.write(self._claim, max_messages, visibility_s))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._release_after_cancel)
            raise

    def _release_after_cancel(self, task: asyncio.Task[list[QueueDelivery]]) -> None:
        if task.cancelled() or task.exception() is not None or not task.result():
            return
        leases = [(d.lease_id,) for d in task.result()]

        def release(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(
                    "UPDATE messages SET lease_id = NULL, visible_at = 0, attempts = attempts - 1"
                    " WHERE lease_id = ?",
                    leases,
                )

        self.store.submit(release)

    def _claim(self, conn: sqlite3.Connection, max_messages: int, visibility_s: float) -> list[QueueDelivery]:
        now = time.time()
        out: list[QueueDelivery] = []
        with _transaction(conn):
            while len(out) < max_messages:
                rows = conn.execute(
                    "SELECT seq, id, timestamp_ms, body, content_type, attempts, lease_id FROM messages"
                    " WHERE queue = ? AND visible_at <= ? ORDER BY seq LIMIT ?",
                    (self.queue, now, max_messages - len(out)),
                ).fetchall()
                if not rows:
                    break
                for seq, message_id, timestamp_ms, body, content_type, attempts, lease_id in rows:
                    # A lease that ran out is a failed delivery: it may have used the last retry.
                    if lease_id is not None and exhausted(attempts, self.max_retries):
                        self._dead_letter(conn, seq, message_id, attempts, now)
                        continue
                    lease = uuid.uuid4().hex
                    conn.execute(
                        "UPDATE messages SET attempts = attempts + 1, lease_id = ?, visible_at = ?"
                        " WHERE seq = ?",
                        (lease, now + visibility_s, seq),
                    )
                    out.append(
                        QueueDelivery(message_id, timestamp_ms, body, content_type, attempts + 1, lease)
                    )
        return out

    def _dead_letter(
        self, conn: sqlite3.Connection, seq: int, message_id: str, attempts: int, now: float
    ) -> None:
        self.dead_lettered += 1
        if self.dead_letter_queue:
            conn.execute(
                "UPDATE messages SET queue = ?, attempts = 0, lease_id = NULL, visible_at = ? WHERE seq = ?",
                (self.dead_letter_queue, now, seq),
            )
            log.info(
                "message moved to the dead-letter queue",
                queue=self.queue,
                dead_letter_queue=self.dead_letter_queue,
                id=message_id,
                attempts=attempts,
            )
        else:
            conn.execute("DELETE FROM messages WHERE seq = ?", (seq,))
            log.warning(
                "message dropped after its last retry", queue=self.queue, id=message_id, attempts=attempts
            )


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any failure: a batch is stored whole or not at all."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
