"""`bindingd login` / `logout` as a developer runs them, against the gateway's Session service in
a real TLS gRPC server (certificates from `bindingd gateway init`, a SQLite state store, the
policy of a gateway.yaml), and the `gateway:` key of an env in bindingd.yaml.

The server runs in a thread of this process with its own event loop; the CLI runs as a child
process with its own XDG_CONFIG_HOME, so its device key lands in the test's folder.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from bindingd_client.errors import error_from_rpc
from bindingd_client.proto import session_pb2, session_pb2_grpc
from bindingd_client.wire import AUTHORIZATION, BEARER
from support import bindingd_cli, write_project

from bindingd.config import ConfigError, load_config
from bindingd.config.loader import gateway_url_problem
from bindingd.gateway import device, pki
from bindingd.gateway.config import load_gateway_config
from bindingd.gateway.device import DeviceKey
from bindingd.gateway.session_service import SessionService, add_to_server, token_env
from bindingd.gateway.sessions import Sessions
from bindingd.gateway.state import SqliteState
from bindingd.gateway.tokens import load_signing_key

GATEWAY_YAML = """\
    version: 1
    gateway:
      id: team-gw
      listen: "127.0.0.1:8443"
      tls: { cert: gw/server.pem, key: gw/server.key }
      signing_key: gw/signing.key
      state: { kind: sqlite, path: gw/state.sqlite3 }
    bindings:
      CACHE: { type: kv }
      ASSETS: { type: objects }
      API_KEY: { type: secret, value: "s3cr3t-value" }
    envs:
      staging: { token_ttl: 1234 }
      production: { protected: true }
    policy:
      groups: { developers: [alice] }
      grants:
        - { who: "group:developers", env: staging, bindings: "*", actions: [read, write] }
        - { who: "group:developers", env: production, bindings: [CACHE], actions: [read] }
