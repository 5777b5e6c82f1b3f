"""KV bindings, mirroring the Workers ``KVNamespace`` in snake_case.

The daemon stores raw bytes; decoding to text / json / bytes happens here, as the Workers
runtime does it. Requests are built and responses parsed by the pure ``build_*`` functions, which
both :class:`KVNamespace` (asyncio) and :class:`KVNamespaceSync` (blocking) use.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from ._transport import Call
from .proto import kv_pb2
from .types import KVKey, KVListResult, KVValueWithMetadata

if TYPE_CHECKING:
    from ._transport import AsyncTransport, SyncTransport

__all__ = ["KVNamespace", "KVNamespaceSync", "ValueType"]

ValueType = Literal["text", "json", "bytes"]
_VALUE_TYPES = ("text", "json", "bytes")
_BULK_TYPES = ("text", "json")

# --- pure encoding / decoding -------------------------------------------------------------------


def check_type(type: str, *, bulk: bool = False) -> None:
    """Validate ``type`` client-side: the daemon only sees bytes and cannot know it."""
    if bulk and type == "bytes":
        raise ValueError("bulk get supports type text or json")
    if type not in _VALUE_TYPES:
        raise ValueError(f'type must be "text", "json" or "bytes", not {type!r}')


def decode_value(data: bytes, type: str) -> Any:
    """Bytes as the Workers runtime hands them out: invalid UTF-8 becomes U+FFFD, as TextDecoder does."""
    if type == "bytes":
        return bytes(data)
    text = data.decode("utf-8", errors="replace")
    return json.loads(text) if type == "json" else text


def decode_metadata(message: Any) -> Any:
    """The metadata of a KVEntry / KVListKey, or None when none was given at put time."""
    if not message.HasField("metadata_json"):
        return None
    return json.loads(message.metadata_json)


def encode_metadata(metadata: Any) -> str:
    """Compact JSON, UTF-8 kept as is, so the daemon's 1024-byte limit counts what Workers counts."""
    try:
        return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"KV metadata must be JSON-serializable: {exc}") from None


def _bytes_like(value: Any) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    try:
        with memoryview(value) as view:
            return view.tobytes()
    except TypeError:
        return None


def _value_type_error(value: Any) -> TypeError:
    return TypeError(
        "a KV value must be str, bytes-like or an iterable of str or bytes chunks,"
        f" not {type(value).__name__}"
    )


def _chunk(chunk: Any, value: Any) -> bytes:
    # A str chunk is UTF-8 like a whole str value: a chunk always holds whole characters, so
    # encoding chunk by chunk gives the same bytes as encoding the joined text.
    data = _bytes_like(chunk)
    if data is None:
        raise _value_type_error(value)
    return data


def encode_value(value: Any) -> bytes:
    """A put value as bytes: str (UTF-8), bytes-like, or a sync iterable of str or bytes chunks."""
    data = _bytes_like(value)
    if data is not None:
        return data
    if hasattr(value, "__aiter__"):
        raise TypeError("an async iterable KV value needs the asyncio client (connect(), not connect_sync())")
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return b"".join(_chunk(chunk, value) for chunk in value)
    raise _value_type_error(value)


async def encode_value_async(value: Any) -> bytes:
    """Like :func:`encode_value`, also draining an async iterable (KV values are at most 25 MiB)."""
    if hasattr(value, "__aiter__") and _bytes_like(value) is None:
        return b"".join([_chunk(chunk, value) async for chunk in value])
    return encode_value(value)


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a KV key must be str, not {type(key).__name__}")
    return key


def _opt_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite")
        value = int(value)
    return value


def _is_bulk(key: Any) -> bool:
    return isinstance(key, list | tuple)


def _entry_value(entry: Any, type: str, with_metadata: bool) -> Any:
    if not entry.found:
        return KVValueWithMetadata(None, None) if with_metadata else None
    value = decode_value(entry.value, type)
    return KVValueWithMetadata(value, decode_metadata(entry)) if with_metadata else value


