"""Object bindings, mirroring the Workers ``R2Bucket`` in snake_case.

Bodies stream both ways in chunks of at most 1 MiB: ``put`` sends bytes, str, a file object or
an (async) iterator of bytes as it reads them, and a get's ``body`` yields chunks as they arrive,
so neither this process nor the daemon holds a whole object unless ``bytes()`` is asked for.
:class:`R2Bucket` is for asyncio code, :class:`R2BucketSync` for blocking code; both build
their requests with the same pure functions.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._transport import Call
from .proto import objects_pb2
from .wire import CHUNK_BYTES, CHUNK_HEAD_BYTES, HTTP_FIELDS, chunk_head, chunk_message, chunk_view

__all__ = [
    "R2Bucket",
    "R2BucketSync",
    "R2Checksums",
    "R2MultipartUpload",
    "R2MultipartUploadSync",
    "R2Object",
    "R2ObjectBody",
    "R2ObjectBodySync",
    "R2Objects",
    "R2UploadedPart",
]

_CAMEL = {
    "contentType": "content_type",
    "contentLanguage": "content_language",
    "contentDisposition": "content_disposition",
    "contentEncoding": "content_encoding",
    "cacheControl": "cache_control",
    "cacheExpiry": "cache_expiry",
}
_INCLUDE = {
    "http_metadata": "http",
    "httpMetadata": "http",
    "custom_metadata": "custom",
    "customMetadata": "custom",
}

# --- result types --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class R2Checksums:
    """Raw digests; ``md5`` is set for every object not made by a multipart upload."""

    md5: bytes | None = None
    sha1: bytes | None = None
    sha256: bytes | None = None
    sha384: bytes | None = None
    sha512: bytes | None = None


@dataclass(frozen=True, slots=True)
class R2Object:
    """An object's metadata (what ``head``, ``put`` and ``list`` return)."""

    key: str
    version: str
    size: int
    etag: str
    http_etag: str
    uploaded: dt.datetime
    checksums: R2Checksums
    http_metadata: dict[str, Any] = field(default_factory=dict)
    custom_metadata: dict[str, str] = field(default_factory=dict)
    # {"offset": ..., "length": ...} of the bytes a get returned; None otherwise.
    range: dict[str, int] | None = None
    storage_class: str = "Standard"


@dataclass(frozen=True, slots=True)
class R2Objects:
    """One ``list`` page; ``cursor`` is None unless ``truncated``."""

    objects: list[R2Object]
    truncated: bool
    cursor: str | None
    delimited_prefixes: list[str]


@dataclass(frozen=True, slots=True)
class R2UploadedPart:
    part_number: int
    etag: str


class _BodyBase:
    """What both body flavours share: the object's fields as attributes, one read only."""

    def __init__(self, obj: R2Object) -> None:
        self.object = obj
        self.body_used = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "object":
            raise AttributeError(name)
        return getattr(self.object, name)

    def _use(self) -> None:
        if self.body_used:
            raise RuntimeError(f'the body of "{self.object.key}" was already read; get the object again')
        self.body_used = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.object.key!r} {self.object.size} bytes>"


class R2ObjectBody(_BodyBase):
    """An object with its body: ``async for chunk in body``, or ``bytes()`` / ``text()`` / ``json()``."""

    def __init__(self, obj: R2Object, stream: AsyncIterator[Any]) -> None:
        super().__init__(obj)
        self._stream = stream

    @property
    def body(self) -> AsyncIterator[bytes]:
        return self.__aiter__()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._use()
        try:
            async for raw in self._stream:
                yield get_chunk(raw)
        finally:
            await self._stream.aclose()  # type: ignore[attr-defined]

    async def bytes(self) -> bytes:
        return b"".join([chunk async for chunk in self.__aiter__()])

    async def array_buffer(self) -> bytes:
        return await self.bytes()

    async def text(self) -> str:
        return (await self.bytes()).decode("utf-8", errors="replace")

    async def json(self) -> Any:
        return json.loads(await self.text())

    async def cancel(self) -> None:
        """Stop the transfer without reading the rest (frees the daemon's stream)."""
        self.body_used = True
        await self._stream.aclose()  # type: ignore[attr-defined]


