"""Every backend the conformance suites run on: one `Backend` entry each.

A backend joins the suites of the binding types it serves by one entry in BACKENDS: for each type
it serves, how to make a project whose bindings are on it (each suite's bindings are listed on
its field below), and the capabilities the suites choose by. Suites never ask for a backend by
name. One entry serves several types (a connection kind that serves kv and sql, a gateway that
serves all four) by filling in several fields: the fields are typed per binding type because
each suite needs something of its own (the SQL dialect, the queue options naming a queue).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sqlite3
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis
from conformance.gateway_backend import through_gateway
from objects_support import MotoServer, s3_project
from services import ensure, is_up
from support import MYSQL, POSTGRES, SqlServer, write_project


@dataclass(frozen=True)
class Project:
    """A project folder whose bindings are on one backend."""

    config: Path  # its bindingd.yaml; the folder holding it is the project root
    database: str = ""  # sql on a server: the throwaway database of the bindings

    @property
    def root(self) -> Path:
        return self.config.parent


class MakeProject(Protocol):
    """Writes the project into `root` (an empty folder), makes what its bindings need on the
    backend, and removes that again on exit. `request` gives the pytest fixtures it needs;
    `timeout` is the daemon's time limit per call to a store it reaches over the network."""

    def __call__(
        self, root: Path, request: pytest.FixtureRequest, *, timeout: float = 10.0
    ) -> contextlib.AbstractAsyncContextManager[Project]: ...


@dataclass(frozen=True)
class SqlSide:
    """How a backend serves sql bindings."""

    # APP_DB (read-write), RO_DB (read-only) and SLOW_DB (timeout: 1) on one database;
    # env production protected.
    project: MakeProject
    # The SQL the suite sends: "sqlite", "postgres" or "mysql".
    dialect: str
    # The server the suite looks at directly (running statements, credentials), if any.
    server: SqlServer | None = None


@dataclass(frozen=True)
class Arrived:
    """A message as it reached a queue's consumer."""

    id: str
    body: object
    content_type: str
    attempts: int
    timestamp: float  # when it was sent, seconds since the epoch


@dataclass(frozen=True)
class QueueSide:
    """How a backend serves queue bindings: the suite writes its own projects from these."""

    # Its connection entry (YAML, one line), or "" when its bindings need none.
    connection: str
    # The binding options naming the queue `name` on it.
    options: Callable[[str], str]
    # Deletes the queues of these names from it.
    cleanup: Callable[[list[str]], None]
    # Messages are consumed through the daemon. False: its bindings only send (Cloudflare: the
    # proxy Worker has producer bindings), and the send tests read what arrived from the
    # backend's own consumer with `arrived` instead.
    consumes: bool = True
    # Binding lines (YAML, indented) the project also needs, for `arrived`.
    extra_bindings: str = ""
    # What has arrived so far on the queue `name`, in order, read through the daemon's client.
    arrived: Callable[[Any, str], Awaitable[list[Arrived]]] | None = None
    # Made per test from the session's fixtures (the Miniflare Worker and its pool), where the
    # side depends on them; the suite calls it and uses what it returns.
    per_test: Callable[[pytest.FixtureRequest], QueueSide] | None = None


BINDING_TYPES = ("kv", "objects", "sql", "queue")


