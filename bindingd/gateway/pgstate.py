"""The gateway's state in PostgreSQL: `state: { kind: postgres, dsn: ... }`, for several
gateway instances sharing enrolments, devices and revocations (issue 14, "Several instances").

The tables are the SQLite store's (bindingd.gateway.state), in a schema of their own
(`bindingd_gateway`), made on first start. What matters with several writers:

- An enrolment code is used once even when two instances redeem it at the same moment: the
  UPDATE ... WHERE used_at IS NULL takes the row lock, and the second UPDATE, re-checking its
  WHERE once the first commits, matches nothing.
- Revocation ids are read in order by every instance (`revocations_since(last id)`). An identity
  column hands out ids in the order transactions start, not the order they commit, so a reader
  could pass over an id committed late; each revocation therefore takes a lock that orders them
  (one at a time: revocations are rare).

Every failure to reach the store is BACKEND_UNAVAILABLE naming it (never its DSN, which may hold
a password); the gateway decides what that means for calls (bindingd.gateway.sessions).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from bindingd.errors import BindingdError, backend_unavailable
from bindingd.gateway.state import Device, EnrolResult, Revocation, RevocationKind, device_from_row

T = TypeVar("T")

SCHEMA_NAME = "bindingd_gateway"
SCHEMA = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA_NAME};
CREATE TABLE IF NOT EXISTS {SCHEMA_NAME}.enrolment_codes (
    code_sha256 TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS {SCHEMA_NAME}.devices (
    thumbprint TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS devices_by_user ON {SCHEMA_NAME}.devices (user_name);
CREATE TABLE IF NOT EXISTS {SCHEMA_NAME}.revocations (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'device', 'jti')),
    subject TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS revocations_by_at ON {SCHEMA_NAME}.revocations (at);
"""
# Two instances starting together both run SCHEMA; this lock makes one wait for the other
# (CREATE ... IF NOT EXISTS alone can still collide on the catalog).
SCHEMA_LOCK = 0x62696E64  # "bind"
_T = SCHEMA_NAME
INSERT_CODE = (
    f"INSERT INTO {_T}.enrolment_codes (code_sha256, user_name, groups_json, created_at, expires_at)"
    " VALUES ($1, $2, $3, $4, $5)"
)
USE_CODE = (
    f"UPDATE {_T}.enrolment_codes SET used_at = $1"
    " WHERE code_sha256 = $2 AND used_at IS NULL AND expires_at > $1"
    " RETURNING user_name, groups_json"
)
WHY_NOT = f"SELECT used_at FROM {_T}.enrolment_codes WHERE code_sha256 = $1"
UPSERT_DEVICE = (
    f"INSERT INTO {_T}.devices (thumbprint, user_name, groups_json, public_key, created_at, revoked_at)"
    " VALUES ($1, $2, $3, $4, $5, NULL)"
    " ON CONFLICT (thumbprint) DO UPDATE SET user_name = excluded.user_name,"
    " groups_json = excluded.groups_json, public_key = excluded.public_key,"
    " created_at = excluded.created_at, revoked_at = NULL"
)
SELECT_DEVICE = (
    "SELECT thumbprint, user_name, groups_json, public_key, created_at, revoked_at"
    f" FROM {_T}.devices WHERE thumbprint = $1"
)
REVOKE_USER_DEVICES = f"UPDATE {_T}.devices SET revoked_at = $1 WHERE user_name = $2 AND revoked_at IS NULL"
REVOKE_DEVICE = f"UPDATE {_T}.devices SET revoked_at = $1 WHERE thumbprint = $2 AND revoked_at IS NULL"
# Orders revocations (see the module's docstring); readers are not blocked by it.
LOCK_REVOCATIONS = f"LOCK TABLE {_T}.revocations IN EXCLUSIVE MODE"
INSERT_REVOCATION = f"INSERT INTO {_T}.revocations (kind, subject, at) VALUES ($1, $2, $3)"
SELECT_REVOCATIONS = f"SELECT id, kind, subject, at FROM {_T}.revocations WHERE id > $1 ORDER BY id"
PRUNE_CODES = f"DELETE FROM {_T}.enrolment_codes WHERE expires_at < $1"
PRUNE_REVOCATIONS = f"DELETE FROM {_T}.revocations WHERE at < $1"
# A store that does not answer within this is down: short, so that a gateway cut off from it
# fails closed within the 5 s a revocation is promised to take (sessions.STALE_S).
TIMEOUT_S = 3.0


