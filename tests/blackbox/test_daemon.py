"""Black-box tests: the real `bindingd serve` process, reached over its socket as a worker would."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from bindingd_client import (
    AuthenticationFailed,
    BackendUnavailable,
    BindingNotFound,
    InvalidArgument,
    PermissionDenied,
    WrongBindingType,
    connect,
    connect_sync,
)
from bindingd_client.errors import error_from_rpc
from bindingd_client.proto import bindings_pb2, bindings_pb2_grpc, kv_pb2, kv_pb2_grpc
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from support import DaemonProcess, bindingd_cli, health_status, listen_port, write_project

SECRET = "s3cr3t-value-never-shown"
CONFIG = """
    version: 1
    env: dev
    bindings:
      CACHE:     { type: kv }
      OTHER:     { type: kv }
      SITE_NAME: { type: var, value: "Example Shop" }
      API_KEY:   { type: secret, value: "${env:API_KEY}" }
    envs:
      production:
        protected: true
      review:
        bindings:
          CACHE: { access: read-only }
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path, CONFIG, dev_vars=f"API_KEY={SECRET}\n")
    return tmp_path


@pytest.fixture
def daemon(project: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(project, "--log-level", "debug").start()
    yield d
    d.stop()


def status_of(call: grpc.RpcError) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo]:
    status = rpc_status.from_call(call)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return call.code(), info


def test_unknown_binding(daemon: DaemonProcess) -> None:
    with grpc.insecure_channel(daemon.endpoint) as channel, pytest.raises(grpc.RpcError) as raised:
        kv_pb2_grpc.KVStub(channel).Get(kv_pb2.KVGetRequest(binding="CACHE2", key="k"))
    code, info = status_of(raised.value)
    assert code == grpc.StatusCode.NOT_FOUND
    assert (info.domain, info.reason) == ("bindingd", "BINDING_NOT_FOUND")
    assert info.metadata["binding"] == "CACHE2" and info.metadata["env"] == "dev"
    err = error_from_rpc(raised.value)
    assert isinstance(err, BindingNotFound)
    assert (
        str(err) == 'binding "CACHE2" is not defined in env "dev" (defined: API_KEY, CACHE, OTHER, SITE_NAME)'
    )

    env = connect_sync(endpoint=daemon.endpoint)
    with env, pytest.raises(BindingNotFound, match='"CACHE2" is not defined in env "dev"'):
        env.CACHE2  # noqa: B018


def test_wrong_binding_type(daemon: DaemonProcess) -> None:
    with grpc.insecure_channel(daemon.endpoint) as channel, pytest.raises(grpc.RpcError) as raised:
        kv_pb2_grpc.KVStub(channel).Put(kv_pb2.KVPutRequest(binding="SITE_NAME", key="k", value=b"v"))
    code, info = status_of(raised.value)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "WRONG_BINDING_TYPE"
    err = error_from_rpc(raised.value)
    assert isinstance(err, WrongBindingType)
    assert str(err) == 'binding "SITE_NAME" is a var binding, not kv'


def test_vars_and_secrets_are_strings(daemon: DaemonProcess) -> None:
    with connect_sync(endpoint=daemon.endpoint) as env:
        assert env.SITE_NAME == "Example Shop"
        assert env.API_KEY == SECRET


def test_oversize_value_stores_nothing(daemon: DaemonProcess) -> None:
    with connect_sync(endpoint=daemon.endpoint) as env:
        with pytest.raises(InvalidArgument, match=r"the limit is 25 MiB") as raised:
            env.CACHE.put("big", b"x" * (25 * 1024 * 1024 + 1))
        assert raised.value.binding == "CACHE" and raised.value.env == "dev"
        assert 'binding "CACHE" (env "dev")' in str(raised.value)
        assert env.CACHE.get("big") is None
        # Far over the limit too: still a clear InvalidArgument, and the daemon still serves.
        with pytest.raises(InvalidArgument):
            env.CACHE.put("bigger", b"x" * (70 * 1024 * 1024))
        env.CACHE.put("after", "ok")
        assert env.CACHE.get("after") == "ok"