class R2ObjectBodySync(_BodyBase):
    """The blocking flavour of :class:`R2ObjectBody`: ``for chunk in body``."""

    def __init__(self, obj: R2Object, stream: Iterator[Any]) -> None:
        super().__init__(obj)
        self._stream = stream

    @property
    def body(self) -> Iterator[bytes]:
        return self.__iter__()

    def __iter__(self) -> Iterator[bytes]:
        self._use()
        try:
            for raw in self._stream:
                yield get_chunk(raw)
        finally:
            self._stream.close()  # type: ignore[attr-defined]

    def bytes(self) -> bytes:
        return b"".join(list(self.__iter__()))

    def text(self) -> str:
        return self.bytes().decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.text())

    def cancel(self) -> None:
        self.body_used = True
        self._stream.close()  # type: ignore[attr-defined]


# --- pure encoding / decoding --------------------------------------------------------------------


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"an object key must be str, not {type(key).__name__}")
    return key


def _ms(name: str, value: Any) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"{name} must be a datetime or milliseconds since the epoch, not {type(value).__name__}")


def _uploaded(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def encode_http_metadata(http_metadata: Mapping[str, Any] | None) -> objects_pb2.ObjectHttpMetadata:
    message = objects_pb2.ObjectHttpMetadata()
    for name, value in (http_metadata or {}).items():
        name = _CAMEL.get(name, name)
        if name not in HTTP_FIELDS:
            raise ValueError(f"unknown http_metadata field {name!r} (known: {', '.join(HTTP_FIELDS)})")
        if value is None:
            continue
        if name == "cache_expiry":
            setattr(message, name, _ms("cache_expiry", value))
        else:
            setattr(message, name, str(value))
    return message


def decode_http_metadata(message: objects_pb2.ObjectHttpMetadata) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in HTTP_FIELDS:
        if message.HasField(name):
            value = getattr(message, name)
            found[name] = _uploaded(value) if name == "cache_expiry" else value
    return found


def encode_custom_metadata(custom_metadata: Mapping[str, Any] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in (custom_metadata or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("custom_metadata maps str names to str values")
        found[name] = value
    return found


def encode_conditional(only_if: Mapping[str, Any] | None) -> objects_pb2.ObjectConditional | None:
    if only_if is None:
        return None
    message = objects_pb2.ObjectConditional()
    for name, value in only_if.items():
        name = {
            "etagMatches": "etag_matches",
            "etagDoesNotMatch": "etag_does_not_match",
            "uploadedBefore": "uploaded_before",
            "uploadedAfter": "uploaded_after",
        }.get(name, name)
        if value is None:
            continue
        if name in ("etag_matches", "etag_does_not_match"):
            setattr(message, name, value if isinstance(value, str) else ",".join(value))
        elif name in ("uploaded_before", "uploaded_after"):
            setattr(message, name, _ms(name, value))
        else:
            raise ValueError(f"unknown only_if condition {name!r}")
    return message


def encode_range(range: Mapping[str, int] | None) -> objects_pb2.ObjectRangeRequest | None:
    if range is None:
        return None
    unknown = set(range) - {"offset", "length", "suffix"}
    if unknown:
        raise ValueError(f"a range has offset, length or suffix, not {', '.join(sorted(unknown))}")
    return objects_pb2.ObjectRangeRequest(**{k: int(v) for k, v in range.items() if v is not None})


def encode_checksums(
    md5: Any, sha1: Any, sha256: Any, sha384: Any = None, sha512: Any = None
) -> objects_pb2.ObjectChecksums:
    message = objects_pb2.ObjectChecksums()
    given = (("md5", md5), ("sha1", sha1), ("sha256", sha256), ("sha384", sha384), ("sha512", sha512))
    for name, value in given:
        if value is None:
            continue
        if isinstance(value, str):
            try:
                value = bytes.fromhex(value)
            except ValueError:
                raise ValueError(f"{name} must be the raw digest or its hex string") from None
        setattr(message, name, bytes(value))
    return message


def decode_object(meta: objects_pb2.ObjectMeta) -> R2Object:
    checksums = meta.checksums
    return R2Object(
        key=meta.key,
        version=meta.version,
        size=meta.size,
        etag=meta.etag,
        http_etag=meta.http_etag,
        uploaded=_uploaded(meta.uploaded),
        checksums=R2Checksums(
            md5=checksums.md5 if checksums.HasField("md5") else None,
            sha1=checksums.sha1 if checksums.HasField("sha1") else None,
            sha256=checksums.sha256 if checksums.HasField("sha256") else None,
            sha384=checksums.sha384 if checksums.HasField("sha384") else None,
            sha512=checksums.sha512 if checksums.HasField("sha512") else None,
        ),
        http_metadata=decode_http_metadata(meta.http_metadata),
        custom_metadata=dict(meta.custom_metadata),
        range={"offset": meta.range.offset, "length": meta.range.length} if meta.HasField("range") else None,
        storage_class=meta.storage_class,
    )


def _slices(data: bytes | bytearray | memoryview) -> Iterator[bytes | memoryview]:
    """`data` in pieces of at most CHUNK_BYTES: views into it, not copies."""
    if isinstance(data, bytes) and len(data) <= CHUNK_BYTES:
        yield data  # the common case: a file read of one chunk
        return
    view = memoryview(data)
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = memoryview(view.tobytes())  # lengths below count bytes
    for start in range(0, len(view), CHUNK_BYTES):
        yield view[start : start + CHUNK_BYTES]


def _as_bytes(chunk: Any) -> bytes | memoryview:
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    if isinstance(chunk, bytes | bytearray | memoryview):
        return chunk
    raise TypeError(f"a body chunk must be bytes, not {type(chunk).__name__}")


def body_chunks(value: Any) -> Iterator[bytes | memoryview]:
    """A sync put value as chunks: None, bytes-like, str, a binary file object, or an iterable of bytes."""
    if value is None:
        return
    if isinstance(value, str | bytes | bytearray | memoryview):
        yield from _slices(_as_bytes(value))
    elif hasattr(value, "read"):
        while chunk := value.read(CHUNK_BYTES):
            yield from _slices(_as_bytes(chunk))
    elif hasattr(value, "__aiter__"):
        raise TypeError("an async iterable body needs the asyncio client (connect(), not connect_sync())")
    elif isinstance(value, Iterable):
        for chunk in value:
            yield from _slices(_as_bytes(chunk))
    else:
        raise TypeError(
            "an object body must be bytes, str, a file object or an iterator of bytes, "
            f"not {type(value).__name__}"
        )


async def body_chunks_async(value: Any) -> AsyncIterator[bytes | memoryview]:
    """Like :func:`body_chunks`, also reading an async iterator of bytes as it yields."""
    if hasattr(value, "__aiter__"):
        async for chunk in value:
            for piece in _slices(_as_bytes(chunk)):
                yield piece
    else:
        for piece in body_chunks(value):
            yield piece


def _file_messages(f: io.BufferedIOBase | io.RawIOBase) -> Iterator[bytes]:
    """A binary file's bytes as serialized chunk requests, each read into one reused buffer
    just after room for its head: the request is then one copy of the file's bytes."""
    buffer = memoryview(bytearray(CHUNK_HEAD_BYTES + CHUNK_BYTES))
    while read := f.readinto(buffer[CHUNK_HEAD_BYTES:]):
        head = chunk_head(read)
        start = CHUNK_HEAD_BYTES - len(head)
        buffer[start:CHUNK_HEAD_BYTES] = head
        yield bytes(buffer[start : CHUNK_HEAD_BYTES + read])


def get_chunk(raw: bytes) -> bytes:
    """The body chunk of a serialized get response. A plain chunk message (what the daemon
    sends) is cut out of it: one copy, where decoding and reading the field make two."""
    view = chunk_view(raw)
    if view is not None:
        return bytes(view)
    return objects_pb2.ObjectsGetResponse.FromString(raw).chunk


def body_messages(value: Any) -> Iterator[bytes]:
    """A sync put value (see :func:`body_chunks`) as serialized chunk requests."""
    if isinstance(value, io.BufferedIOBase | io.RawIOBase):
        yield from _file_messages(value)
    else:
        for chunk in body_chunks(value):
            yield chunk_message(chunk)


async def body_messages_async(value: Any) -> AsyncIterator[bytes]:
    """Like :func:`body_messages`, also reading an async iterator of bytes as it yields."""
    if hasattr(value, "__aiter__"):
        async for chunk in body_chunks_async(value):
            yield chunk_message(chunk)
    else:
        for message in body_messages(value):
            yield message


def put_header(
    binding: str,
    key: str,
    *,
    http_metadata: Mapping[str, Any] | None,
    custom_metadata: Mapping[str, Any] | None,
    only_if: Mapping[str, Any] | None,
    md5: Any,
    sha1: Any,
    sha256: Any,
    sha384: Any = None,
    sha512: Any = None,
) -> objects_pb2.ObjectsPutRequest:
    header = objects_pb2.ObjectsPutHeader(
        binding=binding,
        key=_check_key(key),
        http_metadata=encode_http_metadata(http_metadata),
        custom_metadata=encode_custom_metadata(custom_metadata),
        checksums=encode_checksums(md5, sha1, sha256, sha384, sha512),
    )
    conditional = encode_conditional(only_if)
    if conditional is not None:
        header.only_if.CopyFrom(conditional)
    return objects_pb2.ObjectsPutRequest(header=header)


def parse_put(response: objects_pb2.ObjectsPutResponse) -> R2Object | None:
    return decode_object(response.object) if response.stored else None


def get_request(
    binding: str, key: str, range: Mapping[str, int] | None, only_if: Mapping[str, Any] | None
) -> objects_pb2.ObjectsGetRequest:
    request = objects_pb2.ObjectsGetRequest(binding=binding, key=_check_key(key))
    encoded_range = encode_range(range)
    if encoded_range is not None:
        request.range.CopyFrom(encoded_range)
    conditional = encode_conditional(only_if)
    if conditional is not None:
        request.only_if.CopyFrom(conditional)
    return request


def build_head(binding: str, key: str) -> Call[R2Object | None]:
    def parse(response: objects_pb2.ObjectsHeadResponse) -> R2Object | None:
        return decode_object(response.object) if response.found else None

    return Call("Objects.Head", objects_pb2.ObjectsHeadRequest(binding=binding, key=_check_key(key)), parse)


def build_delete(binding: str, keys: str | Sequence[str]) -> Call[None]:
    names = [keys] if isinstance(keys, str) else [_check_key(k) for k in keys]
    return Call(
        "Objects.Delete", objects_pb2.ObjectsDeleteRequest(binding=binding, keys=names), lambda r: None
    )


def build_list(
    binding: str,
    *,
    prefix: str | None,
    delimiter: str | None,
    cursor: str | None,
    start_after: str | None,
    limit: int | None,
    include: Sequence[str] | None,
) -> Call[R2Objects]:
    wanted = set()
    for name in include or ():
        if name not in _INCLUDE:
            raise ValueError(f'include takes "http_metadata" and "custom_metadata", not {name!r}')
        wanted.add(_INCLUDE[name])
    request = objects_pb2.ObjectsListRequest(
        binding=binding,
        prefix=prefix or "",
        delimiter=delimiter or "",
        cursor=cursor or "",
        start_after=start_after or "",
        include_http_metadata="http" in wanted,
        include_custom_metadata="custom" in wanted,
    )
    if limit is not None:
        request.limit = limit

    def parse(response: objects_pb2.ObjectsListResponse) -> R2Objects:
        return R2Objects(
            objects=[decode_object(m) for m in response.objects],
            truncated=response.truncated,
            cursor=response.cursor or None,
            delimited_prefixes=list(response.delimited_prefixes),
        )

    return Call("Objects.List", request, parse)


def build_create_multipart(
    binding: str, key: str, http_metadata: Mapping[str, Any] | None, custom_metadata: Mapping[str, Any] | None
) -> Call[str]:
    request = objects_pb2.ObjectsCreateMultipartRequest(
        binding=binding,
        key=_check_key(key),
        http_metadata=encode_http_metadata(http_metadata),
        custom_metadata=encode_custom_metadata(custom_metadata),
    )
    return Call("Objects.CreateMultipartUpload", request, lambda r: r.upload_id)


def part_header(
    binding: str, key: str, upload_id: str, part_number: int
) -> objects_pb2.ObjectsUploadPartRequest:
    if isinstance(part_number, bool) or not isinstance(part_number, int):
        raise TypeError("part_number must be an int")
    header = objects_pb2.ObjectsUploadPartHeader(
        binding=binding, key=key, upload_id=upload_id, part_number=part_number
    )
    return objects_pb2.ObjectsUploadPartRequest(header=header)


def build_complete(binding: str, key: str, upload_id: str, parts: Sequence[Any]) -> Call[R2Object]:
    uploaded = []
    for part in parts:
        if isinstance(part, Mapping):
            number, etag = part.get("part_number", part.get("partNumber")), part["etag"]
        else:
            number, etag = part.part_number, part.etag
        uploaded.append(objects_pb2.ObjectsUploadedPart(part_number=number, etag=etag))
    request = objects_pb2.ObjectsCompleteMultipartRequest(
        binding=binding, key=key, upload_id=upload_id, parts=uploaded
    )
    return Call("Objects.CompleteMultipartUpload", request, lambda r: decode_object(r.object))


def build_abort(binding: str, key: str, upload_id: str) -> Call[None]:
    request = objects_pb2.ObjectsAbortMultipartRequest(binding=binding, key=key, upload_id=upload_id)
    return Call("Objects.AbortMultipartUpload", request, lambda r: None)


# --- the bindings --------------------------------------------------------------------------------


class _BucketBase:
    def __init__(self, transport: Any, binding: str) -> None:
        self._transport = transport
        self._binding = binding

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._binding}>"


class R2MultipartUpload:
    """A multipart upload in progress (from ``create_multipart_upload`` or ``resume_multipart_upload``)."""

    def __init__(self, transport: Any, binding: str, key: str, upload_id: str) -> None:
        self._transport = transport
        self._binding = binding
        self.key = key
        self.upload_id = upload_id

    async def upload_part(self, part_number: int, value: Any) -> R2UploadedPart:
        header = part_header(self._binding, self.key, self.upload_id, part_number)

        async def requests() -> AsyncIterator[objects_pb2.ObjectsUploadPartRequest | bytes]:
            yield header
            async for message in body_messages_async(value):
                yield message

        response = await self._transport.upload("Objects.UploadPart", requests(), header_ack=True)
        return R2UploadedPart(response.part_number, response.etag)

    async def complete(self, parts: Sequence[Any]) -> R2Object:
        return await self._transport.call(build_complete(self._binding, self.key, self.upload_id, parts))

    async def abort(self) -> None:
        await self._transport.call(build_abort(self._binding, self.key, self.upload_id))


class R2Bucket(_BucketBase):
    """An objects binding for asyncio code: ``env.ASSETS_BUCKET``."""

    async def head(self, key: str) -> R2Object | None:
        return await self._transport.call(build_head(self._binding, key))

    async def get(
        self, key: str, *, range: Mapping[str, int] | None = None, only_if: Mapping[str, Any] | None = None
    ) -> R2ObjectBody | R2Object | None:
        """None if absent; the object without a body if ``only_if`` failed; else with its body."""
        request = get_request(self._binding, key, range, only_if)
        stream = self._transport.stream("Objects.Get", request, raw=True)
        try:
            first = objects_pb2.ObjectsGetResponse.FromString(await anext(stream))
        except BaseException:
            await stream.aclose()
            raise
        header = first.header
        if not header.found or header.condition_failed:
            await stream.aclose()
            return decode_object(header.object) if header.found else None
        return R2ObjectBody(decode_object(header.object), stream)

    async def put(
        self,
        key: str,
        value: Any,
        *,
        http_metadata: Mapping[str, Any] | None = None,
        custom_metadata: Mapping[str, Any] | None = None,
        only_if: Mapping[str, Any] | None = None,
        md5: Any = None,
        sha1: Any = None,
        sha256: Any = None,
        sha384: Any = None,
        sha512: Any = None,
    ) -> R2Object | None:
        """The stored object, or None when ``only_if`` was not met (nothing stored)."""
        header = put_header(
            self._binding,
            key,
            http_metadata=http_metadata,
            custom_metadata=custom_metadata,
            only_if=only_if,
            md5=md5,
            sha1=sha1,
            sha256=sha256,
            sha384=sha384,
            sha512=sha512,
        )

        async def requests() -> AsyncIterator[objects_pb2.ObjectsPutRequest | bytes]:
            yield header
            async for message in body_messages_async(value):
                yield message

        return parse_put(await self._transport.upload("Objects.Put", requests(), header_ack=True))

    async def delete(self, keys: str | Sequence[str]) -> None:
        await self._transport.call(build_delete(self._binding, keys))

    async def list(
        self,
        *,
        prefix: str | None = None,
        delimiter: str | None = None,
        cursor: str | None = None,
        start_after: str | None = None,
        limit: int | None = None,
        include: Sequence[str] | None = None,
    ) -> R2Objects:
        return await self._transport.call(
            build_list(
                self._binding,
                prefix=prefix,
                delimiter=delimiter,
                cursor=cursor,
                start_after=start_after,
                limit=limit,
                include=include,
            )
        )

    async def create_multipart_upload(
        self,
        key: str,
        *,
        http_metadata: Mapping[str, Any] | None = None,
        custom_metadata: Mapping[str, Any] | None = None,
    ) -> R2MultipartUpload:
        upload_id = await self._transport.call(
            build_create_multipart(self._binding, key, http_metadata, custom_metadata)
        )
        return R2MultipartUpload(self._transport, self._binding, key, upload_id)

    def resume_multipart_upload(self, key: str, upload_id: str) -> R2MultipartUpload:
        return R2MultipartUpload(self._transport, self._binding, _check_key(key), upload_id)


class R2MultipartUploadSync:
    def __init__(self, transport: Any, binding: str, key: str, upload_id: str) -> None:
        self._transport = transport
        self._binding = binding
        self.key = key
        self.upload_id = upload_id

    def upload_part(self, part_number: int, value: Any) -> R2UploadedPart:
        header = part_header(self._binding, self.key, self.upload_id, part_number)

        def requests() -> Iterator[objects_pb2.ObjectsUploadPartRequest | bytes]:
            yield header
            yield from body_messages(value)

        response = self._transport.upload("Objects.UploadPart", requests())
        return R2UploadedPart(response.part_number, response.etag)

    def complete(self, parts: Sequence[Any]) -> R2Object:
        return self._transport.call(build_complete(self._binding, self.key, self.upload_id, parts))

    def abort(self) -> None:
        self._transport.call(build_abort(self._binding, self.key, self.upload_id))


class R2BucketSync(_BucketBase):
    """An objects binding for blocking code (``connect_sync()``)."""

    def head(self, key: str) -> R2Object | None:
        return self._transport.call(build_head(self._binding, key))

    def get(
        self, key: str, *, range: Mapping[str, int] | None = None, only_if: Mapping[str, Any] | None = None
    ) -> R2ObjectBodySync | R2Object | None:
        request = get_request(self._binding, key, range, only_if)
        stream = self._transport.stream("Objects.Get", request, raw=True)
        try:
            first = objects_pb2.ObjectsGetResponse.FromString(next(stream))
        except BaseException:
            stream.close()
            raise
        header = first.header
        if not header.found or header.condition_failed:
            stream.close()
            return decode_object(header.object) if header.found else None
        return R2ObjectBodySync(decode_object(header.object), stream)

    def put(
        self,
        key: str,
        value: Any,
        *,
        http_metadata: Mapping[str, Any] | None = None,
        custom_metadata: Mapping[str, Any] | None = None,
        only_if: Mapping[str, Any] | None = None,
        md5: Any = None,
        sha1: Any = None,
        sha256: Any = None,
        sha384: Any = None,
        sha512: Any = None,
    ) -> R2Object | None:
        header = put_header(
            self._binding,
            key,
            http_metadata=http_metadata,
            custom_metadata=custom_metadata,
            only_if=only_if,
            md5=md5,
            sha1=sha1,
            sha256=sha256,
            sha384=sha384,
            sha512=sha512,
        )

        def requests() -> Iterator[objects_pb2.ObjectsPutRequest | bytes]:
            yield header
            yield from body_messages(value)

        return parse_put(self._transport.upload("Objects.Put", requests()))

    def delete(self, keys: str | Sequence[str]) -> None:
        self._transport.call(build_delete(self._binding, keys))

    def list(
        self,
        *,
        prefix: str | None = None,
        delimiter: str | None = None,
        cursor: str | None = None,
        start_after: str | None = None,
        limit: int | None = None,
        include: Sequence[str] | None = None,
    ) -> R2Objects:
        return self._transport.call(
            build_list(
                self._binding,
                prefix=prefix,
                delimiter=delimiter,
                cursor=cursor,
                start_after=start_after,
                limit=limit,
                include=include,
            )
        )

    def create_multipart_upload(
        self,
        key: str,
        *,
        http_metadata: Mapping[str, Any] | None = None,
        custom_metadata: Mapping[str, Any] | None = None,
    ) -> R2MultipartUploadSync:
        upload_id = self._transport.call(
            build_create_multipart(self._binding, key, http_metadata, custom_metadata)
        )
        return R2MultipartUploadSync(self._transport, self._binding, key, upload_id)

    def resume_multipart_upload(self, key: str, upload_id: str) -> R2MultipartUploadSync:
        return R2MultipartUploadSync(self._transport, self._binding, _check_key(key), upload_id)
