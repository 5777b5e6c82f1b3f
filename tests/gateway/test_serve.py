"""`bindingd gateway serve` as a team runs it: a real process, real TLS, local bindings in two
envs, tokens minted by the test on the gateway's own state store (as `bindingd login` will), and
every call checked against the policy and audited (issue 14)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from bindingd_client.errors import BindingError, error_from_rpc
from bindingd_client.proto import (
    database_pb2,
    database_pb2_grpc,
    kv_pb2,
    kv_pb2_grpc,
    objects_pb2,
    objects_pb2_grpc,
    queue_pb2,
    queue_pb2_grpc,
    vars_pb2,
    vars_pb2_grpc,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import bindingd_cli

from bindingd.gateway import tokens
from bindingd.gateway.config import load_gateway_config
from bindingd.gateway.device import DeviceKey
from bindingd.gateway.sessions import Sessions
from bindingd.gateway.state import SqliteState

GW = "team-gw"
SECRET = "s3cr3t-api-key-value-7f2c"
KV_VALUE = b"kv-value-never-logged-91ab"
SQL_PARAM = "sql-param-never-logged-44de"
ENVIRON = {"GW_TEST_SECRET": SECRET}
GATEWAY_YAML = """\
    version: 1
    gateway:
      id: team-gw
      listen: "127.0.0.1:{port}"
      tls: {{ cert: gw/server.pem, key: gw/server.key }}
      signing_key: gw/signing.key
      state: {{ kind: sqlite, path: gw/state.sqlite3 }}
      audit: {{ path: gw/audit.jsonl }}
    bindings:
      CACHE: {{ type: kv }}
      APP_DB: {{ type: sql }}
      ASSETS: {{ type: objects }}
      JOBS: {{ type: queue }}
      GREETING: {{ type: var, value: hello }}
      API_KEY: {{ type: secret, value: "${{env:GW_TEST_SECRET}}" }}
    envs:
      staging: {{ token_ttl: 3600 }}
      production: {{ protected: true }}
    policy:
      groups: {{ developers: [alice, bob] }}
      grants:
        - {{ who: "group:developers", env: staging, bindings: "*", actions: [read, write, send, consume] }}
        - {{ who: "group:developers", env: staging, bindings: [API_KEY], actions: [read] }}
        - {{ who: "user:carol", env: staging, bindings: [APP_DB], actions: [read] }}
        - {{ who: "group:developers", env: "*", bindings: "*", actions: "*" }}
        - {{ who: "group:ops", env: staging, bindings: [CACHE], actions: [read] }}
      denies:
        - {{ who: "user:bob", env: staging, bindings: [CACHE], actions: [write] }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Team:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def config(self) -> Path:
        return self.root / "gateway.yaml"

    @property
    def audit(self) -> Path:
        return self.root / "gw" / "audit.jsonl"

    def audit_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def audit_line(self, **fields: object) -> dict[str, object]:
        """The last audit line with these fields; the gateway writes it once the call has ended,
        which may be just after the client saw the status."""
        deadline = time.monotonic() + 5.0
        while True:
            found = [line for line in self.audit_lines() if fields.items() <= line.items()]
            if found:
                return found[-1]
            assert time.monotonic() < deadline, f"no audit line with {fields}"
            time.sleep(0.05)

    def channel(self, ca: Path | None = None) -> grpc.Channel:
        trusted = (ca or self.root / "gw" / "ca.pem").read_bytes()
        return grpc.secure_channel(
            f"localhost:{self.port}", grpc.ssl_channel_credentials(root_certificates=trusted)
        )

    def login(self, user: str, env: str = "staging", groups: tuple[str, ...] = ()) -> str:
        """A device enrolled for `user` and a session opened for `env`: the access token."""
        return asyncio.run(_login(self.config, user, env, groups))


async def _login(config_path: Path, user: str, env: str, groups: tuple[str, ...]) -> str:
    config = load_gateway_config(config_path, environ=ENVIRON)
    store = SqliteState(config.state.path)  # type: ignore[arg-type]
    await store.open()
    try:
        gw = Sessions(store, gateway_id=GW, signing_key=tokens.load_signing_key(config.signing_key))
        device = DeviceKey(Ed25519PrivateKey.generate(), "test")
        code = await gw.grant(user, groups)
        await gw.enrol(code, device.public_raw, device.enrolment_proof(GW, code))
        types = {name: b.type for name, b in config.envs[env].bindings.items()}

        def grants_for(user: str, groups: tuple[str, ...], env: str) -> dict[str, list[str]]:
            return config.policy.granted(user, groups, env, types)

        nonce = gw.challenge()
        signed = device.sign_challenge(GW, env, nonce)
        session = await gw.open(env, device.thumbprint, nonce, signed, grants_for, config.envs[env].token_ttl)
        return session.token
    finally:
        await store.close()


def wait_serving(team: Team, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if team.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {team.proc.returncode}: {team.log.read_text()}")
        with team.channel() as channel:
            try:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                return
            except grpc.RpcError:
                time.sleep(0.1)
    raise AssertionError(f"gateway not serving after {timeout}s: {team.log.read_text()}")


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    root = tmp_path_factory.mktemp("team")
    result = bindingd_cli("gateway", "init", "gw", cwd=root)
    assert result.returncode == 0, result.stderr
    port = free_port()
    (root / "gateway.yaml").write_text(textwrap.dedent(GATEWAY_YAML.format(port=port)))
    log = root / "gateway.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bindingd", "gateway", "serve", "--config", "gateway.yaml"],
            cwd=root,
            stdout=out,
            stderr=out,
            env={**os.environ, **ENVIRON, "BINDINGD_LOG_LEVEL": "debug"},
        )
    team = Team(root, port, proc, log)
    try:
        wait_serving(team)
        yield team
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def revoke(team: Team, user: str) -> None:
    result = bindingd_cli(
        "gateway", "revoke", "--config", "gateway.yaml", "--user", user, cwd=team.root, env=ENVIRON
    )
    assert result.returncode == 0, result.stderr