@dataclass(frozen=True)
class Backend:
    """One backend: the binding types it serves (a field per type, None where it serves none)
    and its capabilities."""

    name: str  # the test id
    # CACHE and OTHER, two separate namespaces.
    kv: MakeProject | None = None
    # ASSETS and OTHER, separate; READONLY (access: read-only); env production protected.
    objects: MakeProject | None = None
    sql: SqlSide | None = None
    queue: QueueSide | None = None
    # The server tests/services.py starts ("" for none), and the shell command that stops it
    # (for the tests that stop a backend mid-run; "" when it cannot be stopped).
    service: str = ""
    stop: str = ""

    # Capabilities: where backends differ by nature, the suites choose by these.
    # Objects are stored under the binding's state folder: blobs/ holds one file per object,
    # tmp/ the bodies being written.
    on_local_disk: bool = False
    # Bodies are spooled to the binding's state folder (spool/) before they go to the store.
    spools_to_disk: bool = False
    # Custom metadata must be printable ASCII (the store carries it in HTTP headers).
    ascii_custom_metadata: bool = False
    # Aborting a multipart upload id nobody made is an error (the store can tell it never was).
    knows_upload_ids: bool = False
    # Served through a gateway in this test process (gateway_backend): a suite that writes its
    # own projects (queue) serves them with `gateway_backend.serving_gateway`, and a test that
    # needs the daemon as a process of its own (killed, drained, `bindingd check`) does not
    # apply (tests/gateway/test_remote.py runs that path with every hop a process).
    behind_gateway: bool = False
    # The 2 GiB memory test (test_objects_memory) runs on it. It measures the daemon's side only:
    # behind a gateway that side is the same relay whatever the gateway's provider, so one
    # gateway entry runs it (the providers themselves run it directly).
    memory_test: bool = True
    # A multipart part's etag is its md5, and the object's S3's md5-of-md5s-N; False: the
    # store's own (R2 makes them opaque).
    md5_part_etags: bool = True
    # Keys expire by the daemon's clock (the suites' FakeClock moves them); False: the store
    # expires them by its own (Workers KV), so the expiry tests cannot move time forward.
    kv_expiry_follows_clock: bool = True
    # Read-only sql calls (RO_DB, a protected env) are served in a read-only transaction;
    # False: the backend cannot enforce read-only (D1), so every read-only call is refused
    # (PERMISSION_DENIED) and the suite reads through APP_DB instead.
    sql_read_only: bool = True
    # A statement past its time limit or cancelled is stopped on the backend; False: it runs to
    # its end there (D1 cannot stop one), so the timeout and cancellation tests do not apply.
    sql_stops_statements: bool = True
    # Results of a million rows stream through (the flat-memory test); False: the backend
    # answers a statement whole (D1 through the proxy Worker), so the test does not apply.
    sql_streams_rows: bool = True
    # Integers bind and come back as 64-bit SQLite INTEGERs; False: the store carries numbers as
    # JavaScript doubles (D1): integers past 2**53 are rounded, and a bound integer is a REAL
    # where no column type makes it one (42 stored in a text column reads '42.0').
    sql_exact_integers: bool = True

    def serves(self, binding_type: str) -> bool:
        assert binding_type in BINDING_TYPES, binding_type
        return getattr(self, binding_type) is not None


def serving(binding_type: str, where: Callable[[Backend], bool] = lambda b: True) -> list[Backend]:
    """The backends serving `binding_type` (and meeting `where`), by name."""
    return sorted((b for b in BACKENDS if b.serves(binding_type) and where(b)), key=lambda b: b.name)


def params(backends: list[Backend]) -> list[object]:
    """pytest parameters of `backends`, each with its name as the test id."""
    return [pytest.param(b, id=b.name) for b in backends]


def stop_service(backend: Backend, timeout: float = 60.0) -> None:
    """Stops the backend's server and waits until its port no longer answers (ensure() starts it
    again)."""
    subprocess.run(backend.stop, shell=True, check=False, capture_output=True, timeout=120)
    down_by = time.monotonic() + timeout
    while is_up(backend.service) and time.monotonic() < down_by:
        time.sleep(0.2)
    assert not is_up(backend.service), f"{backend.stop} did not stop {backend.name}"


def written(config: str) -> MakeProject:
    """A project that is its config alone: nothing to make on the backend."""

    @contextlib.asynccontextmanager
    async def make(
        root: Path, request: pytest.FixtureRequest, *, timeout: float = 10.0
    ) -> AsyncIterator[Project]:
        yield Project(write_project(root, config))

    return make


# --- kv ------------------------------------------------------------------------------------------

LOCAL_KV = """
    version: 1
    bindings:
      CACHE: { type: kv }
      OTHER: { type: kv }
"""


REDIS_URL = "redis://127.0.0.1:6379/0"