def test_bad_cursor(daemon: DaemonProcess) -> None:
    with connect_sync(endpoint=daemon.endpoint) as env, pytest.raises(InvalidArgument, match="cursor"):
        env.CACHE.list(cursor="not-a-cursor")


def test_expired_key_is_never_returned(daemon: DaemonProcess, project: Path) -> None:
    with connect_sync(endpoint=daemon.endpoint) as env:
        env.CACHE.put("soon", "v", expiration_ttl=60)
        env.CACHE.put("kept", "v")
        assert env.CACHE.get("soon") == "v"
        # Let time pass the way it does while a laptop sleeps: move the stored expiry to the past.
        db = sqlite3.connect(project / ".bindingd" / "state" / "kv" / "CACHE.sqlite3")
        with db:
            db.execute("UPDATE kv SET expiration = ? WHERE key = 'soon'", (int(time.time()) - 1,))
        db.close()
        assert env.CACHE.get("soon") is None
        assert env.CACHE.get(["soon", "kept"]) == {"soon": None, "kept": "v"}
        assert [k.name for k in env.CACHE.list().keys] == ["kept"]


def test_state_survives_a_restart(project: Path) -> None:
    d = DaemonProcess(project).start()
    with connect_sync(endpoint=d.endpoint) as env:
        env.CACHE.put("persisted", "yes", metadata={"m": 1})
    assert d.stop() == 0
    d = DaemonProcess(project).start()
    try:
        with connect_sync(endpoint=d.endpoint) as env:
            got = env.CACHE.get_with_metadata("persisted")
            assert (got.value, got.metadata) == ("yes", {"m": 1})
    finally:
        d.stop()


