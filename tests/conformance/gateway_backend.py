"""Backends behind a gateway: worker -> daemon -> `gateway` (TLS) -> provider.

`through_gateway(inner)` turns any backend's project into one served through a real gateway:
the inner project's bindings and connections become a gateway.yaml (envs `dev` and a protected
`production`, one user granted every action on both), a real `Gateway` serves it over TLS on a
loopback port, a device key is enrolled for the user, and the developer's bindingd.yaml names
no binding at all: `env: dev` and `dev`/`production` on the gateway, so every binding the
suites use is discovered. The suites then run unchanged.

The gateway is served by the test's event loop (like the daemon in `connected`), so the suites'
fake clock drives its providers (KV expiry, queue delays): tests/gateway/test_remote.py runs
the same path with every hop a separate process. Its PKI (`bindingd gateway init`) and the
device key are made once per session: a test pays only for starting the gateway.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import bindingd_cli, write_project

from bindingd.gateway.config import load_gateway_config
from bindingd.gateway.device import KEY_ENV, DeviceKey
from bindingd.gateway.server import Gateway

GATEWAY_ID = "conformance-gw"
USER = "tester"


@dataclass(frozen=True)
class Credentials:
    """The gateway's PKI (from `bindingd gateway init`) and the developer's device key."""

    pki: Path  # ca.pem, server.pem, server.key, signing.key
    device_key: Path  # PEM, 0600

    def device(self) -> DeviceKey:
        key = serialization.load_pem_private_key(self.device_key.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return DeviceKey(key, str(self.device_key))


_credentials: Credentials | None = None


def credentials(request: pytest.FixtureRequest) -> Credentials:
    """Made on first use, kept for the session."""
    global _credentials
    if _credentials is None:
        root = request.getfixturevalue("tmp_path_factory").mktemp("gateway-pki")
        done = bindingd_cli("gateway", "init", "pki", cwd=root)
        assert done.returncode == 0, done.stderr
        key_file = root / "device.pem"
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        _credentials = Credentials(root / "pki", key_file)
    return _credentials


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_yaml(
    inner: dict[str, Any], pki: Path, state: dict[str, str] | None = None, audit: str = "audit.jsonl"
) -> dict[str, Any]:
    """The inner project's bindings and connections served by a gateway on a free port."""
    envs: dict[str, Any] = {name: dict(body or {}) for name, body in (inner.get("envs") or {}).items()}
    envs = {
        **envs,
        "dev": {**envs.get("dev", {}), "token_ttl": 3600},
        "production": {**envs.get("production", {}), "protected": True, "token_ttl": 900},
    }
    return {
        "version": 1,
        "gateway": {
            "id": GATEWAY_ID,
            "listen": f"127.0.0.1:{_free_port()}",
            "tls": {"cert": str(pki / "server.pem"), "key": str(pki / "server.key")},
            "signing_key": str(pki / "signing.key"),
            "state": state or {"kind": "sqlite", "path": "gw-state.sqlite3"},
            "audit": {"path": audit},
        },
        **({"connections": inner["connections"]} if inner.get("connections") else {}),
        "bindings": inner.get("bindings") or {},
        "envs": envs,
        "policy": {
            "groups": {"team": [USER]},
            "grants": [{"who": "group:team", "env": env, "bindings": "*", "actions": "*"} for env in envs],
        },
    }


@contextlib.asynccontextmanager
async def serving_gateway(
    gateway_root: Path,
    inner_config: Path,
    request: pytest.FixtureRequest,
    clock: Any = None,
    *,
    state: dict[str, str] | None = None,
    name: str = "gateway.yaml",
    settings: dict[str, Any] | None = None,
) -> AsyncIterator[Gateway]:
    """A gateway serving the bindings of `inner_config` from `gateway_root` (the folder holding
    it, so its relative paths mean the same), with the session's device key enrolled."""
    creds = credentials(request)
    inner = yaml.safe_load(inner_config.read_text())
    path = gateway_root / name
    audit = f"{Path(name).stem}-audit.jsonl"  # each instance its own
    document = gateway_yaml(inner, creds.pki, state, audit)
    document["gateway"].update(settings or {})  # e.g. a port or signing keys of the test's own
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    gateway = Gateway(load_gateway_config(path), grace_s=0.0, **({"clock": clock} if clock else {}))
    try:
        await gateway.start()
        device = creds.device()
        code = await gateway.sessions.grant(USER, ["team"])
        await gateway.sessions.enrol(code, device.public_raw, device.enrolment_proof(GATEWAY_ID, code))
        yield gateway
    finally:
        await gateway.shutdown()


def developer_config(
    root: Path, gateway: Gateway, request: pytest.FixtureRequest, *, port: int | None = None
) -> Path:
    """The developer's bindingd.yaml: no binding listed, every env of the gateway on it; the
    device key through BINDINGD_GATEWAY_KEY (as a CI job holds it). `port`: where the developer
    reaches the gateway, if not at its own port (a load balancer in front of it)."""
    creds = credentials(request)
    request.getfixturevalue("monkeypatch").setenv(KEY_ENV, str(creds.device_key))
    on_gateway = {"gateway": {"url": f"localhost:{port or gateway.port}", "ca": str(creds.pki / "ca.pem")}}
    config = {"version": 1, "env": "dev", "envs": {env: on_gateway for env in gateway.config.envs}}
    return write_project(root, yaml.safe_dump(config, sort_keys=False))


def through_gateway(inner: Any) -> Any:
    """`inner` (a MakeProject) served through a gateway: the inner project is made in a folder of
    its own, which becomes the gateway's, and the returned project is the developer's."""

    @contextlib.asynccontextmanager
    async def make(
        root: Path, request: pytest.FixtureRequest, *, timeout: float = 10.0
    ) -> AsyncIterator[Any]:
        from conformance.backends import Project

        # The suite's fake clock, where it has one (the kv suite's), drives the gateway's providers.
        try:
            clock = request.getfixturevalue("clock")
        except pytest.FixtureLookupError:
            clock = None
        async with (
            inner(root / "gateway", request, timeout=timeout) as made,
            serving_gateway(made.root, made.config, request, clock) as gateway,
        ):
            yield Project(developer_config(root / "laptop", gateway, request), made.database)

    return make
