"""Object rules that hold whatever the backend, as R2 has them: limits, ranges, conditions, list cursors.

Services and providers call these so that every provider answers the same: a broken limit is
INVALID_ARGUMENT with the limit in the message, a range or an `only_if` is resolved the same
way for a file on disk and for an S3 object.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from bindingd.domain.cursors import ListCursor
from bindingd.errors import BindingdError, invalid_argument
from bindingd.providers.base import Provider

MAX_KEY_BYTES = 1024
# R2: the metadata of an object (custom keys and values) is at most 8192 bytes.
MAX_CUSTOM_METADATA_BYTES = 8192
# R2: a single put is at most 5 GiB minus 5 MiB; bigger objects need a multipart upload.
MAX_PUT_BYTES = 5 * 1024**3 - 5 * 1024**2
MIN_PART_BYTES = 5 * 1024**2
MAX_PART_BYTES = 5 * 1024**3
MAX_PART_NUMBER = 10000
MAX_DELETE_KEYS = 1000
# The body travels in gRPC messages of at most this many bytes, in both directions: the
# client's `bindingd_client.wire.CHUNK_BYTES` (a unit test checks; domain/ imports no protobuf).
CHUNK_BYTES = 1024 * 1024
# A chunk of a body being put: bytes, or a view into the message it arrived in (not copied).
BodyChunk = bytes | memoryview
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256", "sha384", "sha512")
DIGEST_SIZES = {"md5": 16, "sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


@dataclass(frozen=True)
class HttpMetadata:
    content_type: str | None = None
    content_language: str | None = None
    content_disposition: str | None = None
    content_encoding: str | None = None
    cache_control: str | None = None
    # Milliseconds since the epoch.
    cache_expiry: int | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """What R2 returns for an object (its R2Object), without a body."""

    key: str
    version: str
    size: int
    etag: str
    # Milliseconds since the epoch.
    uploaded: int
    http_metadata: HttpMetadata = field(default_factory=HttpMetadata)
    custom_metadata: dict[str, str] = field(default_factory=dict)
    # Raw digests by algorithm name (see CHECKSUM_ALGORITHMS).
    checksums: dict[str, bytes] = field(default_factory=dict)
    storage_class: str = "Standard"


@dataclass(frozen=True)
class Conditional:
    etag_matches: str | None = None
    etag_does_not_match: str | None = None
    uploaded_before: int | None = None
    uploaded_after: int | None = None


@dataclass(frozen=True)
class RangeSpec:
    """An R2Range as asked: {offset, length?} | {offset?, length} | {suffix}."""

    offset: int | None = None
    length: int | None = None
    suffix: int | None = None


@dataclass(frozen=True)
class PutOptions:
    http_metadata: HttpMetadata = field(default_factory=HttpMetadata)
    custom_metadata: dict[str, str] = field(default_factory=dict)
    only_if: Conditional | None = None
    # Expected raw digests; the provider verifies them before anything becomes visible.
    checksums: dict[str, bytes] = field(default_factory=dict)


def check_key(key: str) -> None:
    if key == "":
        raise invalid_argument("object key is empty; keys need at least one character")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise invalid_argument(f"object key is {size} bytes; the limit is {MAX_KEY_BYTES} bytes")


def check_custom_metadata(metadata: dict[str, str]) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if size > MAX_CUSTOM_METADATA_BYTES:
        raise invalid_argument(
            f"custom metadata is {size} bytes (keys and values); the limit is "
            f"{MAX_CUSTOM_METADATA_BYTES} bytes"
        )
    for name in metadata:
        if name == "":
            raise invalid_argument("a custom metadata name is empty")


def check_http_metadata(http: HttpMetadata) -> None:
    """R2's http metadata are HTTP header values: no line breaks or NUL, whatever the provider."""
    for name, value in vars(http).items():
        if isinstance(value, str) and any(ch in value for ch in "\r\n\0"):
            raise invalid_argument(
                f"http metadata {name} {value!r} holds a line break or NUL, which an HTTP header "
                "cannot hold; remove it"
            )


def check_checksums(checksums: dict[str, bytes]) -> None:
    for name, digest in checksums.items():
        if len(digest) != DIGEST_SIZES[name]:
            raise invalid_argument(
                f"the {name} checksum is {len(digest)} bytes; a {name} digest is {DIGEST_SIZES[name]} bytes "
                "(pass the raw digest, or its hex string in the client)"
            )


def check_delete_keys(keys: list[str]) -> None:
    if len(keys) > MAX_DELETE_KEYS:
        raise invalid_argument(f"delete of {len(keys)} keys; the limit is {MAX_DELETE_KEYS} keys per call")
    for key in keys:
        check_key(key)