@contextlib.asynccontextmanager
async def redis_kv(
    root: Path, request: pytest.FixtureRequest, *, timeout: float = 10.0
) -> AsyncIterator[Project]:
    """CACHE and OTHER on one Redis connection, each under its own prefix; the keys of the run
    are removed at the end."""
    ensure("redis")
    run = f"bindingd-test:{uuid.uuid4().hex[:12]}:"
    config = f"""
        version: 1
        connections:
          test-redis: {{ kind: redis, url: "{REDIS_URL}" }}
        bindings:
          CACHE: {{ type: kv, connection: test-redis, prefix: "{run}cache:" }}
          OTHER: {{ type: kv, connection: test-redis, prefix: "{run}other:" }}
    """
    try:
        yield Project(write_project(root, config))
    finally:
        if is_up("redis"):
            client = redis.Redis.from_url(REDIS_URL)
            for name in client.scan_iter(match=f"{run}*", count=1000):
                client.unlink(name)
            client.close()


@contextlib.asynccontextmanager
async def postgres_kv(
    root: Path, request: pytest.FixtureRequest, *, timeout: float = 10.0
) -> AsyncIterator[Project]:
    """CACHE and OTHER on one postgres connection, each in its own table of a throwaway
    database, beside a sql binding of the same connection entry (one client serves both)."""
    async with POSTGRES.database() as database:
        config = f"""
            version: 1
            connections:
              test-pg: {{ kind: postgres, dsn: "{POSTGRES.dsn(database)}" }}
            bindings:
              CACHE: {{ type: kv, connection: test-pg, timeout: {timeout} }}
              OTHER: {{ type: kv, connection: test-pg, table: other_kv, timeout: {timeout} }}
              BESIDE_DB: {{ type: sql, connection: test-pg }}
        """
        yield Project(write_project(root, config), database)


# --- objects -------------------------------------------------------------------------------------


LOCAL_OBJECTS = """
    version: 1
    bindings:
      ASSETS: { type: objects }
      OTHER: { type: objects }
      READONLY: { type: objects, access: read-only }
    envs:
      production: { protected: true }
"""


@contextlib.asynccontextmanager
async def s3_objects(
    root: Path, request: pytest.FixtureRequest, *, timeout: float = 10.0
) -> AsyncIterator[Project]:
    """Buckets of their own on `moto_server` (tests/conftest.py); moto forgets them when it stops."""
    moto: MotoServer = request.getfixturevalue("moto_server")
    yield Project(s3_project(root, moto, timeout=timeout))


# --- sql -----------------------------------------------------------------------------------------


def _sql_config(connection: str) -> str:
    return f"""
        version: 1
        connections:
          {connection}
        bindings:
          APP_DB: {{ type: sql, connection: db }}
          RO_DB: {{ type: sql, connection: db, access: read-only }}
          SLOW_DB: {{ type: sql, connection: db, timeout: 1 }}
        envs:
          production:
            protected: true
    """