def refused_within(seconds: float, reason: str, call: Callable[[], object]) -> None:
    """`call` keeps being made until it is refused with `reason`, within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            call()
        except grpc.RpcError as e:
            assert error_from_rpc(e).reason == reason  # type: ignore[arg-type]
            return
        assert time.monotonic() < deadline, f"still served {seconds} s later"
        time.sleep(0.1)


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def refused(call: object, *args: object, **kwargs: object) -> BindingError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return error_from_rpc(info.value)  # type: ignore[arg-type]


def test_an_allowed_developer_uses_every_binding_type(team: Team) -> None:
    token = team.login("alice")
    with team.channel() as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        kv.Put(kv_pb2.KVPutRequest(binding="CACHE", key="greeting", value=KV_VALUE), metadata=auth(token))
        got = kv.Get(kv_pb2.KVGetRequest(binding="CACHE", key="greeting"), metadata=auth(token))
        assert got.entry.value == KV_VALUE

        db = database_pb2_grpc.DatabaseStub(channel)
        db.Exec(
            database_pb2.SqlExecRequest(binding="APP_DB", sql="CREATE TABLE t (v TEXT)"), metadata=auth(token)
        )
        insert = database_pb2.SqlStatement(
            sql="INSERT INTO t (v) VALUES (?)", params=[database_pb2.SqlValue(text=SQL_PARAM)]
        )
        db.Query(database_pb2.SqlQueryRequest(binding="APP_DB", statement=insert), metadata=auth(token))
        rows = db.Query(
            database_pb2.SqlQueryRequest(
                binding="APP_DB", statement=database_pb2.SqlStatement(sql="SELECT v FROM t")
            ),
            metadata=auth(token),
        )
        assert [r.values[0].text for r in rows.rows] == [SQL_PARAM]

        objects = objects_pb2_grpc.ObjectsStub(channel)
        header = objects_pb2.ObjectsPutHeader(binding="ASSETS", key="logo.png")
        objects.Put(
            iter([objects_pb2.ObjectsPutRequest(header=header), objects_pb2.ObjectsPutRequest(chunk=b"png")]),
            metadata=auth(token),
        )
        listed = objects.List(objects_pb2.ObjectsListRequest(binding="ASSETS"), metadata=auth(token))
        assert [o.key for o in listed.objects] == ["logo.png"]

        queue = queue_pb2_grpc.QueueStub(channel)
        message = queue_pb2.QueueMessageSend(body=b"job", content_type="bytes")
        queue.Send(queue_pb2.QueueSendRequest(binding="JOBS", message=message), metadata=auth(token))

        var = vars_pb2_grpc.VarsStub(channel)
        assert var.Get(vars_pb2.VarGetRequest(binding="GREETING"), metadata=auth(token)).value == "hello"
        assert var.Get(vars_pb2.VarGetRequest(binding="API_KEY"), metadata=auth(token)).value == SECRET

    put = team.audit_line(user="alice", env="staging", method="/bindingd.v1.KV/Put")
    assert put["decision"] == "allow" and put["status"] == "OK" and put["action"] == "write"
    assert put["binding"] == "CACHE" and put["binding_type"] == "kv" and put["subject"] == "greeting"
    assert put["jti"] and put["request_id"] and put["peer"] and isinstance(put["latency_ms"], float)
    query = team.audit_line(user="alice", env="staging", method="/bindingd.v1.Database/Query")
    assert str(query["subject"]).startswith("sha256:") and query["action"] == "write"
    upload = team.audit_line(user="alice", env="staging", method="/bindingd.v1.Objects/Put")
    assert upload["subject"] == "logo.png"
    # Bytes in and out: the messages as sent on the wire, streams included.
    put_request = kv_pb2.KVPutRequest(binding="CACHE", key="greeting", value=KV_VALUE)
    assert put["bytes_in"] == put_request.ByteSize() and put["bytes_out"] == 0
    get = team.audit_line(user="alice", env="staging", method="/bindingd.v1.KV/Get")
    assert get["bytes_in"] == kv_pb2.KVGetRequest(binding="CACHE", key="greeting").ByteSize()
    assert get["bytes_out"] > len(KV_VALUE)
    parts = [objects_pb2.ObjectsPutRequest(header=header), objects_pb2.ObjectsPutRequest(chunk=b"png")]
    assert upload["bytes_in"] == sum(p.ByteSize() for p in parts) and upload["bytes_out"] > 0


def test_a_denied_call_names_who_what_and_where_and_is_audited(team: Team) -> None:
    token = team.login("bob")
    with team.channel() as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        err = refused(
            kv.Put, kv_pb2.KVPutRequest(binding="CACHE", key="k", value=KV_VALUE), metadata=auth(token)
        )
        assert err.code == "PERMISSION_DENIED" and err.reason == "POLICY_DENIED"
        for part in ('"bob"', '"staging"', '"CACHE"', "write"):
            assert part in err.message
        # Reading is granted.
        kv.Get(kv_pb2.KVGetRequest(binding="CACHE", key="k"), metadata=auth(token))
    deny = team.audit_line(user="bob", decision="deny")
    assert deny["binding"] == "CACHE" and deny["action"] == "write"
    assert deny["status"] == "PERMISSION_DENIED" and deny["subject"] == "k"
    # The call came without an x-request-id: the one made for it is the same in its error and
    # its audit line, so one can be found from the other.
    assert err.request_id and deny["request_id"] == err.request_id


def test_only_the_first_authorization_header_counts(team: Team) -> None:
    """A valid token behind another authorization header is not looked for: the first decides."""
    token = team.login("alice")
    with team.channel() as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        request = kv_pb2.KVGetRequest(binding="CACHE", key="k")
        for first in ("Basic YWxpY2U6eA==", "Bearer junk", "Bearer "):
            err = refused(kv.Get, request, metadata=(("authorization", first), *auth(token)))
            assert err.code == "UNAUTHENTICATED" and err.reason == "NOT_LOGGED_IN", first
        kv.Get(request, metadata=(*auth(token), ("authorization", "Basic YWxpY2U6eA==")))


def test_a_refused_token_and_its_audit_line_name_the_same_request_id(team: Team) -> None:
    with team.channel() as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        given = refused(
            kv.Get,
            kv_pb2.KVGetRequest(binding="CACHE", key="k"),
            metadata=(*auth("junk"), ("x-request-id", "req-given-1")),
        )
        made = refused(kv.Get, kv_pb2.KVGetRequest(binding="CACHE", key="k"), metadata=auth("junk"))
    assert given.request_id == "req-given-1" and made.request_id and made.request_id != "req-given-1"
    for request_id in ("req-given-1", made.request_id):
        assert team.audit_line(request_id=request_id)["reason"] == "NOT_LOGGED_IN"


def test_no_token_is_not_logged_in_and_health_stays_open(team: Team) -> None:
    with team.channel() as channel:
        err = refused(kv_pb2_grpc.KVStub(channel).Get, kv_pb2.KVGetRequest(binding="CACHE", key="k"))
        assert err.code == "UNAUTHENTICATED" and err.reason == "NOT_LOGGED_IN"
        err = refused(
            kv_pb2_grpc.KVStub(channel).Get,
            kv_pb2.KVGetRequest(binding="CACHE", key="k"),
            metadata=auth("junk"),
        )
        assert err.reason == "NOT_LOGGED_IN"
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert team.audit_line(reason="NOT_LOGGED_IN", decision="deny")


def test_an_expired_token_is_session_expired(team: Team) -> None:
    config = load_gateway_config(team.config, environ=ENVIRON)
    token, _ = tokens.mint(
        tokens.load_signing_key(config.signing_key),
        sub="alice",
        audience=GW,
        env="staging",
        bindings={"CACHE": ["read"]},
        jkt="whatever",
        now=time.time() - 7200,
        ttl_s=3600,
    )
    with team.channel() as channel:
        err = refused(
            kv_pb2_grpc.KVStub(channel).Get,
            kv_pb2.KVGetRequest(binding="CACHE", key="k"),
            metadata=auth(token),
        )
    assert err.code == "UNAUTHENTICATED" and err.reason == "SESSION_EXPIRED"


def test_a_revoked_user_is_refused_within_5_seconds(team: Team) -> None:
    token = team.login("erin", groups=("developers",))
    get = kv_pb2.KVGetRequest(binding="CACHE", key="k")
    with team.channel() as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        kv.Get(get, metadata=auth(token))
        revoke(team, "erin")
        refused_within(5.0, "TOKEN_REVOKED", lambda: kv.Get(get, metadata=auth(token)))


def test_streams_pass_and_a_revocation_cuts_an_open_consume_stream(team: Team) -> None:
    token = team.login("frank", groups=("developers",))
    with team.channel() as channel:
        objects = objects_pb2_grpc.ObjectsStub(channel)
        header = objects_pb2.ObjectsPutHeader(binding="ASSETS", key="big.bin")
        body = b"x" * 300_000
        objects.Put(
            iter([objects_pb2.ObjectsPutRequest(header=header), objects_pb2.ObjectsPutRequest(chunk=body)]),
            metadata=auth(token),
        )
        got = objects.Get(
            objects_pb2.ObjectsGetRequest(binding="ASSETS", key="big.bin"), metadata=auth(token)
        )
        assert b"".join(m.chunk for m in got if m.WhichOneof("part") == "chunk") == body

        queue = queue_pb2_grpc.QueueStub(channel)
        message = queue_pb2.QueueMessageSend(body=b"job", content_type="bytes")
        queue.Send(queue_pb2.QueueSendRequest(binding="JOBS", message=message), metadata=auth(token))
        asks = [queue_pb2.QueueConsumeRequest(binding="JOBS", batch_size=1, max_wait_seconds=0.1)]

        def requests() -> Iterator[queue_pb2.QueueConsumeRequest]:
            yield asks[0]
            while True:  # ask for the next batch only after a revocation
                time.sleep(0.2)
                yield queue_pb2.QueueConsumeRequest()

        stream = queue.Consume(requests(), metadata=auth(token))
        assert len(next(stream).messages) >= 1
        revoke(team, "frank")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            for _ in stream:
                pass
        assert error_from_rpc(info.value).reason == "TOKEN_REVOKED"  # type: ignore[arg-type]
        assert time.monotonic() - started < 5.0
    line = team.audit_line(user="frank", method="/bindingd.v1.Queue/Consume")
    assert line["decision"] == "allow" and line["status"] == "UNAUTHENTICATED"
    assert line["action"] == "consume"


def test_a_sql_read_grant_never_writes_even_on_a_read_write_binding(team: Team) -> None:
    writer = team.login("alice")
    reader = team.login("carol")
    db_call = database_pb2.SqlQueryRequest
    with team.channel() as channel:
        db = database_pb2_grpc.DatabaseStub(channel)
        db.Exec(
            database_pb2.SqlExecRequest(binding="APP_DB", sql="CREATE TABLE IF NOT EXISTS r (v TEXT)"),
            metadata=auth(writer),
        )
        select = database_pb2.SqlStatement(sql="SELECT count(*) FROM r")
        before = (
            db.Query(db_call(binding="APP_DB", statement=select), metadata=auth(reader))
            .rows[0]
            .values[0]
            .integer
        )
        insert = database_pb2.SqlStatement(sql="INSERT INTO r (v) VALUES ('x')")
        err = refused(db.Query, db_call(binding="APP_DB", statement=insert), metadata=auth(reader))
        assert err.code == "PERMISSION_DENIED"
        assert '"carol"' in err.message and "read" in err.message
        err = refused(
            db.Exec, database_pb2.SqlExecRequest(binding="APP_DB", sql="DELETE FROM r"), metadata=auth(reader)
        )
        assert err.code == "PERMISSION_DENIED"
        after = (
            db.Query(db_call(binding="APP_DB", statement=select), metadata=auth(reader))
            .rows[0]
            .values[0]
            .integer
        )
        assert after == before
        # carol has no kv grant at all.
        err = refused(
            kv_pb2_grpc.KVStub(channel).Get,
            kv_pb2.KVGetRequest(binding="CACHE", key="k"),
            metadata=auth(reader),
        )
        assert err.reason == "POLICY_DENIED"


def test_a_protected_env_needs_a_grant_naming_it_for_a_write(team: Team) -> None:
    token = team.login("alice", env="production")
    with team.channel() as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        err = refused(kv.Put, kv_pb2.KVPutRequest(binding="CACHE", key="k", value=b"v"), metadata=auth(token))
        assert err.reason == "POLICY_DENIED" and '"production"' in err.message
        kv.Get(
            kv_pb2.KVGetRequest(binding="CACHE", key="k"), metadata=auth(token)
        )  # reading is granted by "*"
        # Each env has its own local state: staging's key is not production's.
        assert not kv.Get(
            kv_pb2.KVGetRequest(binding="CACHE", key="greeting"), metadata=auth(token)
        ).entry.found
        # A staging token is not a production one.
        staging = team.login("alice")
        kv.Put(kv_pb2.KVPutRequest(binding="CACHE", key="k", value=b"v"), metadata=auth(staging))


# The policy matrix of GATEWAY_YAML through the real gateway: (user, their grant-time groups,
# env, binding, action) -> allowed, or denied by the rule named. Rows cover an allow, default
# deny, deny beating allow, a protected env (only a grant naming it opens a write), a secret
# (only a grant naming it), and a group given at grant time. Each row is one real call.
MATRIX = [
    ("alice", (), "staging", "CACHE", "read", None),
    ("alice", (), "staging", "CACHE", "write", None),
    ("bob", (), "staging", "CACHE", "read", None),
    ("bob", (), "staging", "CACHE", "write", "policy.denies[0]"),  # deny beats grants[0] and [3]
    ("bob", (), "staging", "ASSETS", "write", None),  # the deny names CACHE only
    ("alice", (), "staging", "ASSETS", "read", None),
    ("alice", (), "staging", "JOBS", "send", None),
    ("alice", (), "staging", "JOBS", "consume", None),
    ("alice", (), "staging", "API_KEY", "read", None),  # grants[1] names the secret
    ("alice", (), "staging", "GREETING", "read", None),
    ("carol", (), "staging", "API_KEY", "read", "default"),
    ("carol", (), "staging", "CACHE", "read", "default"),
    ("carol", (), "staging", "JOBS", "send", "default"),
    ("dave", ("ops",), "staging", "CACHE", "read", None),  # grants[4], by the grant's group
    ("dave", ("ops",), "staging", "CACHE", "write", "default"),
    ("alice", (), "production", "CACHE", "read", None),  # grants[3]: env "*" opens reads
    ("alice", (), "production", "CACHE", "write", "protected"),  # ... but not writes
    ("alice", (), "production", "ASSETS", "write", "protected"),
    ("alice", (), "production", "JOBS", "send", "protected"),
    ("alice", (), "production", "JOBS", "consume", "protected"),
    ("alice", (), "production", "GREETING", "read", None),
    ("alice", (), "production", "API_KEY", "read", "secret"),  # bindings "*" skips secrets
    ("bob", (), "production", "CACHE", "write", "protected"),
]


def _act(channel: grpc.Channel, binding: str, action: str, token: str, request_id: str) -> None:
    """One call of `action` on `binding`, with its own request id; raises grpc.RpcError when
    refused."""
    meta = (*auth(token), ("x-request-id", request_id))
    if binding == "CACHE":
        kv = kv_pb2_grpc.KVStub(channel)
        if action == "read":
            kv.Get(kv_pb2.KVGetRequest(binding=binding, key="matrix"), metadata=meta)
        else:
            kv.Put(kv_pb2.KVPutRequest(binding=binding, key="matrix", value=b"v"), metadata=meta)
    elif binding == "ASSETS":
        objects = objects_pb2_grpc.ObjectsStub(channel)
        if action == "read":
            objects.List(objects_pb2.ObjectsListRequest(binding=binding), metadata=meta)
        else:
            objects.Delete(objects_pb2.ObjectsDeleteRequest(binding=binding, keys=["matrix"]), metadata=meta)
    elif binding == "JOBS":
        queue = queue_pb2_grpc.QueueStub(channel)
        if action == "send":
            message = queue_pb2.QueueMessageSend(body=b"job", content_type="bytes")
            queue.Send(queue_pb2.QueueSendRequest(binding=binding, message=message), metadata=meta)
        else:
            ask = queue_pb2.QueueConsumeRequest(binding=binding, batch_size=1, max_wait_seconds=0.1)
            for _ in queue.Consume(iter([ask]), metadata=meta):
                break
    else:
        vars_pb2_grpc.VarsStub(channel).Get(vars_pb2.VarGetRequest(binding=binding), metadata=meta)


@pytest.mark.parametrize(
    ("user", "groups", "env", "binding", "action", "denied_by"),
    MATRIX,
    ids=[f"{u}-{e}-{b}-{a}" for u, _, e, b, a, _ in MATRIX],
)
def test_policy_matrix(
    team: Team, user: str, groups: tuple[str, ...], env: str, binding: str, action: str, denied_by: str | None
) -> None:
    token = team.login(user, env=env, groups=groups)
    request_id = uuid.uuid4().hex[:16]
    with team.channel() as channel:
        if denied_by is None:
            _act(channel, binding, action, token, request_id)
        else:
            err = refused(_act, channel, binding, action, token, request_id)
            assert err.code == "PERMISSION_DENIED" and err.reason == "POLICY_DENIED", err
            for part in (f'"{user}"', f'"{env}"', f'"{binding}"', action):
                assert part in err.message, err.message
            if denied_by.startswith("policy."):
                assert denied_by in err.message, err.message
            elif denied_by == "protected":
                assert "protected" in err.message, err.message
    # This call's own line, by its request id: the gateway writes lines in batches just after
    # the answers, so the line of the case before may land after this call was made.
    deadline = time.monotonic() + 5.0
    while not (mine := [x for x in team.audit_lines() if x.get("request_id") == request_id]):
        assert time.monotonic() < deadline, "no audit line for the call"
        time.sleep(0.05)
    line = mine[-1]
    assert line["binding"] == binding, line
    assert (line["user"], line["env"], line["action"]) == (user, env, action), line
    assert line["decision"] == ("allow" if denied_by is None else "deny"), line
    assert line["status"] == ("OK" if denied_by is None else "PERMISSION_DENIED"), line
    assert line["jti"] and line["request_id"], line


def test_a_client_trusting_another_ca_fails_the_handshake(team: Team, tmp_path: Path) -> None:
    assert bindingd_cli("gateway", "init", "other", cwd=tmp_path).returncode == 0
    with team.channel(tmp_path / "other" / "ca.pem") as channel:
        with pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_sighup_reloads_the_policy_and_keeps_it_when_the_file_is_bad(team: Team) -> None:
    token = team.login("dave", groups=("ops",))
    get = kv_pb2.KVGetRequest(binding="CACHE", key="k")
    good = team.config.read_text()
    with team.channel() as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        kv.Get(get, metadata=auth(token))
        team.config.write_text(good + "  nonsense: [\n")
        team.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        kv.Get(get, metadata=auth(token))  # the old policy still serves
        try:
            team.config.write_text(good.replace('who: "group:ops"', 'who: "group:nobody"'))
            team.proc.send_signal(signal.SIGHUP)
            refused_within(10.0, "POLICY_DENIED", lambda: kv.Get(get, metadata=auth(token)))
        finally:
            team.config.write_text(good)
            team.proc.send_signal(signal.SIGHUP)
    assert "reload failed" in team.log.read_text()


def test_a_developer_logs_in_and_out_through_gateway_serve(team: Team, tmp_path: Path) -> None:
    """The whole enrolment path on the real server: grant (CLI), login (CLI, on a laptop
    folder with its own XDG_CONFIG_HOME), a session opened, logout forgets the device."""
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    (laptop / "team-ca.pem").write_bytes((team.root / "gw" / "ca.pem").read_bytes())
    (laptop / "bindingd.yaml").write_text(
        "version: 1\n"
        "bindings:\n  CACHE: { type: kv }\n"
        f'envs:\n  staging:\n    gateway: {{ url: "localhost:{team.port}", ca: team-ca.pem }}\n'
    )
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    granted = bindingd_cli(
        "gateway",
        "grant",
        "--config",
        "gateway.yaml",
        "--user",
        "dana",
        "--group",
        "developers",
        cwd=team.root,
        env=ENVIRON,
    )
    assert granted.returncode == 0, granted.stderr
    code = granted.stdout.splitlines()[-1]
    login = bindingd_cli("login", "--env", "staging", "--code", code, cwd=laptop, env=environ)
    assert login.returncode == 0, login.stderr
    assert "as user dana" in login.stdout and 'env "staging": session open until' in login.stdout
    assert "v4.public." not in login.stdout + login.stderr
    logout = bindingd_cli("logout", "--env", "staging", cwd=laptop, env=environ)
    assert logout.returncode == 0, logout.stderr
    assert not list((tmp_path / "xdg" / "bindingd").glob("gateway-*.key"))
    again = bindingd_cli("logout", "--env", "staging", cwd=laptop, env=environ)
    assert "v4.public." not in again.stdout + again.stderr


def test_zz_no_token_value_parameter_or_secret_is_logged_and_sigterm_drains(team: Team) -> None:
    """Last in the module: stops the gateway."""
    token = team.login("alice")
    with team.channel() as channel:
        kv_pb2_grpc.KVStub(channel).Get(kv_pb2.KVGetRequest(binding="CACHE", key="k"), metadata=auth(token))
    team.proc.send_signal(signal.SIGTERM)
    assert team.proc.wait(30) == 0
    outputs = team.audit.read_text() + team.log.read_text()
    for leak in (SECRET, KV_VALUE.decode(), SQL_PARAM, token, token[10:40], "v4.public."):
        assert leak not in outputs
    assert "draining" in team.log.read_text()
