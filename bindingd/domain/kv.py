"""Workers KV rules that hold whatever the backend: limits, expiry and list cursors.

Services call these before a provider sees a request, so every provider behaves the same and
a broken limit gives INVALID_ARGUMENT with the limit in the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bindingd.domain.cursors import ListCursor
from bindingd.errors import BindingdError, invalid_argument
from bindingd.providers.base import Provider

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 25 * 1024 * 1024
MAX_METADATA_BYTES = 1024
MIN_TTL_S = 60
# Workers' minimum cacheTtl (its docs lowered it from 60 to 30 seconds).
MIN_CACHE_TTL_S = 30
# 9999-12-31T23:59:59Z: later values are almost always milliseconds passed as seconds.
MAX_EXPIRATION = 253402300799
MAX_BULK_KEYS = 100
# Workers KV refuses a bulk get whose values add up to more than 25 MiB (workerd reports the
# store's 413), counting a key asked for twice twice.
MAX_BULK_BYTES = 25 * 1024 * 1024


def check_key(key: str) -> None:
    if key == "":
        raise invalid_argument("KV key is empty; keys need at least one character")
    if key in (".", ".."):
        raise invalid_argument(f'KV key "{key}" is not allowed; "." and ".." cannot be keys')
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise invalid_argument(f"KV key is {size} bytes; the limit is {MAX_KEY_BYTES} bytes")


def check_cache_ttl(cache_ttl: int | None) -> None:
    if cache_ttl is not None and cache_ttl < MIN_CACHE_TTL_S:
        raise invalid_argument(f"cache_ttl is {cache_ttl} s; the minimum is {MIN_CACHE_TTL_S} s")


def check_bulk_keys(keys: list[str]) -> None:
    if len(keys) > MAX_BULK_KEYS:
        raise invalid_argument(f"bulk get of {len(keys)} keys; the limit is {MAX_BULK_KEYS} keys")
    for key in keys:
        check_key(key)


def check_put(
    key: str,
    value: bytes,
    *,
    expiration: int | None,
    expiration_ttl: int | None,
    metadata_json: str | None,
    now: float,
) -> int | None:
    """Validate a put; return the absolute expiration to store (None: never expires)."""
    check_key(key)
    if len(value) > MAX_VALUE_BYTES:
        raise invalid_argument(
            f"KV value is {len(value)} bytes ({_mib(len(value))}); the limit is "
            f"{MAX_VALUE_BYTES // (1024 * 1024)} MiB ({MAX_VALUE_BYTES} bytes)"
        )
    if metadata_json is not None:
        size = len(metadata_json.encode())
        if size > MAX_METADATA_BYTES:
            raise invalid_argument(
                f"KV metadata is {size} bytes of JSON; the limit is {MAX_METADATA_BYTES} bytes"
            )
        try:
            json.loads(metadata_json)
        except ValueError as e:
            raise invalid_argument(f"KV metadata is not valid JSON ({e})") from None
        except RecursionError:
            raise invalid_argument("KV metadata is not valid JSON (nested too deeply)") from None
    # As in Workers KV, expiration_ttl wins when both are given.
    if expiration_ttl is not None:
        if expiration_ttl < MIN_TTL_S:
            raise invalid_argument(f"expiration_ttl is {expiration_ttl} s; the minimum is {MIN_TTL_S} s")
        expiration = int(now) + expiration_ttl
        if expiration > MAX_EXPIRATION:
            raise invalid_argument(f"expiration_ttl is {expiration_ttl} s; it must end before the year 10000")
        return expiration
    if expiration is not None:
        ahead = expiration - now
        if ahead < MIN_TTL_S:
            raise invalid_argument(
                f"expiration {expiration} is {ahead:.0f} s from now; it must be at least "
                f"{MIN_TTL_S} s in the future (seconds since the epoch)"
            )
        if expiration > MAX_EXPIRATION:
            raise invalid_argument(
                f"expiration {expiration} is after the year 9999; it is in seconds since the epoch, "
                "not milliseconds"
            )
        return expiration
    return None


def bulk_too_large() -> BindingdError:
    """What a provider raises when the values of one bulk get add up to over MAX_BULK_BYTES."""
    return invalid_argument(
        f"the values of this bulk get add up to more than {MAX_BULK_BYTES // (1024 * 1024)} MiB "
        f"({MAX_BULK_BYTES} bytes), Workers KV's limit for one bulk get; get these keys in smaller groups"
    )


def check_list_prefix(prefix: str) -> None:
    """A prefix is held to the key limit, as in Workers KV (a longer one could match no key)."""
    size = len(prefix.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise invalid_argument(
            f"KV list prefix is {size} bytes; the limit is {MAX_KEY_BYTES} bytes, as for keys"
        )


# An opaque cursor: the last key returned, so the next page starts strictly after it.
CURSOR = ListCursor(
    ensure_ascii=True,
    invalid="KV list cursor is not valid for this list; pass the cursor from the previous list() "
    "call with the same prefix, or none to start over",
)
encode_cursor = CURSOR.encode
decode_cursor = CURSOR.decode


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.2f} MiB"


# The contract of a KV provider: what it returns, and the Protocol it implements.


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
        values add up to more than `max_bytes`, raise `bulk_too_large()` without
        holding them all."""

    async def put(
        self,
        key: str,
        value: bytes,
        expiration: int | None,
        metadata_json: str | None,
        ttl: int | None = None,
    ) -> None:
        """Store `value`, expiring at `expiration` (seconds since the epoch, by the daemon's
        clock) or never. `ttl` is the caller's expiration_ttl when it gave one, for a store that
        keeps time by its own clock (Cloudflare): sent as a TTL, a minute-long one is not refused
        there for the second between the daemon's now and the store's."""

    async def delete(self, key: str) -> None: ...

    async def list(
        self, prefix: str, after: str | None, limit: int, now: float
    ) -> tuple[list[KVKeyInfo], bool]:
        """Up to `limit` live keys starting with `prefix` and sorting after `after` (by UTF-8
        bytes), in order; the bool says whether more keys follow."""
