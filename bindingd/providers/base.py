"""One Protocol per binding type. A provider implements one of them for one backend.

Providers raise `bindingd.errors.BindingdError` for every failure they can name (the service
adds the binding and env to the message) and never see gRPC types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bindingd.domain.objects import BodyChunk, Conditional, HttpMetadata, ObjectInfo, PutOptions, RangeSpec
from bindingd.domain.queue import OutgoingMessage, Retry


@runtime_checkable
class Provider(Protocol):
    async def start(self) -> None:
        """Open files or pools. Must not wait on a remote backend: readiness never does."""

    async def close(self) -> None:
        """Release everything; in-flight calls have finished or been cancelled."""

    async def check(self) -> str:
        """Probe the backend once (reachable, authenticated); return a short detail or raise."""


@dataclass(frozen=True)
class KVRecord:
    key: str
    value: bytes
    # JSON text as given at put time, or None.
    metadata_json: str | None
    # Seconds since the epoch, or None for a key that never expires.
    expiration: int | None


@dataclass(frozen=True)
class KVKeyInfo:
    name: str
    expiration: int | None
    metadata_json: str | None


@runtime_checkable
class KVProvider(Provider, Protocol):
    """Workers KV storage. Limits are checked by the service before a provider is called.

    `now` is passed in (seconds since the epoch) so that every provider treats a key whose
    expiration is <= now as absent, whatever its backend's own clock and cleanup do.
    """

    async def get(self, key: str, now: float) -> KVRecord | None: ...

    async def get_many(self, keys: list[str], now: float, max_bytes: int) -> list[KVRecord | None]:
        """The records of `keys`, in the same order; None where absent or expired. When the
        values add up to more than `max_bytes`, raise `bindingd.kv.bulk_too_large()` without
        holding them all."""

    async def put(
        self, key: str, value: bytes, expiration: int | None, metadata_json: str | None
    ) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def list(
        self, prefix: str, after: str | None, limit: int, now: float
    ) -> tuple[list[KVKeyInfo], bool]:
        """Up to `limit` live keys starting with `prefix` and sorting after `after` (by UTF-8
        bytes), in order; the bool says whether more keys follow."""


@dataclass(frozen=True)
class ObjectRead:
    """An object found by a get: its metadata, the bytes returned, and the body.

    `body` is None when `only_if` was not met (R2 then returns the metadata alone). The body is
    an async generator of chunks of at most `bindingd.objects.CHUNK_BYTES`; the caller closes it.
    """

    info: ObjectInfo
    offset: int
    length: int
    body: AsyncIterator[bytes] | None


@dataclass(frozen=True)
class ObjectListing:
    objects: list[ObjectInfo]
    delimited_prefixes: list[str]
    truncated: bool
    # Set when truncated: what the next list call passes as its cursor.
    cursor: str


@runtime_checkable
class ObjectsProvider(Provider, Protocol):
    """An R2 bucket. Keys, limits and ranges are checked by the service and `bindingd.objects`.

    Bodies come and go as async iterators of chunks: a provider never holds a whole object. A
    put or part whose body iterator fails (the client went away) leaves nothing visible.
    """

    async def head(self, key: str) -> ObjectInfo | None: ...

    async def get(self, key: str, range: RangeSpec | None, only_if: Conditional | None) -> ObjectRead | None:
        """None when the key does not exist; ranges are resolved with `objects.resolve_range`."""

    async def put(self, key: str, body: AsyncIterator[BodyChunk], options: PutOptions) -> ObjectInfo | None:
        """The stored object, or None when `options.only_if` was not met (nothing stored)."""

    async def delete(self, keys: list[str]) -> None: ...

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
    ) -> ObjectListing: ...

    async def create_multipart_upload(
        self, key: str, http_metadata: HttpMetadata, custom_metadata: dict[str, str]
    ) -> str:
        """A new upload id."""

    async def check_put(self, options: PutOptions) -> None:
        """Raise INVALID_ARGUMENT for metadata this backend cannot store. Called before a put's
        body is received: a refusal while the body flows would reach the client as INTERNAL."""

    async def check_upload(self, key: str, upload_id: str) -> None:
        """Raise `objects.no_such_upload` unless `upload_id` is an upload of `key` in progress.
        Called before a part's body is received, so a stale id fails before any byte flows."""

    async def upload_part(
        self, key: str, upload_id: str, part_number: int, body: AsyncIterator[BodyChunk]
    ) -> str:
        """The part's etag. Uploading a part number again replaces it."""

    async def complete_multipart_upload(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo:
        """Join `parts` (number, etag) in number order into the object."""

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None: ...


@dataclass(frozen=True)
class SqlMeta:
    """D1's meta of one statement; what a backend cannot tell stays 0."""

    duration: float = 0.0
    changes: int = 0
    last_row_id: int = 0
    changed_db: bool = False
    rows_read: int = 0
    rows_written: int = 0
    size_after: int | None = None


@dataclass(frozen=True)
class SqlResult:
    """A statement's whole answer (batch results, which D1 returns whole)."""

    columns: list[str]
    rows: list[tuple[object, ...]]
    meta: SqlMeta


@dataclass(frozen=True)
class SqlStatement:
    sql: str
    params: list[object]


@dataclass(frozen=True)
class SqlAccess:
    """How a call may use the database: `read_only` runs it in a read-only transaction (the
    backend refuses writes), `timeout` is the statement timeout in seconds."""

    read_only: bool
    timeout: float


@runtime_checkable
class SqlProvider(Provider, Protocol):
    """A D1 database. Values in and out are those of `bindingd.sql.Value`; providers translate
    placeholders with `bindingd.sql.translate` and map every backend failure to the error table
    (SQL_ERROR with the backend's message for the caller's SQL; PERMISSION_DENIED when the
    read-only transaction refused a write; BACKEND_TIMEOUT once the statement was cancelled on
    the server)."""

    def query(self, statement: SqlStatement, access: SqlAccess) -> AsyncIterator[object]:
        """Yield the column names (a list of str), then pages of rows (lists of tuples, at most
        `bindingd.sql.PAGE_ROWS` each), then the SqlMeta. Closing the iterator early cancels the
        statement on the server."""

    async def batch(self, statements: list[SqlStatement], access: SqlAccess) -> list[SqlResult]:
        """Every statement in one transaction; on a failure roll back and raise
        `bindingd.sql.batch_error(index, err)`."""

    async def exec(self, statements: list[str], access: SqlAccess) -> None:
        """A script's statements (already split), in one transaction, like `batch`."""


@dataclass(frozen=True)
class QueueDelivery:
    """One delivery of a queue message, leased to the consumer that received it."""

    id: str
    timestamp_ms: int
    body: bytes
    content_type: str
    # 1 on the first delivery; one more for every retry or expired lease before this one.
    attempts: int
    lease_id: str


@dataclass(frozen=True)
class QueueSettled:
    acked: int
    retried: int
    # Lease ids no longer held (expired or unknown): nothing was done for them.
    expired: list[str]


@runtime_checkable
class QueueProvider(Provider, Protocol):
    """A Cloudflare Queue. Limits are checked by the service before a provider is called.

    Delivery is at-least-once: a message is stored durably before `send` returns, is removed
    only by an ack, and a delivery neither acked nor retried within its visibility timeout is
    delivered again with attempts + 1. A message whose delivery failed with
    `bindingd.queue.exhausted(attempts, max_retries)` true goes to the binding's dead-letter
    queue if it has one, else it is dropped and logged.
    """

    async def send(self, messages: list[OutgoingMessage]) -> None:
        """Store every message (each after its own delay); all of them or, on failure, raise."""

    async def receive(self, max_messages: int, visibility_s: float, wait_s: float) -> list[QueueDelivery]:
        """Up to `max_messages` deliverable messages, leased for `visibility_s` seconds, waiting
        up to `wait_s` for the first one; [] when none came."""

    async def settle(self, acks: list[str], retries: list[Retry]) -> QueueSettled:
        """Ack (remove) and retry (deliver again after the delay) leased messages."""