def check_part_number(part_number: int) -> None:
    if not 1 <= part_number <= MAX_PART_NUMBER:
        raise invalid_argument(f"part number is {part_number}; it must be between 1 and {MAX_PART_NUMBER}")


def check_parts(parts: list[tuple[int, str]]) -> None:
    """The parts named by a complete call: at least one, each number once."""
    if not parts:
        raise invalid_argument("complete() needs at least one uploaded part")
    numbers = [n for n, _ in parts]
    if len(set(numbers)) != len(numbers):
        raise invalid_argument("complete() names a part number more than once")
    for number in numbers:
        check_part_number(number)


def check_part_sizes(sizes: list[tuple[int, int]]) -> None:
    """R2's rule for the parts of a complete, (number, size) in number order: every part but
    the last at least 5 MiB and all of the same size; the last no larger than the others."""
    if len(sizes) < 2:
        return
    for number, size in sizes[:-1]:
        if size < MIN_PART_BYTES:
            raise part_too_small(number, size)
    first_number, part_size = sizes[0]
    for number, size in sizes[1:]:
        last = number == sizes[-1][0]
        if (size > part_size) if last else (size != part_size):
            rule = "no larger than" if last else "the same size as"
            raise invalid_argument(
                f"part {number} is {size} bytes and part {first_number} is {part_size} bytes; "
                f"every part but the last must be the same size, and the last {rule} the others "
                f"(part {number} must be {rule} {part_size} bytes)"
            )


def part_too_small(part_number: int, size: int) -> BindingdError:
    return invalid_argument(
        f"part {part_number} is {size} bytes; every part but the last must be at least "
        f"{MIN_PART_BYTES // (1024 * 1024)} MiB ({MIN_PART_BYTES} bytes)"
    )


def no_such_upload(upload_id: str) -> BindingdError:
    return invalid_argument(
        f'multipart upload "{upload_id}" does not exist (unknown, completed or aborted); '
        "create a new one with create_multipart_upload()"
    )


def put_too_large() -> BindingdError:
    return invalid_argument(
        f"the object is over {MAX_PUT_BYTES} bytes (5 GiB - 5 MiB), the limit of one put; "
        "use a multipart upload for bigger objects"
    )


def part_too_large(part_number: int) -> BindingdError:
    return invalid_argument(f"part {part_number} is over {MAX_PART_BYTES} bytes (5 GiB), the limit of a part")


def checksum_mismatch(name: str, expected: bytes, actual: bytes) -> BindingdError:
    return invalid_argument(
        f"the {name} checksum given ({expected.hex()}) does not match the bytes received "
        f"({actual.hex()}); nothing was stored"
    )


class Digests:
    """The md5 of every body (it is the etag) and the other digests the caller asked to verify."""

    def __init__(self, verify: dict[str, bytes]) -> None:
        self.expected = verify
        self.hashes = {"md5": hashlib.md5()}
        for name in verify:
            if name != "md5":
                self.hashes[name] = hashlib.new(name)
        self.size = 0

    def update(self, chunk: BodyChunk) -> None:
        self.size += len(chunk)
        for h in self.hashes.values():
            h.update(chunk)

    def verify(self) -> dict[str, bytes]:
        """The digests to store: md5 and each verified one. Raises on the first mismatch."""
        actual = {name: h.digest() for name, h in self.hashes.items()}
        for name, expected in self.expected.items():
            if actual[name] != expected:
                raise checksum_mismatch(name, expected, actual[name])
        return actual


def multipart_etag(part_etags: list[str]) -> str:
    """S3's and R2's etag of a multipart object: md5 of the parts' md5s, dash, part count."""
    joined = b"".join(bytes.fromhex(e) for e in part_etags)
    return f"{hashlib.md5(joined).hexdigest()}-{len(part_etags)}"


def resolve_range(spec: RangeSpec | None, size: int) -> tuple[int, int]:
    """(offset, length) of the bytes a get returns, clamped to the object as R2 does; a range
    past the end or of no bytes is INVALID_ARGUMENT."""
    if spec is None:
        return 0, size
    for name in ("offset", "length", "suffix"):
        value = getattr(spec, name)
        if value is not None and value < 0:
            raise invalid_argument(f"range {name} is {value}; it must not be negative")
    if spec.suffix is not None:
        if spec.offset is not None or spec.length is not None:
            raise invalid_argument("a range has either suffix, or offset and/or length, not both")
        length = _some_bytes(min(spec.suffix, size), size)
        return size - length, length
    if spec.offset is None and spec.length is None:
        raise invalid_argument("a range needs an offset, a length or a suffix")
    offset = spec.offset or 0
    if offset > size:
        raise invalid_argument(
            f"range offset {offset} is past the end of the object ({size} bytes); "
            "the range is not satisfiable"
        )
    length = size - offset if spec.length is None else min(spec.length, size - offset)
    return offset, _some_bytes(length, size)


