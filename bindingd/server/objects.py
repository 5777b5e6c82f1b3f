"""ObjectsService: gRPC ↔ the object rules and the provider of the named binding.

Bodies stream through in chunks: a put hands the provider an async iterator over the incoming
messages (each awaited only when the provider is ready for it: backpressure), and a get yields
the provider's chunks one by one, so the daemon's memory does not grow with the object.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
from bindingd_client.proto import objects_pb2, objects_pb2_grpc
from bindingd_client.wire import HEADER_ACCEPTED, HTTP_FIELDS, chunk_message, chunk_view

from bindingd.domain import objects
from bindingd.domain.cursors import check_list_limit
from bindingd.domain.objects import (
    Conditional,
    HttpMetadata,
    ObjectInfo,
    PutOptions,
    RangeSpec,
)
from bindingd.errors import BindingdError, invalid_argument
from bindingd.runtime import Runtime
from bindingd.server.audit import audit_write
from bindingd.server.calls import RequestStream, opt, rpc, rpc_stream

# How long a refused put or part keeps reading the body it will not store (see below).
DRAIN_S = 10.0


def http_from_pb(message: objects_pb2.ObjectHttpMetadata) -> HttpMetadata:
    return HttpMetadata(**{name: opt(message, name) for name in HTTP_FIELDS})


def http_to_pb(http: HttpMetadata) -> objects_pb2.ObjectHttpMetadata:
    return objects_pb2.ObjectHttpMetadata(
        **{name: getattr(http, name) for name in HTTP_FIELDS if getattr(http, name) is not None}
    )


def meta_to_pb(info: ObjectInfo, *, range: tuple[int, int] | None = None) -> objects_pb2.ObjectMeta:
    meta = objects_pb2.ObjectMeta(
        key=info.key,
        version=info.version,
        size=info.size,
        etag=info.etag,
        http_etag=f'"{info.etag}"',
        uploaded=info.uploaded,
        http_metadata=http_to_pb(info.http_metadata),
        custom_metadata=info.custom_metadata,
        checksums=objects_pb2.ObjectChecksums(**info.checksums),
        storage_class=info.storage_class,
    )
    if range is not None:
        meta.range.offset, meta.range.length = range
    return meta


def conditional_from_pb(message: Any) -> Conditional | None:
    if not message.HasField("only_if"):
        return None
    c = message.only_if
    return Conditional(
        etag_matches=opt(c, "etag_matches"),
        etag_does_not_match=opt(c, "etag_does_not_match"),
        uploaded_before=opt(c, "uploaded_before"),
        uploaded_after=opt(c, "uploaded_after"),
    )


def checksums_from_pb(message: objects_pb2.ObjectChecksums) -> dict[str, bytes]:
    checksums = {name: opt(message, name) for name in objects.CHECKSUM_ALGORITHMS}
    found = {name: value for name, value in checksums.items() if value is not None}
    objects.check_checksums(found)
    return found


async def _header(requests: RequestStream, what: str) -> Any:
    """The header of a client-streaming call: its first message."""
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        raise invalid_argument(f"the {what} stream is empty; its first message must be a header") from None
    if first.WhichOneof("part") != "header":
        raise invalid_argument(f"the first message of a {what} stream must be its header, not a body chunk")
    return first.header


async def _chunks(requests: RequestStream, what: str) -> AsyncIterator[bytes | memoryview]:
    """The body chunks after the header, read only as fast as the provider consumes them; a
    plain chunk message is passed on as a view into the received bytes (no copy). A put and a
    part upload carry their chunk in the same field (`wire.CHUNK_FIELD`)."""
    async for raw in requests.raw():
        chunk: bytes | memoryview | None = chunk_view(raw)
        if chunk is None:
            message = await requests.decode(raw)
            if message.WhichOneof("part") != "chunk":
                raise invalid_argument(
                    f"a {what} stream has one header, first; later messages are body chunks"
                )
            chunk = message.chunk
        if chunk:
            yield chunk


async def _refuse_after_draining(requests: RequestStream, error: BindingdError) -> NoReturn:
    """Read (and drop) the rest of the body before answering with `error`: grpc fails a client's
    write into a call the daemon has ended as INTERNAL, hiding the refusal (a put over the size
    limit, a failing disk). Bounded: a client still sending after DRAIN_S gets that INTERNAL."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_S):
            async for _ in requests.raw():
                pass
    raise error