def test_socket_permissions(daemon: DaemonProcess, project: Path) -> None:
    runtime_dir = project / ".bindingd"
    assert stat.S_IMODE(runtime_dir.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(daemon.socket_path.stat().st_mode)
    assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o600
    assert (runtime_dir / "endpoint").read_text().strip() == daemon.endpoint


def test_sighup_reload(daemon: DaemonProcess, project: Path) -> None:
    with connect_sync(endpoint=daemon.endpoint) as env:
        env.CACHE.put("survives", "reload")
    (project / "bindingd.yaml").write_text(
        CONFIG.replace("OTHER:     { type: kv }", "ADDED:     { type: kv }").replace(
            "Example Shop", "New Name"
        )
    )
    daemon.signal(signal.SIGHUP)
    names = _wait_for_bindings(daemon, lambda names: "ADDED" in names)
    assert "OTHER" not in names
    with connect_sync(endpoint=daemon.endpoint) as env:
        assert env.SITE_NAME == "New Name"
        assert env.CACHE.get("survives") == "reload"
        env.ADDED.put("k", "v")
        assert env.ADDED.get("k") == "v"

    # A bad config is reported and the old one kept.
    (project / "bindingd.yaml").write_text(CONFIG.replace("type: kv", "type: kvv", 1))
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload failed" not in daemon.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reload failed" in daemon.logs()
    assert "bindingd.yaml:5" in daemon.logs()
    with connect_sync(endpoint=daemon.endpoint) as env:
        assert "ADDED" in env._bindings
        assert env.ADDED.get("k") == "v"


def _wait_for_bindings(daemon: DaemonProcess, done, timeout: float = 10.0) -> set[str]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        with grpc.insecure_channel(daemon.endpoint) as channel:
            answer = bindings_pb2_grpc.BindingsStub(channel).List(bindings_pb2.ListBindingsRequest())
        names = {b.name for b in answer.bindings}
        if done(names) or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


def test_sigterm_drains_in_flight_calls(daemon: DaemonProcess, project: Path) -> None:
    with connect_sync(endpoint=daemon.endpoint) as env:
        env.CACHE.put("warm", "up")
    # Another process holds the store's write lock, so the next put waits inside the daemon.
    db = sqlite3.connect(project / ".bindingd" / "state" / "kv" / "CACHE.sqlite3", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    outcome: dict[str, object] = {}

    def slow_put() -> None:
        try:
            with connect_sync(endpoint=daemon.endpoint) as env:
                env.CACHE.put("in-flight", "landed")
            outcome["ok"] = True
        except Exception as e:  # recorded for the assertion below
            outcome["error"] = e

    writer = threading.Thread(target=slow_put)
    writer.start()
    time.sleep(2.0)  # time for the put to reach the daemon and wait on the lock
    daemon.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon quit with a call in flight"
    db.execute("COMMIT")
    db.close()
    writer.join(30)
    assert outcome == {"ok": True}
    assert daemon.proc.wait(30) == 0
    check = sqlite3.connect(project / ".bindingd" / "state" / "kv" / "CACHE.sqlite3")
    assert check.execute("SELECT value FROM kv WHERE key = 'in-flight'").fetchone() == (b"landed",)


def _free_port() -> int:
    return listen_port()  # --listen also takes the next port (HTTP)


def test_tcp_requires_the_token(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    d = DaemonProcess(project, "--listen", f"127.0.0.1:{port}").start()
    try:
        token = (project / ".bindingd" / "token").read_text().strip()
        assert stat.S_IMODE((project / ".bindingd" / "token").stat().st_mode) == 0o600
        target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as channel:
            stub = kv_pb2_grpc.KVStub(channel)
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError) as raised:
                    stub.Get(kv_pb2.KVGetRequest(binding="CACHE", key="k"), metadata=metadata)
                assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
                err = error_from_rpc(raised.value)
                assert isinstance(err, AuthenticationFailed)
                assert "BINDINGD_TOKEN" in str(err)
                assert token not in str(err)
        # Health answers without a token, so orchestrators can probe it.
        assert health_status(target) == "SERVING"
        with pytest.raises(AuthenticationFailed):
            connect_sync(endpoint=target, token="wrong")
        with connect_sync(endpoint=target, token=token) as env:
            env.CACHE.put("tcp", "works")
            assert env.CACHE.get("tcp") == "works"
        # The token file is found by walking up from the working directory, as the socket is.
        monkeypatch.chdir(project)
        with connect_sync(endpoint=target) as env:
            assert env.CACHE.get("tcp") == "works"
    finally:
        d.stop()


def test_non_loopback_listen_is_refused(project: Path) -> None:
    result = bindingd_cli("serve", "--listen", "0.0.0.0:7400", cwd=project)
    assert result.returncode == 2
    assert "only loopback addresses" in result.stderr
    assert "Traceback" not in result.stderr


def test_second_daemon_on_the_same_socket_is_refused(daemon: DaemonProcess, project: Path) -> None:
    result = bindingd_cli("serve", cwd=project, timeout=30)
    assert result.returncode != 0
    assert "already serving" in result.stderr
    assert health_status(daemon.endpoint) == "SERVING"


def test_long_project_path_falls_back_to_a_short_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    write_project(deep, CONFIG, dev_vars=f"API_KEY={SECRET}\n")
    # A short runtime dir of its own, as /run/user/UID is (tmp_path itself may be long: under
    # pytest-xdist it has a worker folder more).
    runtime = Path(tempfile.mkdtemp(prefix="xdg-", dir="/tmp"))
    runtime.chmod(0o700)
    d = DaemonProcess(deep, env={"XDG_RUNTIME_DIR": str(runtime)})
    d.start(wait=False)
    try:
        endpoint_file = deep / ".bindingd" / "endpoint"
        deadline = time.monotonic() + 30
        while not endpoint_file.exists() and time.monotonic() < deadline:
            assert d.proc is not None and d.proc.poll() is None, f"daemon exited: {d.logs()}"
            time.sleep(0.05)
        assert endpoint_file.exists(), f"no endpoint after 30 s: {d.logs()}"
        endpoint = endpoint_file.read_text().strip()
        assert endpoint.startswith(f"unix://{runtime}/")
        assert len(endpoint) - len("unix://") <= 107
        # A client started anywhere below the project finds it by walking up.
        result = bindingd_cli("call", "SITE_NAME", "get", cwd=deep)
        assert (result.returncode, result.stdout.strip()) == (0, "Example Shop"), result.stderr
    finally:
        d.stop()
        shutil.rmtree(runtime, ignore_errors=True)


def test_protected_env_refuses_writes(project: Path) -> None:
    d = DaemonProcess(project, "--env", "production").start()
    try:
        with connect_sync(endpoint=d.endpoint) as env:
            assert env.CACHE.get("k") is None
            with pytest.raises(
                PermissionDenied,
                match='env "production" is protected: writes need --allow-writes on the daemon',
            ):
                env.CACHE.put("k", "v")
            with pytest.raises(PermissionDenied):
                env.CACHE.delete("k")
    finally:
        d.stop()
    d = DaemonProcess(project, "--env", "production", "--allow-writes").start()
    try:
        with connect_sync(endpoint=d.endpoint) as env:
            env.CACHE.put("k", "v")
    finally:
        d.stop()


def test_read_only_binding(project: Path) -> None:
    d = DaemonProcess(project, env={"BINDINGD_ENV": "review"}).start()
    try:
        with connect_sync(endpoint=d.endpoint) as env:
            with pytest.raises(PermissionDenied, match='"CACHE" is read-only in env "review"'):
                env.CACHE.put("k", "v")
            env.OTHER.put("k", "v")
    finally:
        d.stop()


def test_secrets_never_reach_logs_or_listings(daemon: DaemonProcess, project: Path) -> None:
    with connect_sync(endpoint=daemon.endpoint) as env:
        assert env.API_KEY == SECRET
        env.CACHE.put("k", "v")
        with pytest.raises(BindingNotFound):
            env.NOPE  # noqa: B018
    table = bindingd_cli("bindings", cwd=project)
    assert table.returncode == 0, table.stderr
    assert "API_KEY" in table.stdout and "••••••" in table.stdout
    assert "Example Shop" in table.stdout
    check = bindingd_cli("check", cwd=project)
    daemon.signal(signal.SIGHUP)
    time.sleep(0.5)
    for text in (daemon.logs(), table.stdout, table.stderr, check.stdout, check.stderr):
        assert SECRET not in text


def test_config_error_exits_2_with_one_line(project: Path) -> None:
    (project / "bindingd.yaml").write_text(
        CONFIG.replace("API_KEY:   { type: secret", "API_KEY:   { type: secrett")
    )
    for command in (("serve",), ("check",), ("bindings",)):
        result = bindingd_cli(*command, cwd=project)
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "bindingd.yaml:8" in lines[0] and "bindings.API_KEY.type" in lines[0]


def test_check_probes_every_binding(project: Path) -> None:
    result = bindingd_cli("check", cwd=project)
    assert result.returncode == 0, result.stderr
    for name in ("CACHE", "OTHER", "SITE_NAME", "API_KEY"):
        assert f"ok    {name}" in result.stdout


def test_call_from_the_shell(project: Path) -> None:
    # No daemon running: `call` serves the one operation from a short-lived daemon.
    put = bindingd_cli("call", "CACHE", "put", "user:1", '{"n": 1}', "--metadata", '{"v": 2}', cwd=project)
    assert put.returncode == 0, put.stderr
    got = bindingd_cli("call", "CACHE", "get", "user:1", "--type", "json", cwd=project)
    assert json.loads(got.stdout) == {"n": 1}
    listed = bindingd_cli("call", "CACHE", "list", "--prefix", "user:", cwd=project)
    assert json.loads(listed.stdout) == {
        "keys": [{"name": "user:1", "metadata": {"v": 2}}],
        "list_complete": True,
    }
    missing = bindingd_cli("call", "CACHE", "get", "nope", cwd=project)
    assert missing.returncode == 1 and "not found" in missing.stderr
    bad = bindingd_cli("call", "CACHE", "put", "k", "v", "--ttl", "5", cwd=project)
    assert bad.returncode == 1 and "minimum is 60" in bad.stderr and "Traceback" not in bad.stderr
    unknown = bindingd_cli("call", "NOPE", "get", "k", cwd=project)
    assert unknown.returncode == 1 and 'binding "NOPE" is not defined' in unknown.stderr
    assert bindingd_cli("call", "SITE_NAME", "get", cwd=project).stdout.strip() == "Example Shop"

    # Values that are not UTF-8 are stored as given; JSON that is not JSON is a clear error.
    raw = bindingd_cli("call", "CACHE", "put", "raw", "caf\udce9", cwd=project)
    assert raw.returncode == 0, raw.stderr
    notjson = bindingd_cli("call", "CACHE", "get", "raw", "--type", "json", cwd=project)
    assert notjson.returncode == 2 and "is not JSON" in notjson.stderr and "Traceback" not in notjson.stderr
    huge = bindingd_cli("call", "CACHE", "list", "--limit", "99999999999", cwd=project)
    assert huge.returncode == 2 and "Traceback" not in huge.stderr

    # With a daemon running, `call` uses it...
    d = DaemonProcess(project).start()
    try:
        assert bindingd_cli("call", "CACHE", "delete", "user:1", cwd=project).returncode == 0
        with connect_sync(endpoint=d.endpoint) as env:
            assert env.CACHE.get("user:1") is None
            assert env.CACHE.get("raw", type="bytes") == b"caf\xe9"
        # ...but not for another env: a write meant for protected production must not land in dev.
        prod = bindingd_cli("call", "--env", "production", "CACHE", "put", "k", "v", cwd=project)
        assert prod.returncode == 1 and "protected" in prod.stderr
        late = bindingd_cli("call", "CACHE", "put", "k", "v", "--env", "production", cwd=project)
        assert late.returncode == 1 and "protected" in late.stderr
        review = bindingd_cli("call", "CACHE", "put", "k", "v", cwd=project, env={"BINDINGD_ENV": "review"})
        assert review.returncode == 1 and "read-only" in review.stderr
        with connect_sync(endpoint=d.endpoint) as env:
            assert env.CACHE.get("k") is None
        table = bindingd_cli("bindings", "--env", "production", cwd=project)
        assert " production " in table.stdout and " dev " not in table.stdout
        # A daemon named explicitly but not there is an error, not a silent stand-in.
        gone = bindingd_cli(
            "call", "CACHE", "get", "k", cwd=project, env={"BINDINGD_ENDPOINT": "unix:///nonexistent"}
        )
        assert gone.returncode == 1 and "cannot connect" in gone.stderr
    finally:
        d.stop()


def test_run_passes_the_endpoint_and_the_exit_code(project: Path) -> None:
    script = (
        "import os, sys\n"
        "from bindingd_client import connect_sync\n"
        "assert os.environ['BINDINGD_ENDPOINT'].startswith('unix://')\n"
        "with connect_sync() as env:\n"
        "    env.CACHE.put('from-run', env.SITE_NAME)\n"
        "sys.exit(7)\n"
    )
    result = bindingd_cli("run", "--", sys.executable, "-c", script, cwd=project)
    assert result.returncode == 7, result.stderr
    d = DaemonProcess(project).start()
    try:
        with connect_sync(endpoint=d.endpoint) as env:
            assert env.CACHE.get("from-run") == "Example Shop"
    finally:
        d.stop()
    broken = bindingd_cli("run", "--config", str(project / "missing.yaml"), "--", "true", cwd=project)
    assert broken.returncode == 2 and "missing.yaml" in broken.stderr
    assert bindingd_cli("run", "--", "no-such-command-here", cwd=project).returncode == 127
    assert bindingd_cli("run", "--", str(project / "bindingd.yaml"), cwd=project).returncode == 126


async def test_async_client_against_the_process(daemon: DaemonProcess) -> None:
    env = await connect(endpoint=daemon.endpoint)
    try:
        await asyncio.gather(*(env.CACHE.put(f"k{i}", str(i)) for i in range(200)))
        values = await env.CACHE.get([f"k{i}" for i in range(100)])
        assert values == {f"k{i}": str(i) for i in range(100)}
    finally:
        await env.aclose()


def test_unexpected_environment_is_clear(project: Path) -> None:
    result = bindingd_cli("serve", "--env", "stagin", cwd=project)
    assert result.returncode == 2
    assert 'unknown env "stagin"' in result.stderr
    assert os.linesep.join(result.stderr.strip().splitlines()[:1]) == result.stderr.strip()


def test_reflection_and_per_binding_health(daemon: DaemonProcess) -> None:
    # What `grpcurl -plaintext -unix .bindingd/bindingd.sock list` and `describe` rely on.
    with grpc.insecure_channel(daemon.endpoint) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {
            "bindingd.v1.KV",
            "bindingd.v1.Vars",
            "bindingd.v1.Bindings",
            "grpc.health.v1.Health",
        } <= services
        pool = descriptor_pool.DescriptorPool(database)
        put = pool.FindServiceByName("bindingd.v1.KV").FindMethodByName("Put")
        assert put.input_type.fields_by_name["expiration_ttl"].number == 5
    assert health_status(daemon.endpoint) == "SERVING"
    deadline = time.monotonic() + 10
    while health_status(daemon.endpoint, "CACHE") != "SERVING" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health_status(daemon.endpoint, "CACHE") == "SERVING"
    assert health_status(daemon.endpoint, "SITE_NAME") == "SERVING"
    assert health_status(daemon.endpoint, "NOPE") == "NOT_FOUND"


def _run_python(project: Path, script: str) -> subprocess.Popen[str]:
    """`bindingd run -- python -c SCRIPT` in the background, its stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "bindingd", "run", "--", sys.executable, "-c", script],
        cwd=project,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_run_passes_sigterm_to_the_command(project: Path) -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = _run_python(project, script)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 42


def test_run_daemon_stops_when_run_is_killed(project: Path) -> None:
    # The command SIGKILLs `bindingd run` itself: its daemon must not live on as an orphan.
    script = (
        "import os, sys, time\n"
        "print(os.environ['BINDINGD_ENDPOINT'], flush=True)\n"
        "os.kill(os.getppid(), 9)\n"
        "time.sleep(3)\n"
    )
    proc = _run_python(project, script)
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    proc.wait(30)
    socket_path = Path(endpoint.removeprefix("unix://"))
    deadline = time.monotonic() + 20
    while socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not socket_path.exists(), "the daemon of a killed `bindingd run` is still serving"


def test_a_binding_that_cannot_start_fails_alone(project: Path) -> None:
    # The state folder is a file: the local KV stores cannot open, everything else still works.
    (project / ".bindingd").mkdir(mode=0o700)
    (project / ".bindingd" / "state").write_text("not a folder")
    check = bindingd_cli("check", cwd=project)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "FAIL  CACHE (kv, local): " in check.stdout and "cannot open the local KV store" in check.stdout
    assert "ok    SITE_NAME" in check.stdout
    assert "Traceback" not in check.stdout + check.stderr

    d = DaemonProcess(project).start()
    try:
        with connect_sync(endpoint=d.endpoint) as env:
            assert env.SITE_NAME == "Example Shop"
            with pytest.raises(BackendUnavailable, match=r'binding "CACHE" .*cannot open the local KV store'):
                env.CACHE.get("k")
            assert env._bindings["CACHE"].health == "not_serving"
        # Fixed on disk, a reload brings the binding up without a restart.
        (project / ".bindingd" / "state").unlink()
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while health_status(d.endpoint, "CACHE") != "SERVING" and time.monotonic() < deadline:
            time.sleep(0.05)
        with connect_sync(endpoint=d.endpoint) as env:
            env.CACHE.put("k", "v")
            assert env.CACHE.get("k") == "v"
    finally:
        d.stop()
    assert "Traceback" not in d.logs()


def test_call_does_not_use_a_daemon_of_another_env(project: Path) -> None:
    # The project's daemon serves review (CACHE read-only there); a plain `call` means the
    # file's default env, dev, so it must be served by a dev daemon, where CACHE is writable.
    d = DaemonProcess(project, "--env", "review").start()
    try:
        result = bindingd_cli("call", "CACHE", "put", "meant-for-dev", "v", cwd=project)
        assert result.returncode == 0, result.stderr
        through_review = bindingd_cli("call", "--env", "review", "CACHE", "put", "k", "v", cwd=project)
        assert through_review.returncode == 1 and "read-only" in through_review.stderr
    finally:
        d.stop()


async def test_sigterm_answers_calls_already_on_their_way(daemon: DaemonProcess, project: Path) -> None:
    env = await connect(endpoint=daemon.endpoint)
    try:
        puts = [asyncio.ensure_future(env.CACHE.put(f"k{i}", "v" * 1024)) for i in range(1000)]
        await asyncio.wait(puts, return_when=asyncio.FIRST_COMPLETED)
        daemon.signal(signal.SIGTERM)
        results = await asyncio.gather(*puts, return_exceptions=True)
    finally:
        await env.aclose()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], f"{len(failures)} of 1000 puts failed, first: {failures[:1]}"
    assert daemon.proc is not None and daemon.proc.wait(30) == 0
    db = sqlite3.connect(project / ".bindingd" / "state" / "kv" / "CACHE.sqlite3")
    assert db.execute("SELECT count(*) FROM kv WHERE key LIKE 'k%'").fetchone() == (1000,)


def test_listen_on_ipv6_loopback(project: Path) -> None:
    port = listen_port("::1")
    d = DaemonProcess(project, "--listen", f"[::1]:{port}").start()
    try:
        token = (project / ".bindingd" / "token").read_text().strip()
        with connect_sync(endpoint=f"[::1]:{port}", token=token) as env:
            assert env.SITE_NAME == "Example Shop"
    finally:
        d.stop()


def test_a_failed_start_leaves_nothing_behind(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = bindingd_cli("serve", "--listen", f"127.0.0.1:{port}", cwd=project)
    assert result.returncode == 2 and "cannot listen" in result.stderr
    assert not (project / ".bindingd" / "bindingd.sock").exists()
    assert not (project / ".bindingd" / "endpoint").exists()


def test_a_config_that_would_block_is_refused_on_reload(daemon: DaemonProcess, project: Path) -> None:
    config = project / "bindingd.yaml"
    config.rename(project / "saved.yaml")
    os.mkfifo(config)
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload failed" not in daemon.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "not a regular file" in daemon.logs()
    with connect_sync(endpoint=daemon.endpoint) as env:
        assert env.SITE_NAME == "Example Shop"


def test_connect_is_a_coroutine_for_asyncio_run(daemon: DaemonProcess) -> None:
    # `asyncio.run(connect())` and `create_task(connect())` need a real coroutine, not just an
    # awaitable (a first-hour report: "a coroutine was expected, got _Connecting").
    pending = connect(daemon.endpoint)
    assert asyncio.iscoroutine(pending)
    pending.close()

    async def main() -> tuple[str, str | None]:
        env = await asyncio.create_task(connect(daemon.endpoint))
        try:
            await env.CACHE.put("chunks", ["h\u00e9", b"llo"])
            return env.SITE_NAME, await env.CACHE.get("chunks")
        finally:
            await env.aclose()

    assert asyncio.run(main()) == ("Example Shop", "h\u00e9llo")
    env = asyncio.run(connect(daemon.endpoint))
    assert (env.env_name, env.SITE_NAME) == ("dev", "Example Shop")

    async def with_block() -> str | None:
        async with connect(daemon.endpoint) as env:
            return await env.CACHE.get("chunks")

    assert asyncio.run(with_block()) == "h\u00e9llo"


def test_the_event_loop_is_uvloop_unless_asked_otherwise(project: Path) -> None:
    """serve runs on uvloop (bindingd/eventloop.py), BINDINGD_EVENT_LOOP=asyncio on the standard
    loop, and a choice it does not know is refused in one line before anything is served."""
    for choice, expected in (("", "uvloop"), ("asyncio", "asyncio")):
        daemon = DaemonProcess(project, env={"BINDINGD_EVENT_LOOP": choice}).start()
        try:
            with connect_sync(endpoint=daemon.endpoint) as env:
                env.CACHE.put("loop", choice)
                assert env.CACHE.get("loop") == choice
        finally:
            assert daemon.stop() == 0
        serving = [json.loads(line) for line in daemon.logs().splitlines() if '"serving"' in line]
        assert serving and serving[-1]["loop"] == expected, daemon.logs()
        daemon.log_path.unlink()
    result = bindingd_cli("serve", cwd=project, env={"BINDINGD_EVENT_LOOP": "trio"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "BINDINGD_EVENT_LOOP='trio'" in result.stderr
    assert not (project / ".bindingd" / "bindingd.sock").exists()
