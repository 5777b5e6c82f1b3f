"""The list cursor of KV and of local object listings: the list's prefix and the last key (or
delimited prefix) returned, as unpadded URL-safe base64 of compact JSON. Opaque to clients, who
hold them between calls: the bytes of a cursor must not change from one release to the next.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from bindingd.errors import invalid_argument

# Workers KV and R2 list at most this many keys a page, and this many when no limit is given.
MAX_LIST_LIMIT = 1000


@dataclass(frozen=True)
class ListCursor:
    """The cursors of one binding type. `ensure_ascii`: KV's escape non-ASCII characters in the
    JSON (\\u00fc), object listings' keep them as UTF-8. `invalid`: the INVALID_ARGUMENT message
    for a cursor that is not one, or was made for another prefix."""

    ensure_ascii: bool
    invalid: str

    def encode(self, prefix: str, after: str) -> str:
        """The cursor of a page that ended at `after`: the next page starts strictly after it."""
        data = {"p": prefix, "a": after}
        raw = json.dumps(data, separators=(",", ":"), ensure_ascii=self.ensure_ascii).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, cursor: str, prefix: str) -> str | None:
        """Where the next page starts (after it), or None for the first page."""
        if not cursor:
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        except (binascii.Error, ValueError, RecursionError):  # RecursionError: JSON nested too deep
            raise invalid_argument(self.invalid) from None
        if not isinstance(data, dict) or data.get("p") != prefix or not isinstance(data.get("a"), str):
            raise invalid_argument(self.invalid)
        return data["a"]


def check_list_limit(limit: int | None) -> int:
    """The page size to use: None means the default (MAX_LIST_LIMIT)."""
    if limit is None:
        return MAX_LIST_LIMIT
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise invalid_argument(f"list limit is {limit}; it must be between 1 and {MAX_LIST_LIMIT}")
    return limit
