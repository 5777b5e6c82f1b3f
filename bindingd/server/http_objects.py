"""`/objects/<BINDING>/<key>`: an objects binding as plain HTTP, bodies streamed both ways.

GET / HEAD / PUT / DELETE with the headers meaning what they mean in R2's (S3-compatible) HTTP
API: `Range` (one range, `bytes=a-b`, `bytes=a-`, `bytes=-n`; 206 + `Content-Range`, 416 when
not satisfiable), `If-Match` / `If-Unmodified-Since` (412), `If-None-Match` /
`If-Modified-Since` (304 on GET and HEAD, 412 on PUT), the object's `Content-Type`,
`Content-Language`, `Content-Disposition`, `Content-Encoding`, `Cache-Control` and `Expires`,
`Content-MD5` (verified; nothing stored on a mismatch) and custom metadata as `x-amz-meta-*`
(names lower case, percent-encoded UTF-8 where they are not an HTTP token). A response also says
`x-bindingd-version`, `x-bindingd-uploaded` (ms), `x-bindingd-size` (the whole object's, on 304
and 412 too) and `x-bindingd-no-content-type: 1` when the object has no Content-Type of its own.

It runs the same `ObjectsService` methods the gRPC server runs, with the HTTP body fed in (or
out) chunk by chunk: each chunk is awaited only when the provider wants it, and each response
write waits for the socket to drain, so memory does not grow with the object.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import quote, unquote

import grpc
import structlog
from aiohttp import web
from bindingd_client.proto import objects_pb2
from bindingd_client.wire import CHUNK_BYTES, chunk_message, chunk_view
from google.protobuf import json_format

from bindingd.domain.objects import Conditional, ObjectInfo, condition_met
from bindingd.errors import BindingdError, Reason, invalid_argument
from bindingd.server.calls import REQUEST_ID_HEADER, RequestStream
from bindingd.server.http import HttpAbort, HttpContext, abort_of, error_response, internal
from bindingd.server.objects import ObjectsService

log = structlog.get_logger("bindingd.http")

PREFIX = "/objects/"
META_PREFIX = "x-amz-meta-"
NO_CONTENT_TYPE = "x-bindingd-no-content-type"
# What a custom metadata name may hold in a header name as it is (an HTTP token, RFC 9110)
# besides letters, digits and "_.-~": everything else, '%' too, is percent-encoded UTF-8.
_TOKEN_SAFE = "!#$&'*+^`|"
# Object metadata ↔ the HTTP header that carries it.
HTTP_HEADERS = {
    "content_type": "Content-Type",
    "content_language": "Content-Language",
    "content_disposition": "Content-Disposition",
    "content_encoding": "Content-Encoding",
    "cache_control": "Cache-Control",
}


def meta_name_out(name: str) -> str:
    """A custom metadata name as an x-amz-meta-* header name: R2 takes any string ("with space",
    "Zoë"), a header name only a token, so the rest is percent-encoded (and decoded on a put)."""
    return quote(name, safe=_TOKEN_SAFE)


def split_path(raw_path: str) -> tuple[str, str]:
    """(binding, key) of `/objects/<BINDING>/<key>`; the key is percent-decoded and may hold `/`."""
    rest = raw_path.split("?", 1)[0][len(PREFIX) :]
    binding, sep, key = rest.partition("/")
    if not binding or not sep or not key:
        raise invalid_argument(
            "an object URL is /objects/<BINDING>/<key> (the key percent-encoded, '/' allowed); "
            f"{raw_path!r} names no {'binding' if not binding else 'key'}"
        )
    return unquote(binding), unquote(key)


def _http_date_ms(value: str, header: str) -> int:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None:
        raise invalid_argument(f"{header} {value!r} is not an HTTP date (e.g. Wed, 21 Oct 2026 07:28:00 GMT)")
    return int(parsed.timestamp()) * 1000


def _conditional(request: web.BaseRequest) -> objects_pb2.ObjectConditional | None:
    """The request's conditional headers as R2's onlyIf. HTTP dates have whole seconds and
    `Last-Modified` is the upload time truncated to its second, so "modified since S" means
    uploaded after the end of second S, and "unmodified since S" uploaded before its end."""
    h = request.headers
    cond = objects_pb2.ObjectConditional()
    if "If-Match" in h:
        cond.etag_matches = h["If-Match"]
    if "If-None-Match" in h:
        cond.etag_does_not_match = h["If-None-Match"]
    if "If-Unmodified-Since" in h:
        cond.uploaded_before = _http_date_ms(h["If-Unmodified-Since"], "If-Unmodified-Since") + 1000
    if "If-Modified-Since" in h:
        cond.uploaded_after = _http_date_ms(h["If-Modified-Since"], "If-Modified-Since") + 999
    return cond if cond.ListFields() else None


def _range(request: web.BaseRequest) -> objects_pb2.ObjectRangeRequest | None:
    """One `bytes=` range; several ranges are answered whole (200), as S3 and R2 do."""
    value = request.headers.get("Range")
    if value is None:
        return None
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()):
        raise HttpAbort(grpc.StatusCode.OUT_OF_RANGE, f"Range {value!r} is not bytes=a-b, a- or -n", [])
    if not first:
        return objects_pb2.ObjectRangeRequest(suffix=int(last))
    if not last:
        return objects_pb2.ObjectRangeRequest(offset=int(first))
    if not last.isdigit() or int(last) < int(first):
        raise HttpAbort(
            grpc.StatusCode.OUT_OF_RANGE, f"Range {value!r}: the last byte is before the first", []
        )
    return objects_pb2.ObjectRangeRequest(offset=int(first), length=int(last) - int(first) + 1)


def object_headers(meta: objects_pb2.ObjectMeta) -> dict[str, str]:
    headers = {
        "ETag": meta.http_etag,
        "Last-Modified": email.utils.formatdate(meta.uploaded / 1000, usegmt=True),
        "Accept-Ranges": "bytes",
        "x-bindingd-uploaded": str(meta.uploaded),
        "x-bindingd-version": meta.version,
        # The whole object's size, also where Content-Length is a part's or absent (304, 412).
        "x-bindingd-size": str(meta.size),
    }
    http = meta.http_metadata
    for field, header in HTTP_HEADERS.items():
        if http.HasField(field):
            headers[header] = getattr(http, field)
    if not http.HasField("content_type"):
        # A body's response always carries a Content-Type (aiohttp's default): this says the
        # object has none of its own, as R2's httpMetadata would show.
        headers[NO_CONTENT_TYPE] = "1"
    if http.HasField("cache_expiry"):
        headers["Expires"] = email.utils.formatdate(http.cache_expiry / 1000, usegmt=True)
    for name, value in meta.custom_metadata.items():
        headers[META_PREFIX + meta_name_out(name)] = value
    if meta.checksums.HasField("md5"):
        headers["Content-MD5"] = base64.b64encode(meta.checksums.md5).decode()
    return headers


def _refused_status(cond: objects_pb2.ObjectConditional | None, meta: objects_pb2.ObjectMeta) -> int:
    """412 when If-Match / If-Unmodified-Since failed (the client's copy is stale), else 304."""
    if cond is None:
        return 304
    matching = Conditional(
        etag_matches=cond.etag_matches if cond.HasField("etag_matches") else None,
        uploaded_before=cond.uploaded_before if cond.HasField("uploaded_before") else None,
    )
    info = ObjectInfo(
        key=meta.key, version=meta.version, size=meta.size, etag=meta.etag, uploaded=meta.uploaded
    )
    return 304 if condition_met(matching, info) else 412


class _RelayedObjects:
    """The Objects calls of one binding served through the env's gateway, with the servicer's
    signatures, so that the handler below serves a remote binding the way it serves a local
    one: each call is relayed as bytes (bindingd.server.forward), as the gRPC ones are."""

    PATH = "/bindingd.v1.Objects/"

    def __init__(self, forwarder: Any, session: Any, binding: str) -> None:
        self.forwarder, self.session, self.binding = forwarder, session, binding

    async def Head(self, request: Any, context: Any) -> Any:
        raw = await self.forwarder.unary(
            self.session, self.PATH + "Head", self.binding, request.SerializeToString(), context
        )
        return objects_pb2.ObjectsHeadResponse.FromString(raw)

    async def Delete(self, request: Any, context: Any) -> Any:
        raw = await self.forwarder.unary(
            self.session, self.PATH + "Delete", self.binding, request.SerializeToString(), context
        )
        return objects_pb2.ObjectsDeleteResponse.FromString(raw)

    async def Get(self, request: Any, context: Any) -> AsyncIterator[Any]:
        first = True
        async for raw in self.forwarder.unary_stream(
            self.session, self.PATH + "Get", self.binding, request.SerializeToString(), context
        ):
            # The header is read as a message; body chunks go on as the bytes they came as.
            yield objects_pb2.ObjectsGetResponse.FromString(raw) if first else raw
            first = False

    async def Put(self, requests: RequestStream, context: Any) -> Any:
        raw = await self.forwarder.stream_unary(
            self.session, self.PATH + "Put", self.binding, requests.raw(), context
        )
        return objects_pb2.ObjectsPutResponse.FromString(raw)


class ObjectsHandler:
    def __init__(self, service: ObjectsService, forwarder: Any = None) -> None:
        self.service = service
        self.forwarder = forwarder

    def _serving(self, binding: str) -> Any:
        """What serves `binding`'s calls: the servicer here, or a relay to the env's gateway."""
        session = self.forwarder.session_for(binding) if self.forwarder is not None else None
        return _RelayedObjects(self.forwarder, session, binding) if session is not None else self.service

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        context = HttpContext(request)
        try:
            binding, key = split_path(request.raw_path)
            service = self._serving(binding)
            if request.method in ("GET", "HEAD"):
                return await self._get(service, request, context, binding, key)
            if request.method == "PUT":
                return await self._put(service, request, context, binding, key)
            if request.method == "DELETE":
                grpc_context = context.as_grpc()
                await service.Delete(
                    objects_pb2.ObjectsDeleteRequest(binding=binding, keys=[key]), grpc_context
                )
                return web.Response(status=204, headers={REQUEST_ID_HEADER: context.request_id})
            return web.Response(
                status=405,
                text="objects answer GET, HEAD, PUT and DELETE\n",
                headers={"Allow": "GET, HEAD, PUT, DELETE"},
            )
        except HttpAbort as e:
            return _error(request, e, context)
        except BindingdError as e:
            return _error(request, abort_of(e, context.request_id), context)
        except ConnectionError:
            raise  # the caller went away: nothing to answer
        except Exception:
            return _error(request, internal(request, context.request_id), context)

    async def _get(
        self, service: Any, request: web.Request, context: HttpContext, binding: str, key: str
    ) -> web.StreamResponse:
        head_only = request.method == "HEAD"
        cond = _conditional(request)
        range_ = None if head_only else _range(request)
        get = objects_pb2.ObjectsGetRequest(binding=binding, key=key)
        if range_ is not None:
            get.range.CopyFrom(range_)
        if cond is not None:
            get.only_if.CopyFrom(cond)
        if head_only:
            head = await service.Head(
                objects_pb2.ObjectsHeadRequest(binding=binding, key=key), context.as_grpc()
            )
            found, meta, failed = head.found, head.object, False
            if found and cond is not None:
                failed = not _met(cond, meta)
            answers: Any = None
        else:
            answers = cast(Any, service.Get(get, context.as_grpc()))
            try:
                first = await anext(answers)
            except BindingdError as e:
                raise self._range_error(e, request) from None
            except HttpAbort as e:
                raise self._range_abort(e, request) from None
            found, meta, failed = first.header.found, first.header.object, first.header.condition_failed
        async with contextlib.aclosing(answers) if answers is not None else contextlib.nullcontext():
            headers = {REQUEST_ID_HEADER: context.request_id}
            if not found:
                abort = HttpAbort(
                    grpc.StatusCode.NOT_FOUND, f'object "{key}" not found in binding "{binding}"', []
                )
                return _error(request, abort, context)
            headers.update(object_headers(meta))
            if failed:
                status = _refused_status(cond, meta)
                return web.Response(
                    status=status, headers=headers if status == 304 else _cache_headers(headers)
                )
            status = 200
            length = meta.size
            if meta.HasField("range") and range_ is not None:
                status = 206
                length = meta.range.length
                last = meta.range.offset + length - 1
                headers["Content-Range"] = f"bytes {meta.range.offset}-{last}/{meta.size}"
                headers.pop("Content-MD5", None)  # the digest of the whole object, not of this part
            headers["Content-Length"] = str(length)
            if head_only:
                return web.Response(status=200, headers=headers)
            # The body is the stored bytes as they are, whatever Content-Encoding says.
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            assert answers is not None
            try:
                async for raw in answers:
                    chunk = chunk_view(raw) if isinstance(raw, bytes) else None
                    await response.write(chunk if chunk is not None else raw.chunk)
                await response.write_eof()
            except ConnectionError:
                pass  # the caller went away
            except HttpAbort as e:
                # The status is sent: closing before Content-Length bytes tells the caller the
                # body is cut short (what a gRPC caller learns from the status).
                log.warning(
                    "object body failed after its headers",
                    binding=binding,
                    error=e.message,
                    request_id=context.request_id,
                )
                if request.transport is not None:
                    request.transport.close()
            return response

    def _range_error(self, e: BindingdError, request: web.Request) -> HttpAbort:
        if "not satisfiable" in e.message:
            return HttpAbort(grpc.StatusCode.OUT_OF_RANGE, e.message, [])
        return abort_of(e, request.headers.get(REQUEST_ID_HEADER, ""))

    def _range_abort(self, e: HttpAbort, request: web.Request) -> HttpAbort:
        if "not satisfiable" in e.message:
            return HttpAbort(grpc.StatusCode.OUT_OF_RANGE, e.message, e.details)
        return e

    async def _put(
        self, service: Any, request: web.Request, context: HttpContext, binding: str, key: str
    ) -> web.StreamResponse:
        header = objects_pb2.ObjectsPutHeader(binding=binding, key=key)
        h = request.headers
        for field, name in HTTP_HEADERS.items():
            if name in h:
                setattr(header.http_metadata, field, h[name])
        if "Expires" in h:
            header.http_metadata.cache_expiry = _http_date_ms(h["Expires"], "Expires")
        for name, value in h.items():
            if name.lower().startswith(META_PREFIX):
                header.custom_metadata[unquote(name.lower()[len(META_PREFIX) :])] = value
        if "Content-MD5" in h:
            try:
                header.checksums.md5 = base64.b64decode(h["Content-MD5"], validate=True)
            except (binascii.Error, ValueError):
                raise invalid_argument(f"Content-MD5 {h['Content-MD5']!r} is not base64") from None
        cond = _conditional(request)
        if cond is not None:
            header.only_if.CopyFrom(cond)
        stream = RequestStream(
            _put_messages(request, objects_pb2.ObjectsPutRequest(header=header).SerializeToString()),
            objects_pb2.ObjectsPutRequest,
            context.as_grpc(),
        )
        result = await service.Put(stream, context.as_grpc())
        headers = {REQUEST_ID_HEADER: context.request_id}
        if not result.stored:
            abort = HttpAbort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'object "{key}" of binding "{binding}" not stored: its If-Match / If-None-Match / '
                "If-(Un)Modified-Since condition failed",
                [],
            )
            return _error(request, abort, context, status=412)
        headers.update({"ETag": result.object.http_etag})
        return web.json_response(json_format.MessageToDict(result.object), headers=headers)