"""

TOKEN_MARK = "v4.public."


@dataclass
class Gateway:
    root: Path  # the admin's folder: gateway.yaml, gw/
    port: int
    fingerprint: str

    def grant(self, user: str = "alice") -> str:
        result = bindingd_cli("gateway", "grant", "--config", "gateway.yaml", "--user", user, cwd=self.root)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[-1]

    def channel(self) -> grpc.Channel:
        ca = (self.root / "gw" / "ca.pem").read_bytes()
        return grpc.secure_channel(f"localhost:{self.port}", grpc.ssl_channel_credentials(ca))


def serve_in_thread(config_path: Path, ready: threading.Event, box: dict[str, object]) -> None:
    async def main() -> None:
        config = load_gateway_config(config_path)
        store = SqliteState(config.state.path)  # type: ignore[arg-type]
        await store.open()
        sessions = Sessions(store, gateway_id=config.id, signing_key=load_signing_key(config.signing_key))
        server = grpc.aio.server()
        add_to_server(server, SessionService(sessions, config))
        credentials = grpc.ssl_server_credentials(
            [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
        )
        box["port"] = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        box["stop"] = lambda: loop.call_soon_threadsafe(stop.set)
        ready.set()
        await stop.wait()
        await server.stop(0)
        await store.close()

    asyncio.run(main())


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    root = tmp_path / "admin"
    root.mkdir()
    result = bindingd_cli("gateway", "init", "gw", cwd=root)
    assert result.returncode == 0, result.stderr
    (root / "gateway.yaml").write_text(textwrap.dedent(GATEWAY_YAML))
    ready, box = threading.Event(), {}
    thread = threading.Thread(target=serve_in_thread, args=(root / "gateway.yaml", ready, box), daemon=True)
    thread.start()
    assert ready.wait(30), "the test gateway did not start"
    try:
        yield Gateway(root, int(box["port"]), result.stdout.splitlines()[-1])  # type: ignore[call-overload]
    finally:
        box["stop"]()  # type: ignore[operator]
        thread.join(30)


@dataclass
class Laptop:
    root: Path  # the project: bindingd.yaml, team-ca.pem
    xdg: Path

    def run(self, *args: str, stdin: bytes | None = b"", env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        result = bindingd_cli(
            *args, cwd=self.root, stdin=stdin, env={"XDG_CONFIG_HOME": str(self.xdg), **(env or {})}
        )
        everything = result.stdout + result.stderr
        assert TOKEN_MARK not in everything, "an access token was printed"
        assert "Traceback" not in everything
        return result

    def key_files(self) -> list[Path]:
        folder = self.xdg / "bindingd"
        return sorted(folder.glob("gateway-*.key")) if folder.exists() else []


def laptop_for(tmp_path: Path, gateway: Gateway, *, url: str | None = None, ca: Path | None = None) -> Laptop:
    root = tmp_path / "app"
    root.mkdir(exist_ok=True)
    shutil.copy(ca or gateway.root / "gw" / "ca.pem", root / "team-ca.pem")
    write_project(
        root,
        f"""\
        version: 1
        bindings:
          CACHE: {{ type: kv }}
        envs:
          staging:
            gateway: {{ url: "{url or f"localhost:{gateway.port}"}", ca: team-ca.pem }}
        """,
    )
    return Laptop(root, tmp_path / "xdg")


def one_error_line(result, code: int) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bindingd: "), result.stderr
    return str(lines[0])


# -- login / logout -----------------------------------------------------------------------------


def test_login_enrols_the_device_and_opens_a_session(tmp_path: Path, gateway: Gateway) -> None:
    laptop = laptop_for(tmp_path, gateway)
    code = gateway.grant()
    result = laptop.run("login", "--env", "staging", "--code", code)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "enrolled this device at gateway team-gw" in out and "as user alice" in out
    assert 'env "staging": session open until' in out
    # The policy's grants for the env (a secret is not reached by bindings "*").
    assert "CACHE" in out and "ASSETS" in out and "read, write" in out
    assert "API_KEY" not in out
    assert code not in out
    [key] = laptop.key_files()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700

    # The key file is the one the daemon will use for this gateway url.
    environ = {"XDG_CONFIG_HOME": str(laptop.xdg)}
    assert key == device.key_path(f"localhost:{gateway.port}", environ)

    # A reused code: refused with what to do, and the code is not repeated.
    again = laptop.run("login", "--env", "staging", "--code", code)
    line = one_error_line(again, 1)
    assert "already used" in line and "gateway grant" in line and "NOT_LOGGED_IN" in line
    assert code not in line


def test_login_without_a_code_and_no_terminal_never_prompts(tmp_path: Path, gateway: Gateway) -> None:
    laptop = laptop_for(tmp_path, gateway)
    result = laptop.run("login", "--env", "staging", stdin=b"SOMECODE\n")
    line = one_error_line(result, 2)
    assert "--code" in line and "not a terminal" in line
    assert result.stdout == ""
    assert "code" not in result.stdout.lower()
    assert laptop.key_files() == []  # nothing made before the code was known


def test_login_with_the_wrong_ca_names_the_fingerprints(tmp_path: Path, gateway: Gateway) -> None:
    other = tmp_path / "other"
    other.mkdir()
    made = bindingd_cli("gateway", "init", "gw", cwd=other)
    assert made.returncode == 0, made.stderr
    other_fingerprint = made.stdout.splitlines()[-1]
    laptop = laptop_for(tmp_path, gateway, ca=other / "gw" / "ca.pem")
    result = laptop.run("login", "--env", "staging", "--code", gateway.grant())
    line = one_error_line(result, 1)
    assert "team-ca.pem" in line and other_fingerprint in line
    # What the gateway presented: its server certificate's fingerprint, which is not the CA's.
    server_fp = pki.fingerprint((gateway.root / "gw" / "server.pem").read_bytes())
    assert server_fp in line and "not signed by the CA" in line
    assert "BACKEND_UNAVAILABLE" in line
    for raw in ("CERTIFICATE_VERIFY_FAILED", "ssl", "grpc", "handshake"):
        assert raw not in line.lower().replace("ssl_", ""), line


def test_login_asks_for_the_code_on_a_terminal(tmp_path: Path, gateway: Gateway) -> None:
    laptop = laptop_for(tmp_path, gateway)
    code = gateway.grant()
    primary, secondary = pty.openpty()
    try:
        # A new session: no controlling terminal, so getpass reads the pty given as stdin and
        # writes its prompt on stderr. The code is typed once the prompt is there (getpass
        # flushes what was typed ahead, as a terminal does when echo is turned off).
        proc = subprocess.Popen(
            [sys.executable, "-m", "bindingd", "login", "--env", "staging"],
            cwd=laptop.root,
            env={**os.environ, "XDG_CONFIG_HOME": str(laptop.xdg)},
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stderr is not None
        prompt = b""
        while b": " not in prompt:
            ready, _, _ = select.select([proc.stderr], [], [], 30)
            assert ready, f"no prompt: {prompt!r}"
            chunk = os.read(proc.stderr.fileno(), 1024)
            assert chunk, f"no prompt: {prompt!r}"
            prompt += chunk
        os.write(primary, f"{code}\n".encode())
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(secondary)
        os.close(primary)
    assert proc.returncode == 0, err
    assert b"enrolment code" in prompt
    assert b"as user alice" in out
    assert code.encode() not in prompt + out + err
    assert len(laptop.key_files()) == 1


def test_login_to_an_unreachable_gateway_names_its_address(tmp_path: Path, gateway: Gateway) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    laptop = laptop_for(tmp_path, gateway, url=f"localhost:{port}")
    line = one_error_line(laptop.run("login", "--env", "staging", "--code", "ABCD"), 1)
    assert f"cannot reach gateway localhost:{port}" in line and "BACKEND_UNAVAILABLE" in line


def test_logout_forgets_the_key_and_the_gateway_the_device(tmp_path: Path, gateway: Gateway) -> None:
    laptop = laptop_for(tmp_path, gateway)
    assert laptop.run("login", "--env", "staging", "--code", gateway.grant()).returncode == 0
    [path] = laptop.key_files()
    key = device.parse_pem(path.read_bytes(), str(path))

    result = laptop.run("logout", "--env", "staging")
    assert result.returncode == 0, result.stderr
    assert "forgot this device (user alice)" in result.stdout
    assert "deleted the device key" in result.stdout
    assert laptop.key_files() == []

    # The same key can no longer open a session.
    with gateway.channel() as channel:
        stub = session_pb2_grpc.SessionStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            open_session(stub, key, "staging")
    err = error_from_rpc(caught.value)
    assert err.reason == "TOKEN_REVOKED"
    assert TOKEN_MARK not in err.message

    # Logging out again: nothing to do, said plainly.
    again = laptop.run("logout", "--env", "staging")
    assert again.returncode == 0 and "not logged in" in again.stdout


def test_login_for_an_env_without_a_gateway(tmp_path: Path, gateway: Gateway) -> None:
    laptop = laptop_for(tmp_path, gateway)
    line = one_error_line(laptop.run("login", "--env", "dev", "--code", "X"), 2)
    assert 'env "dev" names no gateway' in line and "envs.dev" in line


def test_login_with_a_missing_ca_file_names_it(tmp_path: Path, gateway: Gateway) -> None:
    laptop = laptop_for(tmp_path, gateway)
    (laptop.root / "team-ca.pem").unlink()
    line = one_error_line(laptop.run("login", "--env", "staging", "--code", "X"), 2)
    assert "team-ca.pem" in line and "envs.staging.gateway.ca" in line


# -- the Session service ------------------------------------------------------------------------


def open_session(stub: session_pb2_grpc.SessionStub, key: DeviceKey, env: str) -> session_pb2.OpenResponse:
    challenge = stub.Challenge(session_pb2.ChallengeRequest(), timeout=10)
    signature = key.sign_challenge(challenge.gateway_id, env, challenge.nonce)
    request = session_pb2.OpenRequest(
        env=env, thumbprint=key.thumbprint, nonce=challenge.nonce, signature=signature
    )
    return stub.Open(request, timeout=10)


def enrolled_key(gateway: Gateway, stub: session_pb2_grpc.SessionStub) -> DeviceKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = DeviceKey(Ed25519PrivateKey.generate(), "test")
    code = gateway.grant()
    proof = key.enrolment_proof("team-gw", code)
    stub.Enrol(session_pb2.EnrolRequest(code=code, device_public_key=key.public_raw, proof=proof), timeout=10)
    return key


def test_open_grants_what_the_policy_does_for_the_env_ttl(gateway: Gateway) -> None:
    with gateway.channel() as channel:
        stub = session_pb2_grpc.SessionStub(channel)
        key = enrolled_key(gateway, stub)
        staging = open_session(stub, key, "staging")
        production = open_session(stub, key, "production")
    assert staging.user == "alice"
    granted = {name: list(a.actions) for name, a in staging.bindings.items()}
    assert granted == {"CACHE": ["read", "write"], "ASSETS": ["read", "write"]}
    assert token_env(staging.token) == "staging"
    assert {name: list(a.actions) for name, a in production.bindings.items()} == {"CACHE": ["read"]}
    # token_ttl: staging's 1234 s; production is protected: 900 s by default.
    assert 1230 <= staging.expires - int(time.time()) <= 1234
    assert 895 <= production.expires - int(time.time()) <= 900


def test_session_errors_carry_the_error_trailer(gateway: Gateway) -> None:
    with gateway.channel() as channel:
        stub = session_pb2_grpc.SessionStub(channel)
        key = enrolled_key(gateway, stub)
        with pytest.raises(grpc.RpcError) as caught:
            open_session(stub, key, "nowhere")
        err = error_from_rpc(caught.value)
        assert err.reason == "INVALID_ARGUMENT" and 'serves no env "nowhere"' in err.message
        assert "staging" not in err.message  # not the list of envs to an unauthenticated caller

        with pytest.raises(grpc.RpcError) as caught:
            stub.Logout(session_pb2.LogoutRequest(), timeout=10)
        assert error_from_rpc(caught.value).reason == "NOT_LOGGED_IN"

        garbage = ((AUTHORIZATION, f"{BEARER}{TOKEN_MARK}bm90LWEtdG9rZW4.e30"),)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Logout(session_pb2.LogoutRequest(), timeout=10, metadata=garbage)
        err = error_from_rpc(caught.value)
        assert err.reason == "NOT_LOGGED_IN" and TOKEN_MARK not in err.message

        with pytest.raises(grpc.RpcError) as caught:
            stub.Enrol(
                session_pb2.EnrolRequest(code="NOPE", device_public_key=key.public_raw, proof=b"x" * 64)
            )
        err = error_from_rpc(caught.value)
        assert err.reason == "NOT_LOGGED_IN" and "NOPE" not in err.message

        # Logout with the device's own token: that device, and no other, is forgotten.
        other = enrolled_key(gateway, stub)
        token = open_session(stub, key, "staging").token
        stub.Logout(session_pb2.LogoutRequest(), timeout=10, metadata=((AUTHORIZATION, f"{BEARER}{token}"),))
        assert open_session(stub, other, "staging").user == "alice"
        with pytest.raises(grpc.RpcError) as caught:
            open_session(stub, key, "staging")
        assert error_from_rpc(caught.value).reason == "TOKEN_REVOKED"


# -- bindingd.yaml: an env's gateway ------------------------------------------------------------


def test_an_env_names_its_gateway(tmp_path: Path) -> None:
    path = write_project(
        tmp_path,
        """\
        version: 1
        bindings:
          CACHE: { type: kv }
        envs:
          staging:
            gateway: { url: "gw.example.com:8443", ca: certs/team-ca.pem }
        """,
    )
    staging = load_config(path, env="staging")
    assert staging.gateway is not None
    assert staging.gateway.url == "gw.example.com:8443"
    assert (staging.gateway.host, staging.gateway.port) == ("gw.example.com", 8443)
    assert staging.gateway.ca == tmp_path / "certs" / "team-ca.pem"
    assert load_config(path, env="dev").gateway is None


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        ('{ url: "https://gw:8443", ca: ca.pem }', "no scheme"),
        ('{ url: "alice:hunter2@gw:8443", ca: ca.pem }', "no credentials"),
        ('{ url: "gw.example.com", ca: ca.pem }', "port"),
        ('{ url: "gw:8443/x", ca: ca.pem }', "no path"),
        ('{ url: "gw:0", ca: ca.pem }', "port"),
        ('{ url: "::1:8443", ca: ca.pem }', "brackets"),
        ("{ ca: ca.pem }", 'missing required key "url"'),
        ('{ url: "gw:8443" }', 'missing required key "ca"'),
        ('{ url: "gw:8443", ca: ca.pem, token: x }', 'unknown key "token"'),
        ('"gw:8443"', "expected a mapping"),
    ],
)
def test_gateway_key_errors(tmp_path: Path, gateway: str, message: str) -> None:
    # In another env than the one loaded: every env is checked.
    path = write_project(
        tmp_path,
        f"""\
        version: 1
        envs:
          staging:
            gateway: {gateway}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env="dev")
    err = caught.value
    assert err.line == 4 and err.key_path.startswith("envs.staging.gateway")
    assert message in err.message
    assert "hunter2" not in str(err)


