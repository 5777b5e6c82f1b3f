"""The gateway's state store: enrolment codes, enrolled devices, revocations.

This is all the state gateway instances share; nothing else lives in memory that another
instance needs (tokens verify with the public key). `StateStore` is the interface; `SqliteState`
serves one machine (several processes on it: WAL, busy timeout, one transaction per change).
A PostgreSQL implementation follows: the statements below are plain SQL both accept, with `?`
placeholders it rewrites to `$n`, and DDL that differs only in the revocations' id column.

Times are seconds since the epoch (float). Codes are stored as their SHA-256 only. Revocations
are an append-only log with an increasing id, so an instance follows it by polling
`revocations_since(last_id)`: cheap (an index range), and immune to clock differences.
(SQLite commits one writer at a time, so ids appear in order; PostgreSQL's identity ids can
commit out of order, so its implementation re-reads a short window below the last id seen.)
"""

from __future__ import annotations

import enum
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bindingd.providers.local.store import SqliteStore


@dataclass(frozen=True)
class Device:
    thumbprint: str  # tokens.thumbprint of the device's public key: the token's cnf.jkt
    user: str
    groups: tuple[str, ...]
    public_key: bytes  # raw Ed25519 public key (32 bytes)
    created_at: float
    revoked_at: float | None = None


class RevocationKind(enum.StrEnum):
    USER = "user"  # every token of `subject` issued at or before `at`, and the user's devices
    DEVICE = "device"  # every token bound to device `subject` (its thumbprint) issued by `at`
    JTI = "jti"  # the one token whose jti is `subject`


@dataclass(frozen=True)
class Revocation:
    id: int
    kind: RevocationKind
    subject: str
    at: float


class EnrolResult(enum.StrEnum):
    OK = "ok"
    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"


class StateStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add_code(
        self, code_sha256: str, user: str, groups: tuple[str, ...], created_at: float, expires_at: float
    ) -> None:
        """Record a one-time enrolment code (its hash only)."""

    async def enrol(self, code_sha256: str, device: Device, now: float) -> tuple[EnrolResult, Device | None]:
        """In one transaction: use the code (unused, not expired at `now`) and record the device
        for the code's user and groups (`device.user` and `.groups` are ignored). On any result
        but OK nothing changes. Re-enrolling a known key (a new code) replaces its record."""

    async def device(self, thumbprint: str) -> Device | None: ...

    async def revoke_user(self, user: str, at: float) -> int:
        """Revoke the user's tokens issued by `at` and every device of theirs; the device count."""

    async def revoke_device(self, thumbprint: str, at: float) -> bool:
        """Revoke a device and its tokens; False when no such device is enrolled."""

    async def revoke_token(self, jti: str, at: float) -> None: ...

    async def revocations_since(self, after_id: int) -> list[Revocation]:
        """The revocations with an id above `after_id`, oldest first."""

    async def prune(self, before: float) -> None:
        """Forget codes that expired and revocations made before `before` (the caller passes
        now minus the longest token lifetime: no token they could revoke is still valid)."""


# One schema for SQLite and PostgreSQL but for the id column (PostgreSQL: BIGINT GENERATED
# ALWAYS AS IDENTITY PRIMARY KEY). "user" is reserved in PostgreSQL: hence user_name.
SCHEMA = """
CREATE TABLE IF NOT EXISTS enrolment_codes (
    code_sha256 TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS devices (
    thumbprint TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS devices_by_user ON devices (user_name);
CREATE TABLE IF NOT EXISTS revocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'device', 'jti')),
    subject TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS revocations_by_at ON revocations (at);
"""

