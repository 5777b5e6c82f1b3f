"""The clients must not follow an endpoint someone else planted, must send the project's token
only to the daemon it belongs to, and must not talk to a daemon of another env than asked for.

Run as root here: "another user" is uid 65534 (nobody), a shared folder is mode 1777. The
planted listener is a real gRPC server on loopback that records what it is sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from bindingd_client import DaemonUnavailable, WrongEnv, connect, connect_sync
from support import DaemonProcess, listen_port, write_project

NOBODY = 65534
CONFIG = """
    version: 1
    env: dev
    bindings:
      CACHE: { type: kv }
    envs:
      staging: {}
"""


class Recorder(grpc.GenericRpcHandler):
    """Someone else's listener: answers nothing, remembers every authorization it was sent."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        self.authorizations += [v for k, v in details.invocation_metadata if k == "authorization"]

        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not bindingd")
            raise AssertionError

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.fixture
def planted() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[recorder])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield recorder, port
    server.stop(0)


@pytest.fixture(autouse=True)
def _no_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BINDINGD_ENDPOINT", "BINDINGD_TOKEN", "BINDINGD_ENV"):
        monkeypatch.delenv(name, raising=False)


def _shared(tmp_path: Path) -> Path:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    return shared


def _plant(folder: Path, endpoint: str, *, owner: int = NOBODY, mode: int = 0o644) -> Path:
    state = folder / ".bindingd"
    state.mkdir()
    (state / "endpoint").write_text(endpoint + "\n")
    (state / "endpoint").chmod(mode)
    os.chown(state / "endpoint", owner, owner)
    os.chown(state, owner, owner)
    return state


def _project_with_token(root: Path) -> str:
    """A project whose daemon ran with --listen and is stopped now: its token stays behind."""
    write_project(root, CONFIG)
    (root / ".bindingd").mkdir(mode=0o700)
    token = "the-project-token-0123456789"
    (root / ".bindingd" / "token").write_text(token + "\n")
    (root / ".bindingd" / "token").chmod(0o600)
    return token


def test_a_planted_endpoint_above_the_project_is_not_followed(
    tmp_path: Path, planted: tuple[Recorder, int]
) -> None:
    recorder, port = planted
    shared = _shared(tmp_path)
    _plant(shared, f"127.0.0.1:{port}")
    project = shared / "project"
    token = _project_with_token(project)
    (project / "src").mkdir()
    for cwd in (project, project / "src"):
        with pytest.raises(DaemonUnavailable) as raised:
            connect_sync_in(cwd)
        assert str(project / ".bindingd") in str(raised.value)
        assert "bindingd serve" in str(raised.value)
    assert recorder.authorizations == []
    assert token not in repr(recorder.authorizations)


def test_a_planted_endpoint_is_not_followed_outside_a_project(
    tmp_path: Path, planted: tuple[Recorder, int]
) -> None:
    recorder, port = planted
    shared = _shared(tmp_path)
    state = _plant(shared, f"127.0.0.1:{port}")
    (state / "token").write_text("planted\n")
    somewhere = shared / "somewhere" / "deep"
    somewhere.mkdir(parents=True)
    with pytest.raises(DaemonUnavailable) as raised:
        connect_sync_in(somewhere)
    assert f"belongs to uid {NOBODY}" in str(raised.value) and str(state) in str(raised.value)
    assert recorder.authorizations == []


@pytest.mark.parametrize("mode", [0o666, 0o620])
def test_an_endpoint_file_others_may_write_is_not_followed(
    tmp_path: Path, planted: tuple[Recorder, int], mode: int
) -> None:
    recorder, port = planted
    _plant(tmp_path, f"127.0.0.1:{port}", owner=os.getuid(), mode=mode)
    with pytest.raises(DaemonUnavailable, match=f"mode {mode:o}"):
        connect_sync_in(tmp_path)
    assert recorder.authorizations == []


def test_the_project_token_goes_only_to_its_own_daemon(
    tmp_path: Path, planted: tuple[Recorder, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, port = planted
    token = _project_with_token(tmp_path)
    monkeypatch.chdir(tmp_path)
    # BINDINGD_ENDPOINT names a port that is not the project's daemon (it was stopped, and
    # someone else took the port): the project's token stays home.
    monkeypatch.setenv("BINDINGD_ENDPOINT", f"127.0.0.1:{port}")
    with pytest.raises(DaemonUnavailable):
        connect_sync()
    assert recorder.authorizations == []
    # BINDINGD_TOKEN given with the endpoint is the caller's own choice.
    monkeypatch.setenv("BINDINGD_TOKEN", "chosen")
    with pytest.raises(DaemonUnavailable):
        connect_sync()
    assert recorder.authorizations == ["Bearer chosen"]
    assert token not in repr(recorder.authorizations)


def test_the_project_token_reaches_the_project_daemon_on_tcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_project(tmp_path, CONFIG)
    port = listen_port()
    d = DaemonProcess(tmp_path, "--listen", f"127.0.0.1:{port}").start()
    try:
        assert (tmp_path / ".bindingd" / "listen").read_text().strip() == f"127.0.0.1:{port}"
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("BINDINGD_ENDPOINT", f"127.0.0.1:{port}")
        with connect_sync() as env:
            env.CACHE.put("k", "v")
    finally:
        d.stop()
    assert not (tmp_path / ".bindingd" / "listen").exists()


def connect_sync_in(cwd: Path):  # type: ignore[no-untyped-def]
    """connect_sync() run from `cwd`, as a worker started there would."""
    here = Path.cwd()
    os.chdir(cwd)
    try:
        return connect_sync()
    finally:
        os.chdir(here)


# --- BINDINGD_ENV ------------------------------------------------------------------------------


@pytest.fixture
def dev_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    write_project(tmp_path, CONFIG)
    d = DaemonProcess(tmp_path, "--env", "dev").start()
    yield d
    d.stop()


def test_the_client_refuses_a_daemon_of_another_env(
    dev_daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dev_daemon.root)
    monkeypatch.setenv("BINDINGD_ENV", "staging")
    with pytest.raises(WrongEnv) as raised:
        connect_sync()
    message = str(raised.value)
    assert '"dev"' in message and '"staging"' in message and "BINDINGD_ENV" in message
    assert raised.value.reason == "WRONG_ENV" and isinstance(raised.value, DaemonUnavailable)
    monkeypatch.delenv("BINDINGD_ENV")
    with pytest.raises(WrongEnv, match=r"connect\(env=\.\.\.\)"):
        connect_sync(env="staging")
    with connect_sync(env="dev") as env:
        assert env.env_name == "dev"
    with connect_sync() as env:  # nothing asked: any env will do
        assert env.env_name == "dev"


async def test_the_async_client_refuses_a_daemon_of_another_env(
    dev_daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dev_daemon.root)
    with pytest.raises(WrongEnv):
        await connect(env="staging")
    monkeypatch.setenv("BINDINGD_ENV", "dev")
    async with connect() as env:
        assert env.env_name == "dev"


def test_a_worker_started_for_staging_does_not_talk_to_dev(dev_daemon: DaemonProcess) -> None:
    worker = "from bindingd_client import connect_sync\nconnect_sync().CACHE.put('k', 'from staging')\n"
    result = subprocess.run(
        [sys.executable, "-c", worker],
        cwd=dev_daemon.root,
        env={**os.environ, "BINDINGD_ENV": "staging"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "WrongEnv" in result.stderr and 'serves env "dev", not "staging"' in result.stderr
    with connect_sync(endpoint=dev_daemon.endpoint) as env:
        assert env.CACHE.get("k") is None
