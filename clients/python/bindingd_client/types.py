"""Result types, shaped like the Workers runtime's (snake_case) so ported code reads the same."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["BindingInfo", "KVKey", "KVListResult", "KVValueWithMetadata"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KVValueWithMetadata(Generic[T]):
    """What ``get_with_metadata`` returns; both fields are None for a missing key."""

    value: T | None
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class KVKey:
    """One key of a ``list`` page; ``expiration`` is seconds since the epoch."""

    name: str
    expiration: int | None = None
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class KVListResult:
    """One ``list`` page; ``cursor`` is None once ``list_complete``."""

    keys: list[KVKey]
    list_complete: bool
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class BindingInfo:
    """What the daemon says about one binding (never a value or a credential)."""

    name: str
    type: str
    env: str = ""
    backend: str = ""
    backend_kind: str = ""
    access: str = ""
    health: str = ""
    health_detail: str = ""
