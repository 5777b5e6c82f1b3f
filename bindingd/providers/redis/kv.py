"""RedisKV: Workers KV on a Redis server (redis-py's asyncio client).

Layout under the binding's `prefix` P (default `bindingd:<BINDING>:`), so several bindings can
share one Redis:

- `P k:<key>`  a hash: `v` the value, `m` the metadata JSON (absent if none), `e` the expiration
  in seconds since the epoch (absent if none). Redis also expires the hash at `e` (EXPIREAT), so
  expired keys cost no memory; reads still compare `e` with the daemon's clock, like every KV
  provider does.
- `P index`    a sorted set of every key name, all with score 0. Redis orders equal-score members
  by their bytes, which is Workers KV's list order (UTF-8 bytes). `list` walks it with
  ZRANGE BYLEX from just after the cursor's last key, so a paging client sees every key that
  exists throughout exactly once, whatever is written meanwhile (SCAN promises neither order nor
  that). A put or delete changes the hash and the index in one MULTI/EXEC.

When Redis expires a hash, its name stays in the index until a `list` walks past it and removes
it, with a script that removes the name only if the hash is still gone (a put may have brought it
back since the list read it).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from bindingd.config.model import Binding
from bindingd.config.urls import connection_address
from bindingd.domain.kv import KVKeyInfo, KVRecord, bulk_too_large
from bindingd.errors import BindingdError, backend_unavailable
from bindingd.providers.connections import ProviderContext
from bindingd.providers.redis.client import FAILURES, map_error, timeout_of

# Index members read per round trip while listing.
LIST_SCAN_BATCH = 256

# Remove KEYS[2]'s name ARGV[1] from the index KEYS[1] only if the hash KEYS[2] is (still) gone.
_FORGET_IF_GONE = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


class RedisKV:
    """The redis KV provider: one per binding, sharing its connection's client."""

    def __init__(self, binding: Binding, context: ProviderContext) -> None:
        assert binding.connection is not None
        self.connection = binding.connection
        prefix = binding.options.get("prefix")
        self.prefix = (prefix if prefix is not None else f"bindingd:{binding.name}:").encode()
        self.index = self.prefix + b"index"
        self.address = connection_address(self.connection)
        self.timeout = timeout_of(self.connection)
        self._connections = context.connections
        self._client: aioredis.Redis | None = None
        self._forget: Any = None

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> RedisKV:
        return cls(binding, context)

    async def start(self) -> None:
        self._client = await self._connections.acquire(self.connection, aioredis.Redis)
        self._forget = self._client.register_script(_FORGET_IF_GONE)

    async def close(self) -> None:
        if self._client is not None:
            self._client = None
            await self._connections.release(self.connection)

    @property
    def client(self) -> aioredis.Redis:
        assert self._client is not None, "provider not started"
        return self._client

    async def check(self) -> str:
        try:
            info = await self.client.info("server")
        except FAILURES as e:
            raise self._error(e) from None
        return f"redis {info.get('redis_version', '?')} at {self.address}"

    def _key(self, key: str) -> bytes:
        return self.prefix + b"k:" + key.encode()

    async def get(self, key: str, now: float) -> KVRecord | None:
        try:
            value, metadata, expiration = await self.client.hmget(self._key(key), [b"v", b"m", b"e"])
        except FAILURES as e:
            raise self._error(e) from None
        return _record(key, value, metadata, expiration, now)

    async def get_many(self, keys: list[str], now: float, max_bytes: int) -> list[KVRecord | None]:
        try:
            # Sizes first, so an oversized answer is refused without reading the values.
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hstrlen(self._key(key), b"v")
                pipe.hget(self._key(key), b"e")
            answers = await pipe.execute()
            total = sum(
                size
                for size, expiration in zip(answers[::2], answers[1::2], strict=True)
                if _live(expiration, now)
            )
            if total > max_bytes:
                raise bulk_too_large()
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self._key(key), [b"v", b"m", b"e"])
            rows = await pipe.execute()
        except FAILURES as e:
            raise self._error(e) from None
        return [_record(key, *row, now) for key, row in zip(keys, rows, strict=True)]

    async def put(
        self,
        key: str,
        value: bytes,
        expiration: int | None,
        metadata_json: str | None,
        ttl: int | None = None,
    ) -> None:
        name = self._key(key)
        fields: dict[bytes, bytes] = {b"v": value}
        if metadata_json is not None:
            fields[b"m"] = metadata_json.encode()
        if expiration is not None:
            fields[b"e"] = str(expiration).encode()
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(name)
            pipe.hset(name, mapping=fields)  # type: ignore[arg-type]
            if expiration is not None:
                pipe.expireat(name, expiration)
            pipe.zadd(self.index, {key.encode(): 0})
            await pipe.execute()
        except FAILURES as e:
            raise self._error(e) from None

    async def delete(self, key: str) -> None:
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self._key(key))
            pipe.zrem(self.index, key.encode())
            await pipe.execute()
        except FAILURES as e:
            raise self._error(e) from None

    async def list(
        self, prefix: str, after: str | None, limit: int, now: float
    ) -> tuple[list[KVKeyInfo], bool]:
        encoded = prefix.encode()
        # UTF-8 never contains 0xff, so every name starting with the prefix sorts below this.
        upper = b"(" + encoded + b"\xff" if encoded else b"+"
        if after is not None and after.encode() >= encoded:
            lower = b"(" + after.encode()
        else:
            lower = b"[" + encoded if encoded else b"-"
        found: list[KVKeyInfo] = []
        try:
            while len(found) <= limit:
                want = min(LIST_SCAN_BATCH, limit + 1 - len(found))
                names: list[bytes] = await self.client.zrange(
                    self.index, lower, upper, bylex=True, offset=0, num=want
                )
                if not names:
                    break
                pipe = self.client.pipeline(transaction=False)
                for name in names:
                    pipe.exists(self.prefix + b"k:" + name)
                    pipe.hmget(self.prefix + b"k:" + name, [b"e", b"m"])
                answers = await pipe.execute()
                for name, exists, (expiration, metadata) in zip(
                    names, answers[::2], answers[1::2], strict=True
                ):
                    if not exists:
                        # Expired by Redis: forget the name, unless a put brought it back since.
                        await self._forget(keys=[self.index, self.prefix + b"k:" + name], args=[name])
                        continue
                    if not _live(expiration, now):
                        continue
                    found.append(
                        KVKeyInfo(
                            name=name.decode(),
                            expiration=int(expiration) if expiration is not None else None,
                            metadata_json=metadata.decode() if metadata is not None else None,
                        )
                    )
                if len(names) < want:
                    break
                lower = b"(" + names[-1]
        except FAILURES as e:
            raise self._error(e) from None
        return found[:limit], len(found) > limit

    def _error(self, e: BaseException) -> BindingdError:
        """A redis failure as the error table's reason: WRONGTYPE is this binding's own (its
        prefix); the rest is the connection's (`client.map_error`)."""
        if isinstance(e, redis_errors.ResponseError) and str(e).startswith("WRONGTYPE"):
            return backend_unavailable(
                f"redis at {self.address} holds other data under the prefix "
                f"{self.prefix.decode()!r}; give this binding a prefix of its own"
            )
        return map_error(e, self.connection)


def _live(expiration: bytes | None, now: float) -> bool:
    return expiration is None or int(expiration) > now


def _record(
    key: str, value: bytes | None, metadata: bytes | None, expiration: bytes | None, now: float
) -> KVRecord | None:
    if value is None or not _live(expiration, now):
        return None
    return KVRecord(
        key=key,
        value=value,
        metadata_json=metadata.decode() if metadata is not None else None,
        expiration=int(expiration) if expiration is not None else None,
    )