async def _accept(context: grpc.aio.ServicerContext) -> None:
    """Tell the client its header passed (see the client's `upload(header_ack=True)`): the body
    may flow. A refusal before this point reaches the client as its own status."""
    await context.send_initial_metadata(((HEADER_ACCEPTED, "1"),))


class ObjectsService(objects_pb2_grpc.ObjectsServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @rpc
    async def Head(
        self, request: objects_pb2.ObjectsHeadRequest, context: grpc.aio.ServicerContext
    ) -> objects_pb2.ObjectsHeadResponse:
        objects.check_key(request.key)
        with self.runtime.use(request.binding, "objects") as served:
            provider = served.provider
            info = await provider.head(request.key)
        if info is None:
            return objects_pb2.ObjectsHeadResponse(found=False)
        return objects_pb2.ObjectsHeadResponse(found=True, object=meta_to_pb(info))

    @rpc_stream
    async def Get(
        self, request: objects_pb2.ObjectsGetRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[objects_pb2.ObjectsGetResponse | bytes]:
        """The header as a message, then each chunk as a response already serialized (bytes),
        which gRPC passes on as it is."""
        objects.check_key(request.key)
        spec = None
        if request.HasField("range"):
            r = request.range
            spec = RangeSpec(offset=opt(r, "offset"), length=opt(r, "length"), suffix=opt(r, "suffix"))
        with self.runtime.use(request.binding, "objects") as served:
            provider = served.provider
            read = await provider.get(request.key, spec, conditional_from_pb(request))
            if read is None:
                yield objects_pb2.ObjectsGetResponse(header=objects_pb2.ObjectsGetHeader(found=False))
                return
            if read.body is None:
                header = objects_pb2.ObjectsGetHeader(
                    found=True, object=meta_to_pb(read.info), condition_failed=True
                )
                yield objects_pb2.ObjectsGetResponse(header=header)
                return
            async with contextlib.aclosing(read.body) as body:
                meta = meta_to_pb(read.info, range=(read.offset, read.length))
                yield objects_pb2.ObjectsGetResponse(
                    header=objects_pb2.ObjectsGetHeader(found=True, object=meta)
                )
                async for chunk in body:
                    yield chunk_message(chunk)

    @rpc
    async def Put(
        self, requests: RequestStream, context: grpc.aio.ServicerContext
    ) -> objects_pb2.ObjectsPutResponse:
        header: objects_pb2.ObjectsPutHeader = await _header(requests, "put")
        objects.check_key(header.key)
        custom = dict(header.custom_metadata)
        objects.check_custom_metadata(custom)
        http = http_from_pb(header.http_metadata)
        objects.check_http_metadata(http)
        options = PutOptions(
            http_metadata=http,
            custom_metadata=custom,
            only_if=conditional_from_pb(header),
            checksums=checksums_from_pb(header.checksums),
        )
        with self.runtime.use(header.binding, "objects", write=True) as served:
            provider = served.provider
            await provider.check_put(options)
            await _accept(context)
            try:
                info = await provider.put(header.key, _chunks(requests, "put"), options)
            except BindingdError as e:
                await _refuse_after_draining(requests, e)
            if info is None:
                return objects_pb2.ObjectsPutResponse(stored=False)
            audit_write(served.binding, "put", header.key, context)
        return objects_pb2.ObjectsPutResponse(stored=True, object=meta_to_pb(info))

    @rpc
    async def Delete(
        self, request: objects_pb2.ObjectsDeleteRequest, context: grpc.aio.ServicerContext
    ) -> objects_pb2.ObjectsDeleteResponse:
        keys = list(dict.fromkeys(request.keys))
        objects.check_delete_keys(keys)
        with self.runtime.use(request.binding, "objects", write=True) as served:
            provider = served.provider
            if keys:
                await provider.delete(keys)
            audit_write(served.binding, "delete", ",".join(keys), context)
        return objects_pb2.ObjectsDeleteResponse()

    @rpc
    async def List(
        self, request: objects_pb2.ObjectsListRequest, context: grpc.aio.ServicerContext
    ) -> objects_pb2.ObjectsListResponse:
        limit = check_list_limit(opt(request, "limit"))
        with self.runtime.use(request.binding, "objects") as served:
            provider = served.provider
            listing = await provider.list(
                prefix=request.prefix,
                delimiter=request.delimiter,
                cursor=request.cursor,
                start_after=request.start_after,
                limit=limit,
                include_http_metadata=request.include_http_metadata,
                include_custom_metadata=request.include_custom_metadata,
            )
        return objects_pb2.ObjectsListResponse(
            objects=[meta_to_pb(info) for info in listing.objects],
            truncated=listing.truncated,
            cursor=listing.cursor,
            delimited_prefixes=listing.delimited_prefixes,
        )

    @rpc
    async def CreateMultipartUpload(
        self, request: objects_pb2.ObjectsCreateMultipartRequest, context: grpc.aio.ServicerContext
    ) -> objects_pb2.ObjectsCreateMultipartResponse:
        objects.check_key(request.key)
        custom = dict(request.custom_metadata)
        objects.check_custom_metadata(custom)
        http = http_from_pb(request.http_metadata)
        objects.check_http_metadata(http)
        with self.runtime.use(request.binding, "objects", write=True) as served:
            provider = served.provider
            upload_id = await provider.create_multipart_upload(request.key, http, custom)
            audit_write(served.binding, "create_multipart_upload", request.key, context)
        return objects_pb2.ObjectsCreateMultipartResponse(key=request.key, upload_id=upload_id)

    @rpc
    async def UploadPart(
        self, requests: RequestStream, context: grpc.aio.ServicerContext
    ) -> objects_pb2.ObjectsUploadPartResponse:
        header: objects_pb2.ObjectsUploadPartHeader = await _header(requests, "upload part")
        objects.check_key(header.key)
        objects.check_part_number(header.part_number)
        if not header.upload_id:
            raise invalid_argument("upload_part needs the upload id of create_multipart_upload()")
        with self.runtime.use(header.binding, "objects", write=True) as served:
            provider = served.provider
            await provider.check_upload(header.key, header.upload_id)
            await _accept(context)
            try:
                etag = await provider.upload_part(
                    header.key, header.upload_id, header.part_number, _chunks(requests, "upload part")
                )
            except BindingdError as e:
                await _refuse_after_draining(requests, e)
        return objects_pb2.ObjectsUploadPartResponse(part_number=header.part_number, etag=etag)

    @rpc
    async def CompleteMultipartUpload(
        self, request: objects_pb2.ObjectsCompleteMultipartRequest, context: grpc.aio.ServicerContext
    ) -> objects_pb2.ObjectsCompleteMultipartResponse:
        objects.check_key(request.key)
        parts = [(p.part_number, p.etag) for p in request.parts]
        objects.check_parts(parts)
        with self.runtime.use(request.binding, "objects", write=True) as served:
            provider = served.provider
            info = await provider.complete_multipart_upload(request.key, request.upload_id, parts)
            audit_write(served.binding, "complete_multipart_upload", request.key, context)
        return objects_pb2.ObjectsCompleteMultipartResponse(object=meta_to_pb(info))

    @rpc
    async def AbortMultipartUpload(
        self, request: objects_pb2.ObjectsAbortMultipartRequest, context: grpc.aio.ServicerContext
    ) -> objects_pb2.ObjectsAbortMultipartResponse:
        objects.check_key(request.key)
        with self.runtime.use(request.binding, "objects", write=True) as served:
            provider = served.provider
            await provider.abort_multipart_upload(request.key, request.upload_id)
            audit_write(served.binding, "abort_multipart_upload", request.key, context)
        return objects_pb2.ObjectsAbortMultipartResponse()
