"""KVService: gRPC ↔ the KV rules and provider of the named binding."""

from __future__ import annotations

import collections

import grpc
import structlog
from bindingd_client.proto import kv_pb2, kv_pb2_grpc

from bindingd.domain import kv
from bindingd.domain.cursors import check_list_limit
from bindingd.domain.kv import KVRecord
from bindingd.runtime import Runtime
from bindingd.server.audit import audit_write
from bindingd.server.calls import opt, rpc

log = structlog.get_logger("bindingd.kv")


def _entry(key: str, record: KVRecord | None) -> kv_pb2.KVEntry:
    if record is None:
        return kv_pb2.KVEntry(key=key, found=False)
    return kv_pb2.KVEntry(
        key=key,
        found=True,
        value=record.value,
        metadata_json=record.metadata_json,
        expiration=record.expiration,
    )


class KVService(kv_pb2_grpc.KVServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @rpc
    async def Get(
        self, request: kv_pb2.KVGetRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.KVGetResponse:
        kv.check_key(request.key)
        kv.check_cache_ttl(opt(request, "cache_ttl"))
        with self.runtime.use(request.binding, "kv") as served:
            provider = served.provider
            record = await provider.get(request.key, self.runtime.clock())
        return kv_pb2.KVGetResponse(entry=_entry(request.key, record))

    @rpc
    async def GetBulk(
        self, request: kv_pb2.KVGetBulkRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.KVGetBulkResponse:
        # Like the Map Workers returns, each key answers once, however often it was asked for.
        keys = list(dict.fromkeys(request.keys))
        kv.check_bulk_keys(list(request.keys))
        kv.check_cache_ttl(opt(request, "cache_ttl"))
        with self.runtime.use(request.binding, "kv") as served:
            provider = served.provider
            records = await provider.get_many(keys, self.runtime.clock(), kv.MAX_BULK_BYTES) if keys else []
        # Workers KV counts a key's value each time the key is asked for, though it answers once.
        asked = collections.Counter(request.keys)
        if sum(len(r.value) * asked[k] for k, r in zip(keys, records, strict=True) if r) > kv.MAX_BULK_BYTES:
            raise kv.bulk_too_large()
        return kv_pb2.KVGetBulkResponse(entries=[_entry(k, r) for k, r in zip(keys, records, strict=True)])

    @rpc
    async def Put(
        self, request: kv_pb2.KVPutRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.KVPutResponse:
        metadata_json = request.metadata_json if request.HasField("metadata_json") else None
        expiration = kv.check_put(
            request.key,
            request.value,
            expiration=opt(request, "expiration"),
            expiration_ttl=opt(request, "expiration_ttl"),
            metadata_json=metadata_json,
            now=self.runtime.clock(),
        )
        with self.runtime.use(request.binding, "kv", write=True) as served:
            provider = served.provider
            await provider.put(
                request.key, request.value, expiration, metadata_json, ttl=opt(request, "expiration_ttl")
            )
            audit_write(served.binding, "put", request.key, context)
        return kv_pb2.KVPutResponse()

    @rpc
    async def Delete(
        self, request: kv_pb2.KVDeleteRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.KVDeleteResponse:
        kv.check_key(request.key)
        with self.runtime.use(request.binding, "kv", write=True) as served:
            provider = served.provider
            await provider.delete(request.key)
            audit_write(served.binding, "delete", request.key, context)
        return kv_pb2.KVDeleteResponse()

    @rpc
    async def List(
        self, request: kv_pb2.KVListRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.KVListResponse:
        kv.check_list_prefix(request.prefix)
        limit = check_list_limit(opt(request, "limit"))
        after = kv.decode_cursor(request.cursor, request.prefix)
        with self.runtime.use(request.binding, "kv") as served:
            provider = served.provider
            keys, more = await provider.list(request.prefix, after, limit, self.runtime.clock())
        response = kv_pb2.KVListResponse(
            keys=[
                kv_pb2.KVListKey(name=k.name, expiration=k.expiration, metadata_json=k.metadata_json)
                for k in keys
            ],
            list_complete=not more,
        )
        if more and keys:
            response.cursor = kv.encode_cursor(request.prefix, keys[-1].name)
        return response
