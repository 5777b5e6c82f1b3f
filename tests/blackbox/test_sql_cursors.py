"""The cursor of a large Query answer (Query, then Fetch), and the blocking client, on the
real daemon with a local sql binding."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from bindingd_client import SqlError, connect, connect_sync
from bindingd_client.proto import database_pb2, database_pb2_grpc
from support import daemon_in_process, write_project

import bindingd.server.sql as sql_service

ROWS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) SELECT x FROM c"


def _query(binding: str = "APP_DB") -> database_pb2.SqlQueryRequest:
    return database_pb2.SqlQueryRequest(binding=binding, statement=database_pb2.SqlStatement(sql=ROWS))


async def test_cursor_is_read_once_by_its_binding_and_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_service, "CURSOR_TTL_S", 1.0)
    config = write_project(
        tmp_path, "version: 1\nbindings:\n  APP_DB: { type: sql }\n  OTHER: { type: sql }\n"
    )
    async with (
        daemon_in_process(config) as daemon,
        grpc.aio.insecure_channel(f"unix://{daemon.socket_path}") as channel,
    ):
        stub = database_pb2_grpc.DatabaseStub(channel)
        first = await stub.Query(_query())
        assert list(first.columns) == ["x"] and len(first.rows) == 500 and first.cursor
        assert not first.HasField("meta")
        # Another binding cannot read it.
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await stub.CloseCursor(database_pb2.SqlCursorRequest(binding="OTHER", cursor=first.cursor))
        assert other.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        rest = [
            m async for m in stub.Fetch(database_pb2.SqlCursorRequest(binding="APP_DB", cursor=first.cursor))
        ]
        assert sum(len(m.rows) for m in rest) == 1500
        assert rest[-1].meta.rows_read == 2000
        # Read once.
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stub.CloseCursor(database_pb2.SqlCursorRequest(binding="APP_DB", cursor=first.cursor))
        assert "unknown, used or expired" in (again.value.details() or "")

        # An unread cursor is dropped after its time, and the binding serves on.
        abandoned = await stub.Query(_query())
        await asyncio.sleep(2.0)
        assert abandoned.cursor not in daemon_cursors(daemon)
        env = await connect(endpoint=f"unix://{daemon.socket_path}")
        try:
            assert await env.APP_DB.prepare("SELECT 7 AS n").first("n") == 7
            with pytest.raises(SqlError, match="empty"):
                await env.APP_DB.prepare("  ").all()
        finally:
            await env.aclose()


def daemon_cursors(daemon: object) -> set[str]:
    """The cursors the daemon's Database service holds now (found through the gc: the service
    object is private to the server)."""
    import gc

    services = [o for o in gc.get_objects() if isinstance(o, sql_service.SqlService)]
    return {cursor for service in services for cursor in service._parked}


async def test_blocking_client(tmp_path: Path) -> None:
    config = write_project(tmp_path, "version: 1\nbindings:\n  APP_DB: { type: sql }\n")
    async with daemon_in_process(config) as daemon:

        def work() -> None:
            with connect_sync(endpoint=f"unix://{daemon.socket_path}") as env:
                db = env.APP_DB
                db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
                insert = db.prepare("INSERT INTO t (id, v) VALUES (?, ?)")
                results = db.batch([insert.bind(1, "a"), insert.bind(2, "b")])
                assert [r.meta["changes"] for r in results] == [1, 1]
                assert db.prepare("SELECT v FROM t WHERE id = ?").bind(2).first("v") == "b"
                assert db.prepare("SELECT id FROM t ORDER BY id").raw() == [[1], [2]]
                assert len(db.prepare(ROWS).all().results) == 2000
                assert db.prepare(ROWS).first() == {"x": 1}
                assert sum(1 for _ in db.prepare(ROWS).rows()) == 2000

        await asyncio.to_thread(work)