def _some_bytes(length: int, size: int) -> int:
    """R2 answers a range that selects no byte (offset at the end, length 0, suffix 0, any range
    of an empty object) with "range not satisfiable", as workerd does."""
    if length == 0:
        raise invalid_argument(
            f"the range selects no bytes of the object ({size} bytes); the range is not satisfiable"
        )
    return length


def _etag_in(value: str, etag: str, *, weak: bool) -> bool:
    """Whether the etag list `value` (HTTP's `*`, `"tag"`, `W/"tag"`, comma separated; R2 also
    takes a bare tag) names `etag`. If-Match compares strongly, so a weak entry never matches
    there; If-None-Match compares weakly (RFC 9110 8.8.3.2), as R2 and workerd do."""
    for entry in value.split(","):
        entry = entry.strip()
        if entry == "*":
            return True
        is_weak = entry.startswith("W/")
        if entry.removeprefix("W/").strip('"') == etag and (weak or not is_weak):
            return True
    return False


def condition_met(cond: Conditional | None, info: ObjectInfo | None) -> bool:
    """Whether `only_if` allows the operation on `info` (None: the key does not exist).

    HTTP's rules (RFC 9110 13.2.2), which R2 follows: an etag condition takes precedence over
    the date condition of the same direction. A missing key meets no etag match and no
    uploaded-after (there is no upload to be after), and meets the other two: R2 stores nothing
    on a put with `etag_matches` or `uploaded_after` for a new key, and creates it otherwise.
    """
    if cond is None:
        return True
    if info is None:
        return cond.etag_matches is None and cond.uploaded_after is None
    if cond.etag_matches is not None:
        if not _etag_in(cond.etag_matches, info.etag, weak=False):
            return False
    elif cond.uploaded_before is not None and not info.uploaded < cond.uploaded_before:
        return False
    if cond.etag_does_not_match is not None:
        if _etag_in(cond.etag_does_not_match, info.etag, weak=True):
            return False
    elif cond.uploaded_after is not None and not info.uploaded > cond.uploaded_after:
        return False
    return True


def delimited(key: str, prefix: str, delimiter: str) -> str | None:
    """The delimited prefix `key` rolls up into, or None when it is listed itself."""
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    return None if at < 0 else key[: at + len(delimiter)]


# An opaque cursor for local listings: the last key (or delimited prefix) returned.
CURSOR = ListCursor(
    ensure_ascii=False,
    invalid="list cursor is not valid for this list; pass the cursor of the previous list() call "
    "with the same prefix, or none to start over",
)
encode_cursor = CURSOR.encode
decode_cursor = CURSOR.decode


# The contract of an objects provider: what it returns, and the Protocol it implements.


@dataclass(frozen=True)
class ObjectRead:
    """An object found by a get: its metadata, the bytes returned, and the body.

    `body` is None when `only_if` was not met (R2 then returns the metadata alone). The body is
    an async generator of chunks of at most `CHUNK_BYTES`; the caller closes it.
    """

    info: ObjectInfo
    offset: int
    length: int
    body: AsyncGenerator[bytes, None] | None


@dataclass(frozen=True)
class ObjectListing:
    objects: list[ObjectInfo]
    delimited_prefixes: list[str]
    truncated: bool
    # Set when truncated: what the next list call passes as its cursor.
    cursor: str


@runtime_checkable
class ObjectsProvider(Provider, Protocol):
    """An R2 bucket. Keys, limits and ranges are checked by the service and by this module.

    Bodies come and go as async iterators of chunks: a provider never holds a whole object. A
    put or part whose body iterator fails (the client went away) leaves nothing visible.
    """

    async def head(self, key: str) -> ObjectInfo | None: ...

    async def get(self, key: str, range: RangeSpec | None, only_if: Conditional | None) -> ObjectRead | None:
        """None when the key does not exist; ranges are resolved with `resolve_range`."""

    async def put(self, key: str, body: AsyncIterator[BodyChunk], options: PutOptions) -> ObjectInfo | None:
        """The stored object, or None when `options.only_if` was not met (nothing stored)."""

    async def delete(self, keys: list[str]) -> None: ...

    async def create_multipart_upload(
        self, key: str, http_metadata: HttpMetadata, custom_metadata: dict[str, str]
    ) -> str:
        """A new upload id."""

    async def check_put(self, options: PutOptions) -> None:
        """Raise INVALID_ARGUMENT for metadata this backend cannot store. Called before a put's
        body is received: a refusal while the body flows would reach the client as INTERNAL."""

    async def check_upload(self, key: str, upload_id: str) -> None:
        """Raise `no_such_upload` unless `upload_id` is an upload of `key` in progress.
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

    # Last: below it, `list[...]` in an annotation would name this method.
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
