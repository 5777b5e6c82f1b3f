"""What `bindingd gateway grant` and `bindingd gateway revoke` do, given the state store that
gateway.yaml's `state:` names (the CLI loads the config and passes the store, unopened).

`grant` prints the one-time enrolment code as the LAST line of its output (pinned: scripts
take it with `tail -1`); everything before it is for the person reading.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO, TypeVar

from bindingd.errors import invalid_argument
from bindingd.gateway import sessions
from bindingd.gateway.state import StateStore
from bindingd.gateway.tokens import rfc3339

T = TypeVar("T")


async def with_store(store: StateStore, fn: Callable[[StateStore], Awaitable[T]]) -> T:
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def grant(
    store: StateStore,
    user: str,
    groups: Sequence[str] = (),
    *,
    out: TextIO | None = None,
    now: float | None = None,
) -> str:
    """Record a one-time enrolment code for `user` and print it, last; return it."""
    out = out or sys.stdout
    issued = time.time() if now is None else now
    code = asyncio.run(with_store(store, lambda s: sessions.grant(s, user, groups, issued)))
    in_groups = f" (groups: {', '.join(groups)})" if groups else ""
    until = rfc3339(int(issued + sessions.CODE_TTL_S))
    print(f"one-time enrolment code for user {user}{in_groups}, valid until {until}:", file=out)
    print(f"{user} runs `bindingd login --env ENV` and enters it (or passes --code)", file=out)
    print(code, file=out, flush=True)
    return code


def revoke(
    store: StateStore,
    *,
    user: str | None = None,
    token: str | None = None,
    out: TextIO | None = None,
    now: float | None = None,
) -> None:
    """Revoke a user (every token issued so far and every enrolled device) or one token by jti.
    Every gateway instance following the store stops accepting them within seconds."""
    out = out or sys.stdout
    if (user is None) == (token is None):
        raise invalid_argument("revoke takes either --user NAME or --token JTI")
    at = time.time() if now is None else now
    if user is not None:
        if not user:
            raise invalid_argument("revoke --user needs a user name")
        count = asyncio.run(with_store(store, lambda s: s.revoke_user(user, at)))
        devices = f"{count} device{'s' if count != 1 else ''}"
        print(
            f"revoked user {user}: their tokens and {devices}; a new `gateway grant` lets them back in",
            file=out,
        )
    else:
        assert token is not None
        if not token:
            raise invalid_argument("revoke --token needs a token id (jti)")
        asyncio.run(with_store(store, lambda s: s.revoke_token(token, at)))
        print(f"revoked token {token}", file=out)