def build_get(
    binding: str, key: Any, type: str = "text", cache_ttl: Any = None, *, with_metadata: bool = False
) -> Call[Any]:
    """A ``get`` / ``get_with_metadata``: one key via ``KV.Get``, a list or tuple via ``KV.GetBulk``.

    A bulk result is a dict in request order, with None (or an empty KVValueWithMetadata) for
    missing keys.
    """
    ttl = _opt_int("cache_ttl", cache_ttl)
    if _is_bulk(key):
        check_type(type, bulk=True)
        keys = [_check_key(k) for k in key]

        def parse_bulk(response: kv_pb2.KVGetBulkResponse) -> dict[str, Any]:
            by_key = {entry.key: entry for entry in response.entries}
            missing = KVValueWithMetadata(None, None) if with_metadata else None
            return {k: _entry_value(by_key[k], type, with_metadata) if k in by_key else missing for k in keys}

        return Call(
            "KV.GetBulk", kv_pb2.KVGetBulkRequest(binding=binding, keys=keys, cache_ttl=ttl), parse_bulk
        )

    check_type(type)

    def parse(response: kv_pb2.KVGetResponse) -> Any:
        return _entry_value(response.entry, type, with_metadata)

    request = kv_pb2.KVGetRequest(binding=binding, key=_check_key(key), cache_ttl=ttl)
    return Call("KV.Get", request, parse)


def _none(_response: Any) -> None:
    return None


def build_put(
    binding: str,
    key: Any,
    value: bytes,
    *,
    expiration: Any = None,
    expiration_ttl: Any = None,
    metadata: Any = None,
) -> Call[None]:
    """A ``put`` of an already encoded value (see :func:`encode_value`)."""
    request = kv_pb2.KVPutRequest(
        binding=binding,
        key=_check_key(key),
        value=value,
        expiration=_opt_int("expiration", expiration),
        expiration_ttl=_opt_int("expiration_ttl", expiration_ttl),
        metadata_json=None if metadata is None else encode_metadata(metadata),
    )
    return Call("KV.Put", request, _none)


def build_delete(binding: str, key: Any) -> Call[None]:
    return Call("KV.Delete", kv_pb2.KVDeleteRequest(binding=binding, key=_check_key(key)), _none)


def parse_list(response: kv_pb2.KVListResponse) -> KVListResult:
    keys = [
        KVKey(
            name=k.name,
            expiration=k.expiration if k.HasField("expiration") else None,
            metadata=decode_metadata(k),
        )
        for k in response.keys
    ]
    complete = response.list_complete
    return KVListResult(
        keys=keys, list_complete=complete, cursor=None if complete else response.cursor or None
    )


def build_list(
    binding: str, prefix: str | None = None, limit: Any = None, cursor: str | None = None
) -> Call[KVListResult]:
    request = kv_pb2.KVListRequest(
        binding=binding, prefix=prefix or "", limit=_opt_int("limit", limit), cursor=cursor or ""
    )
    return Call("KV.List", request, parse_list)


# --- the bindings -------------------------------------------------------------------------------


class _KVBase:
    __slots__ = ("_binding", "_transport")

    def __init__(self, transport: Any, binding: str) -> None:
        self._transport = transport
        self._binding = binding

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._binding}>"