def test_gateway_urls() -> None:
    for good in ("localhost:8443", "127.0.0.1:1", "[::1]:8443", "gw.example.com:65535"):
        assert gateway_url_problem(good) is None, good
    for bad in ("", ":8443", "gw:", "gw:65536", "gw: 8443", "[::1:8443", "grpcs://gw:443"):
        assert gateway_url_problem(bad) is not None, bad


def test_a_gateway_yaml_env_takes_no_gateway_key(tmp_path: Path) -> None:
    result = bindingd_cli("gateway", "init", "gw", cwd=tmp_path)
    assert result.returncode == 0
    text = textwrap.dedent(GATEWAY_YAML).replace(
        "staging: { token_ttl: 1234 }", 'staging: { gateway: { url: "x:1", ca: c.pem } }'
    )
    (tmp_path / "gateway.yaml").write_text(text)
    with pytest.raises(ConfigError, match='unknown key "gateway"'):
        load_gateway_config(tmp_path / "gateway.yaml")


def test_serve_with_an_unreadable_gateway_ca_says_so_in_one_line(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        """\
        version: 1
        bindings:
          CACHE: { type: kv }
        envs:
          staging:
            gateway: { url: "gw.example.com:8443", ca: team-ca.pem }
        """,
    )
    result = bindingd_cli("serve", "--env", "staging", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "envs.staging.gateway.ca: cannot read the gateway's CA certificate" in result.stderr