def _met(cond: objects_pb2.ObjectConditional, meta: objects_pb2.ObjectMeta) -> bool:
    fields = {f.name: v for f, v in cond.ListFields()}
    info = ObjectInfo(
        key=meta.key, version=meta.version, size=meta.size, etag=meta.etag, uploaded=meta.uploaded
    )
    return condition_met(Conditional(**fields), info)


# What a 412 answer keeps of an object's headers: what identifies the object and its size.
_CACHE_HEADERS = frozenset(
    (
        "ETag",
        "Last-Modified",
        REQUEST_ID_HEADER,
        "x-bindingd-uploaded",
        "x-bindingd-version",
        "x-bindingd-size",
    )
)


def _cache_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k in _CACHE_HEADERS}


async def _put_messages(request: web.Request, header: bytes) -> AsyncIterator[bytes]:
    """The put's messages: its header, then the HTTP body as chunk messages read as asked for."""
    yield header
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        yield chunk_message(chunk)


def _error(
    request: web.BaseRequest, abort: HttpAbort, context: HttpContext, *, status: int | None = None
) -> web.Response:
    """Connect's error JSON at the HTTP status that fits an object request."""
    response = error_response(abort, context.request_id)
    if abort.code == grpc.StatusCode.OUT_OF_RANGE:
        response.set_status(416)
    elif status is not None:
        response.set_status(status)
    elif abort.details and abort.details[0]["debug"].get("reason") == Reason.PRECONDITION_FAILED.value:
        response.set_status(412)
    if abort.details:
        # A HEAD answer has no body: the reason rides in a header too (a missing binding's 404
        # from a missing object's).
        response.headers["x-bindingd-reason"] = abort.details[0]["debug"]["reason"]
    if request.method == "HEAD":
        response.body = b""
    return response