class KVNamespace(_KVBase):
    """A kv binding for asyncio code: ``await env.CACHE.get("k")``."""

    _transport: AsyncTransport

    @overload
    async def get(
        self, key: str, type: Literal["text"] = "text", *, cache_ttl: int | None = None
    ) -> str | None: ...
    @overload
    async def get(self, key: str, type: Literal["json"], *, cache_ttl: int | None = None) -> Any: ...
    @overload
    async def get(
        self, key: str, type: Literal["bytes"], *, cache_ttl: int | None = None
    ) -> bytes | None: ...
    @overload
    async def get(
        self, key: Sequence[str], type: Literal["text", "json"] = "text", *, cache_ttl: int | None = None
    ) -> dict[str, Any]: ...
    async def get(
        self, key: str | Sequence[str], type: ValueType = "text", *, cache_ttl: int | None = None
    ) -> Any:
        """The value, or None when the key is missing; a list of keys gives a dict (one bulk call)."""
        return await self._transport.call(build_get(self._binding, key, type, cache_ttl))

    @overload
    async def get_with_metadata(
        self, key: str, type: ValueType = "text", *, cache_ttl: int | None = None
    ) -> KVValueWithMetadata[Any]: ...
    @overload
    async def get_with_metadata(
        self, key: Sequence[str], type: Literal["text", "json"] = "text", *, cache_ttl: int | None = None
    ) -> dict[str, KVValueWithMetadata[Any]]: ...
    async def get_with_metadata(
        self, key: str | Sequence[str], type: ValueType = "text", *, cache_ttl: int | None = None
    ) -> Any:
        """Value and metadata; ``KVValueWithMetadata(None, None)`` when the key is missing."""
        return await self._transport.call(build_get(self._binding, key, type, cache_ttl, with_metadata=True))

    async def put(
        self,
        key: str,
        value: Any,
        *,
        expiration: int | None = None,
        expiration_ttl: int | None = None,
        metadata: Any = None,
    ) -> None:
        """Store str (UTF-8), bytes-like, or a (sync or async) iterable of str or bytes chunks."""
        data = await encode_value_async(value)
        call = build_put(
            self._binding, key, data, expiration=expiration, expiration_ttl=expiration_ttl, metadata=metadata
        )
        await self._transport.call(call)

    async def delete(self, key: str) -> None:
        """Delete a key; deleting a missing key succeeds."""
        await self._transport.call(build_delete(self._binding, key))

    async def list(
        self, *, prefix: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> KVListResult:
        """One page of keys sorted by their UTF-8 bytes; pass ``result.cursor`` back for the next."""
        return await self._transport.call(build_list(self._binding, prefix, limit, cursor))

    async def iter_keys(self, prefix: str | None = None) -> AsyncIterator[KVKey]:
        """Every key under ``prefix``, following cursors page by page."""
        cursor: str | None = None
        while True:
            page = await self.list(prefix=prefix, cursor=cursor)
            for key in page.keys:
                yield key
            if page.list_complete or not page.cursor:
                return
            cursor = page.cursor


class KVNamespaceSync(_KVBase):
    """A kv binding for blocking code (``connect_sync()``); same methods, no ``await``."""

    _transport: SyncTransport

    @overload
    def get(
        self, key: str, type: Literal["text"] = "text", *, cache_ttl: int | None = None
    ) -> str | None: ...
    @overload
    def get(self, key: str, type: Literal["json"], *, cache_ttl: int | None = None) -> Any: ...
    @overload
    def get(self, key: str, type: Literal["bytes"], *, cache_ttl: int | None = None) -> bytes | None: ...
    @overload
    def get(
        self, key: Sequence[str], type: Literal["text", "json"] = "text", *, cache_ttl: int | None = None
    ) -> dict[str, Any]: ...
    def get(self, key: str | Sequence[str], type: ValueType = "text", *, cache_ttl: int | None = None) -> Any:
        """The value, or None when the key is missing; a list of keys gives a dict (one bulk call)."""
        return self._transport.call(build_get(self._binding, key, type, cache_ttl))

    @overload
    def get_with_metadata(
        self, key: str, type: ValueType = "text", *, cache_ttl: int | None = None
    ) -> KVValueWithMetadata[Any]: ...
    @overload
    def get_with_metadata(
        self, key: Sequence[str], type: Literal["text", "json"] = "text", *, cache_ttl: int | None = None
    ) -> dict[str, KVValueWithMetadata[Any]]: ...
    def get_with_metadata(
        self, key: str | Sequence[str], type: ValueType = "text", *, cache_ttl: int | None = None
    ) -> Any:
        """Value and metadata; ``KVValueWithMetadata(None, None)`` when the key is missing."""
        return self._transport.call(build_get(self._binding, key, type, cache_ttl, with_metadata=True))

    def put(
        self,
        key: str,
        value: Any,
        *,
        expiration: int | None = None,
        expiration_ttl: int | None = None,
        metadata: Any = None,
    ) -> None:
        """Store str (UTF-8), bytes-like, or an iterable of str or bytes chunks."""
        call = build_put(
            self._binding,
            key,
            encode_value(value),
            expiration=expiration,
            expiration_ttl=expiration_ttl,
            metadata=metadata,
        )
        self._transport.call(call)

    def delete(self, key: str) -> None:
        """Delete a key; deleting a missing key succeeds."""
        self._transport.call(build_delete(self._binding, key))

    def list(
        self, *, prefix: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> KVListResult:
        """One page of keys sorted by their UTF-8 bytes; pass ``result.cursor`` back for the next."""
        return self._transport.call(build_list(self._binding, prefix, limit, cursor))

    def iter_keys(self, prefix: str | None = None) -> Iterator[KVKey]:
        """Every key under ``prefix``, following cursors page by page."""
        cursor: str | None = None
        while True:
            page = self.list(prefix=prefix, cursor=cursor)
            yield from page.keys
            if page.list_complete or not page.cursor:
                return
            cursor = page.cursor