INSERT_CODE = (
    "INSERT INTO enrolment_codes (code_sha256, user_name, groups_json, created_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
# Single use, atomically: of two enrolments with one code, one updates the row, the other none.
USE_CODE = (
    "UPDATE enrolment_codes SET used_at = ?"
    " WHERE code_sha256 = ? AND used_at IS NULL AND expires_at > ?"
    " RETURNING user_name, groups_json"
)
WHY_NOT = "SELECT used_at FROM enrolment_codes WHERE code_sha256 = ?"
UPSERT_DEVICE = (
    "INSERT INTO devices (thumbprint, user_name, groups_json, public_key, created_at, revoked_at)"
    " VALUES (?, ?, ?, ?, ?, NULL)"
    " ON CONFLICT (thumbprint) DO UPDATE SET user_name = excluded.user_name,"
    " groups_json = excluded.groups_json, public_key = excluded.public_key,"
    " created_at = excluded.created_at, revoked_at = NULL"
)
SELECT_DEVICE = (
    "SELECT thumbprint, user_name, groups_json, public_key, created_at, revoked_at"
    " FROM devices WHERE thumbprint = ?"
)
REVOKE_USER_DEVICES = "UPDATE devices SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL"
REVOKE_DEVICE = "UPDATE devices SET revoked_at = ? WHERE thumbprint = ? AND revoked_at IS NULL"
INSERT_REVOCATION = "INSERT INTO revocations (kind, subject, at) VALUES (?, ?, ?)"
SELECT_REVOCATIONS = "SELECT id, kind, subject, at FROM revocations WHERE id > ? ORDER BY id"
PRUNE_CODES = "DELETE FROM enrolment_codes WHERE expires_at < ?"
PRUNE_REVOCATIONS = "DELETE FROM revocations WHERE at < ?"


def device_from_row(row: tuple[Any, ...]) -> Device:
    thumbprint, user, groups_json, public_key, created_at, revoked_at = row
    return Device(
        thumbprint=str(thumbprint),
        user=str(user),
        groups=tuple(json.loads(str(groups_json))),
        public_key=bytes.fromhex(str(public_key)),
        created_at=float(created_at),
        revoked_at=None if revoked_at is None else float(revoked_at),
    )


class SqliteState:
    """The state in one SQLite file, private (0600 in 0700 folders)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = SqliteStore(path, store="gateway state store", thread_name="gateway-state")

    async def open(self) -> None:
        await self._db.open(SCHEMA)

    async def close(self) -> None:
        await self._db.close()

    async def add_code(
        self, code_sha256: str, user: str, groups: tuple[str, ...], created_at: float, expires_at: float
    ) -> None:
        await self._db.execute(
            INSERT_CODE, (code_sha256, user, json.dumps(list(groups)), created_at, expires_at)
        )

    async def enrol(self, code_sha256: str, device: Device, now: float) -> tuple[EnrolResult, Device | None]:
        def run(conn: sqlite3.Connection) -> tuple[EnrolResult, Device | None]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(USE_CODE, (now, code_sha256, now)).fetchone()
                if row is None:
                    conn.execute("ROLLBACK")
                    why = conn.execute(WHY_NOT, (code_sha256,)).fetchone()
                    if why is None:
                        return EnrolResult.UNKNOWN, None
                    return (EnrolResult.USED if why[0] is not None else EnrolResult.EXPIRED), None
                user, groups_json = row
                conn.execute(
                    UPSERT_DEVICE, (device.thumbprint, user, groups_json, device.public_key.hex(), now)
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            recorded = Device(device.thumbprint, user, tuple(json.loads(groups_json)), device.public_key, now)
            return EnrolResult.OK, recorded

        return await self._db.write(run)

    async def device(self, thumbprint: str) -> Device | None:
        rows = self._db.read(SELECT_DEVICE, (thumbprint,))
        return device_from_row(rows[0]) if rows else None

    async def _revoke(self, kind: RevocationKind, subject: str, at: float, devices_sql: str | None) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = conn.execute(devices_sql, (at, subject)).rowcount if devices_sql else 0
                conn.execute(INSERT_REVOCATION, (kind.value, subject, at))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return count

        return await self._db.write(run)

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
        return [
            Revocation(int(id_), RevocationKind(kind), str(subject), float(at))
            for id_, kind, subject, at in self._db.read(SELECT_REVOCATIONS, (after_id,))
        ]

    async def prune(self, before: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(PRUNE_CODES, (before,))
            conn.execute(PRUNE_REVOCATIONS, (before,))

        await self._db.write(run)


def open_state(kind: str, *, path: Path | None = None, dsn: str | None = None) -> StateStore:
    """The store gateway.yaml's `state:` names (not opened yet): `{kind: sqlite, path}` for one
    instance, `{kind: postgres, dsn}` for several (bindingd.gateway.pgstate)."""
    if kind == "sqlite":
        if path is None:
            raise ValueError("a sqlite state store needs a path")
        return SqliteState(path)
    if kind == "postgres":
        if not dsn:
            raise ValueError("a postgres state store needs a dsn")
        from bindingd.gateway.pgstate import PostgresState

        return PostgresState(dsn)
    raise ValueError(f'unknown state store kind "{kind}" (use sqlite or postgres)')