class PostgresState:
    """The state store in a PostgreSQL database shared by every gateway instance."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None

    def _down(self, e: BaseException) -> BindingdError:
        # The exception's text may quote the DSN's host and user, never its password; still,
        # only its class is said: the operator has the DSN, and the log is not the place.
        return backend_unavailable(
            f"the gateway's state store (PostgreSQL) cannot be reached or refused the request "
            f"({type(e).__name__}); enrolment, login and revocation wait until it is back"
        )

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=0, max_size=4, timeout=TIMEOUT_S, command_timeout=TIMEOUT_S
                )
            async with self._pool.acquire(timeout=TIMEOUT_S) as conn:
                return await fn(conn)
        except BindingdError:
            raise
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise self._down(e) from None

    async def open(self) -> None:
        async def create(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                await conn.execute(SCHEMA)

        await self._run(create)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def add_code(
        self, code_sha256: str, user: str, groups: tuple[str, ...], created_at: float, expires_at: float
    ) -> None:
        groups_json = json.dumps(list(groups))
        await self._run(
            lambda c: c.execute(INSERT_CODE, code_sha256, user, groups_json, created_at, expires_at)
        )

    async def enrol(self, code_sha256: str, device: Device, now: float) -> tuple[EnrolResult, Device | None]:
        async def run(conn: asyncpg.Connection) -> tuple[EnrolResult, Device | None]:
            async with conn.transaction():
                row = await conn.fetchrow(USE_CODE, now, code_sha256)
                if row is not None:
                    user, groups_json = row["user_name"], row["groups_json"]
                    await conn.execute(
                        UPSERT_DEVICE, device.thumbprint, user, groups_json, device.public_key.hex(), now
                    )
                    groups = tuple(json.loads(groups_json))
                    return EnrolResult.OK, Device(device.thumbprint, user, groups, device.public_key, now)
            used = await conn.fetchrow(WHY_NOT, code_sha256)
            if used is None:
                return EnrolResult.UNKNOWN, None
            return (EnrolResult.USED if used["used_at"] is not None else EnrolResult.EXPIRED), None

        return await self._run(run)

    async def device(self, thumbprint: str) -> Device | None:
        row = await self._run(lambda c: c.fetchrow(SELECT_DEVICE, thumbprint))
        return device_from_row(tuple(row)) if row is not None else None

    async def _revoke(self, kind: RevocationKind, subject: str, at: float, devices_sql: str | None) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                count = 0
                if devices_sql:
                    status = await conn.execute(devices_sql, at, subject)
                    count = int(status.split()[-1])  # "UPDATE n"
                await conn.execute(LOCK_REVOCATIONS)
                await conn.execute(INSERT_REVOCATION, kind.value, subject, at)
                return count

        return await self._run(run)

    async def revoke_user(self, user: str, at: float) -> int:
        return await self._revoke(RevocationKind.USER, user, at, REVOKE_USER_DEVICES)

    async def revoke_device(self, thumbprint: str, at: float) -> bool:
        if await self.device(thumbprint) is None:
            return False
        await self._revoke(RevocationKind.DEVICE, thumbprint, at, REVOKE_DEVICE)
        return True

    async def revoke_token(self, jti: str, at: float) -> None:
        await self._revoke(RevocationKind.JTI, jti, at, None)

    async def revocations_since(self, after_id: int) -> list[Revocation]:
        rows: list[Any] = await self._run(lambda c: c.fetch(SELECT_REVOCATIONS, after_id))
        return [
            Revocation(int(r["id"]), RevocationKind(r["kind"]), str(r["subject"]), float(r["at"]))
            for r in rows
        ]

    async def prune(self, before: float) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(PRUNE_CODES, before)
                await conn.execute(PRUNE_REVOCATIONS, before)

        await self._run(run)
