"""CloudflareKV: a Workers KV namespace of the account, through the proxy Worker's binding of the
same name (or `remote_binding:`)."""

from __future__ import annotations

import json
from typing import Any

from bindingd.config.model import Binding
from bindingd.domain.kv import KVKeyInfo, KVRecord, bulk_too_large
from bindingd.providers.cloudflare.client import ProxyClient
from bindingd.providers.connections import ProviderContext


class CloudflareBase:
    """What every cloudflare provider shares: the connection's client and the remote name."""

    def __init__(self, binding: Binding, context: ProviderContext) -> None:
        assert binding.connection is not None
        self.connection = binding.connection
        self.remote = str(binding.options.get("remote_binding") or binding.name)
        self._connections = context.connections
        self._client: ProxyClient | None = None

    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> Any:
        return cls(binding, context)

    async def start(self) -> None:
        self._client = await self._connections.acquire(self.connection, ProxyClient)

    async def close(self) -> None:
        if self._client is not None:
            self._client = None
            await self._connections.release(self.connection)

    @property
    def client(self) -> ProxyClient:
        assert self._client is not None, "provider not started"
        return self._client


class CloudflareKV(CloudflareBase):
    async def check(self) -> str:
        await self.client.call(self.remote, "list", {"limit": 1})
        return f"proxy Worker {self.client.url}, KV binding {self.remote}"

    async def get(self, key: str, now: float) -> KVRecord | None:
        status, body, headers = await self.client.call(self.remote, "get", {"key": key})
        if status == 404:
            return None
        metadata = json.loads(headers.get("x-bindingd-metadata", "null"))
        # Workers KV's get does not tell the expiration; KV itself drops expired keys.
        return KVRecord(key, body, None if metadata is None else json.dumps(metadata), None)

    async def get_many(self, keys: list[str], now: float, max_bytes: int) -> list[KVRecord | None]:
        out: list[KVRecord | None] = []
        total = 0
        for key in keys:
            record = await self.get(key, now)
            total += len(record.value) if record else 0
            if total > max_bytes:
                raise bulk_too_large()
            out.append(record)
        return out

    async def put(
        self,
        key: str,
        value: bytes,
        expiration: int | None,
        metadata_json: str | None,
        ttl: int | None = None,
    ) -> None:
        args: dict[str, Any] = {"key": key}
        # A TTL as the caller gave it, so Cloudflare counts it from its own clock (the absolute
        # time from the daemon's could be a second short of KV's 60 s minimum there).
        if ttl is not None:
            args["expirationTtl"] = ttl
        elif expiration is not None:
            args["expiration"] = expiration
        if metadata_json is not None:
            args["metadata"] = json.loads(metadata_json)
        await self.client.call(self.remote, "put", args, value)

    async def delete(self, key: str) -> None:
        await self.client.call(self.remote, "delete", {"key": key})

    async def list(
        self, prefix: str, after: str | None, limit: int, now: float
    ) -> tuple[list[KVKeyInfo], bool]:
        _, body, _ = await self.client.call(
            self.remote, "list", {"prefix": prefix, "after": after or "", "limit": limit}
        )
        r = json.loads(body)
        keys = [
            KVKeyInfo(
                k["name"],
                k.get("expiration"),
                None if k.get("metadata") is None else json.dumps(k["metadata"]),
            )
            for k in r["keys"]
        ]
        return keys, not r["list_complete"]