def _new_sqlite_file(path: Path) -> None:
    """A sqlite connection opens an existing file: created the way the local provider does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()


@contextlib.asynccontextmanager
async def local_sql(
    root: Path, request: pytest.FixtureRequest, *, timeout: float = 10.0
) -> AsyncIterator[Project]:
    # APP_DB is the local provider; RO_DB and SLOW_DB open the same file as a `sqlite` connection.
    config = write_project(
        root,
        """
        version: 1
        connections:
          db: { kind: sqlite, path: .bindingd/state/sql/APP_DB.sqlite3 }
        bindings:
          APP_DB: { type: sql }
          RO_DB: { type: sql, connection: db, access: read-only }
          SLOW_DB: { type: sql, connection: db, timeout: 1 }
        envs:
          production:
            protected: true
        """,
    )
    _new_sqlite_file(root / ".bindingd/state/sql/APP_DB.sqlite3")
    yield Project(config)


@contextlib.asynccontextmanager
async def sqlite_sql(
    root: Path, request: pytest.FixtureRequest, *, timeout: float = 10.0
) -> AsyncIterator[Project]:
    _new_sqlite_file(root / "data.sqlite3")
    yield Project(write_project(root, _sql_config("db: { kind: sqlite, path: data.sqlite3 }")))


def _server_sql(server: SqlServer) -> MakeProject:
    """The bindings on a throwaway database of `server`."""

    @contextlib.asynccontextmanager
    async def make(
        root: Path, request: pytest.FixtureRequest, *, timeout: float = 10.0
    ) -> AsyncIterator[Project]:
        async with server.database() as name:
            connection = f'db: {{ kind: {server.kind}, dsn: "{server.dsn(name)}", max_size: 8 }}'
            yield Project(write_project(root, _sql_config(connection)), name)

    return make


# --- queue ---------------------------------------------------------------------------------------

NATS_URL = "nats://127.0.0.1:4222"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def no_cleanup(names: list[str]) -> None:
    return None


def nats_cleanup(names: list[str]) -> None:
    async def delete() -> None:
        import nats
        from nats.js.errors import NotFoundError

        nc = await nats.connect(NATS_URL)
        try:
            js = nc.jetstream()
            for name in names:
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(name)
        finally:
            await nc.close()

    asyncio.run(delete())


def rabbit_cleanup(names: list[str]) -> None:
    async def delete() -> None:
        import aio_pika

        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            for name in names:
                for queue in (name, *(f"{name}.delay.{d}" for d in range(0, 6))):
                    await channel.queue_delete(queue)
        finally:
            await connection.close()

    asyncio.run(delete())


# --- cloudflare ----------------------------------------------------------------------------------


def _cloudflare(*bindings: tuple[str, str, str, str]) -> MakeProject:
    """Bindings (name, type, pool prefix, extra options) on the session's proxy Worker in
    Miniflare (`cloudflare_worker`, tests/conftest.py), each on a KV namespace, R2 bucket or D1
    database of its own from the Worker's pool; APP_DB, RO_DB and SLOW_DB share one database."""

    @contextlib.asynccontextmanager
    async def make(
        root: Path, request: pytest.FixtureRequest, *, timeout: float = 10.0
    ) -> AsyncIterator[Project]:
        worker = request.getfixturevalue("cloudflare_worker")
        db = worker.take("D1_P")
        lines = "\n".join(
            f"  {name}: {{ type: {kind}, connection: cf, "
            f"remote_binding: {db if pool == 'D1_P' else worker.take(pool)}{extra} }}"
            for name, kind, pool, extra in bindings
        )
        config = (
            "version: 1\nconnections:\n  "
            + worker.connection()
            + f"\nbindings:\n{lines}\nenvs:\n  production: {{ protected: true }}\n"
        )
        yield Project(write_project(root, config))

    return make


def _cloudflare_queues(request: pytest.FixtureRequest) -> QueueSide:
    """Queues on the proxy Worker's spare producers (Q_P<i>, each sending to queue
    bindingd-q<i>), whose messages a second Worker in the same Miniflare consumes and records in
    the KV namespace RECEIVED (worker/serve.mjs): the suite reads them through the daemon."""
    worker = request.getfixturevalue("cloudflare_worker")
    producers: dict[str, str] = {}

    def options(name: str) -> str:
        producers[name] = worker.take("Q_P")
        return f"connection: cf, remote_binding: {producers[name]}"

    async def arrived(env: Any, name: str) -> list[Arrived]:
        prefix = f"bindingd-q{producers[name].removeprefix('Q_P')}/"
        keys = (await env.RECEIVED.list(prefix=prefix)).keys
        out = []
        for key in keys:
            r = await env.RECEIVED.get(key.name, "json")
            body = base64.b64decode(r["body"]) if r["contentType"] == "bytes" else r["body"]
            out.append(Arrived(r["id"], body, r["contentType"], r["attempts"], r["timestamp"] / 1000))
        return out

    return QueueSide(
        worker.connection(),
        options,
        no_cleanup,  # the pool's queues are used once
        consumes=False,
        extra_bindings="RECEIVED: { type: kv, connection: cf }",
        arrived=arrived,
    )


# --- the backends --------------------------------------------------------------------------------

BACKENDS: list[Backend] = [
    Backend(
        "local",
        kv=written(LOCAL_KV),
        objects=written(LOCAL_OBJECTS),
        sql=SqlSide(local_sql, "sqlite"),
        queue=QueueSide("", lambda name: f"queue: {name}", no_cleanup),
        on_local_disk=True,
        knows_upload_ids=True,
    ),
    Backend("sqlite", sql=SqlSide(sqlite_sql, "sqlite")),
    # The proxy Worker in Miniflare (workerd with its KV, R2, D1 and queues), one per session. Its
    # queue bindings only send: the queue suite's send tests read what arrived from a consumer
    # Worker beside it, and the consume tests do not apply.
    Backend(
        "cloudflare",
        kv=_cloudflare(("CACHE", "kv", "KV_P", ""), ("OTHER", "kv", "KV_P", "")),
        objects=_cloudflare(
            ("ASSETS", "objects", "R2_P", ""),
            ("OTHER", "objects", "R2_P", ""),
            ("READONLY", "objects", "R2_P", ", access: read-only"),
        ),
        sql=SqlSide(
            _cloudflare(
                ("APP_DB", "sql", "D1_P", ""),
                ("RO_DB", "sql", "D1_P", ", access: read-only"),
                ("SLOW_DB", "sql", "D1_P", ", timeout: 1"),
            ),
            "sqlite",
        ),
        spools_to_disk=True,
        # A 2 GiB body through Miniflare costs minutes of CI for what the s3 entry measures.
        memory_test=False,
        md5_part_etags=False,
        kv_expiry_follows_clock=False,
        sql_read_only=False,
        sql_stops_statements=False,
        sql_streams_rows=False,
        sql_exact_integers=False,
        queue=QueueSide("", str, no_cleanup, consumes=False, per_test=_cloudflare_queues),
    ),
    Backend(
        "postgres",
        kv=postgres_kv,
        sql=SqlSide(_server_sql(POSTGRES), "postgres", POSTGRES),
        service="postgres",
        stop="pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main stop",
    ),
    Backend(
        "mysql",
        sql=SqlSide(_server_sql(MYSQL), "mysql", MYSQL),
        service="mysql",
        stop="start-stop-daemon --stop --oknodo --retry 30 --exec /usr/sbin/mariadbd",
    ),
    Backend("redis", kv=redis_kv, service="redis"),
    # Through a gateway (worker -> daemon -> gateway over TLS -> provider; see gateway_backend):
    # the local providers; and a real remote backend of each type behind it: Redis kv, S3
    # objects and NATS queues (gateway-remote), PostgreSQL sql (gateway-postgres, which the sql
    # suite also restarts under the gateway).
    Backend(
        "gateway",
        kv=through_gateway(written(LOCAL_KV)),
        objects=through_gateway(written(LOCAL_OBJECTS)),
        sql=SqlSide(through_gateway(sqlite_sql), "sqlite"),
        queue=QueueSide("", lambda name: f"queue: {name}", no_cleanup),
        knows_upload_ids=True,
        behind_gateway=True,
    ),
    Backend(
        "gateway-remote",
        kv=through_gateway(redis_kv),
        objects=through_gateway(s3_objects),
        queue=QueueSide(
            f"nats: {{ kind: nats, url: '{NATS_URL}' }}",
            lambda name: f"connection: nats, stream: {name}, ack_wait: 3",
            nats_cleanup,
        ),
        # Started if down; never stopped by the suites (no `stop`): the restart tests run on
        # the direct entries.
        service="nats",
        ascii_custom_metadata=True,
        behind_gateway=True,
        memory_test=False,
    ),
    Backend(
        "gateway-postgres",
        sql=SqlSide(through_gateway(_server_sql(POSTGRES)), "postgres", POSTGRES),
        service="postgres",
        stop="pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main stop",
        behind_gateway=True,
    ),
    Backend("s3", objects=s3_objects, spools_to_disk=True, ascii_custom_metadata=True),
    Backend(
        "nats",
        queue=QueueSide(
            f"nats: {{ kind: nats, url: '{NATS_URL}' }}",
            lambda name: f"connection: nats, stream: {name}, ack_wait: 3",
            nats_cleanup,
        ),
        service="nats",
        stop="pkill -x nats-server",
    ),
    Backend(
        "rabbitmq",
        queue=QueueSide(
            f"rabbit: {{ kind: rabbitmq, url: '{AMQP_URL}' }}",
            lambda name: f"connection: rabbit, queue: {name}",
            rabbit_cleanup,
        ),
        service="rabbitmq",
        stop="rabbitmqctl stop",
    ),
]
