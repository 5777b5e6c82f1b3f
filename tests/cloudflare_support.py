"""The proxy Worker in Miniflare for the conformance suites: one per test session, with a pool of
spare KV namespaces, R2 buckets and D1 databases handed out one per binding of each test, so
tests never see each other's data."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bindingd.providers.cloudflare.token import public_key_b64

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "bindingd/providers/cloudflare/worker/serve.mjs"
NODE_DIR = Path(os.environ.get("BINDINGD_NODE_DIR", ROOT / "clients/node"))
# Spare bindings of each kind: more than the bindings one session's tests ask for.
POOL = 400


@dataclass
class MiniflareWorker:
    url: str
    key: Ed25519PrivateKey
    proc: subprocess.Popen[str]
    _next: dict[str, itertools.count[int]] = field(default_factory=dict)

    @property
    def key_b64(self) -> str:
        raw = self.key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return base64.b64encode(raw).decode()

    def take(self, prefix: str) -> str:
        """A binding of the Worker (KV_P, R2_P or D1_P) no test has used yet."""
        n = next(self._next.setdefault(prefix, itertools.count()))
        assert n < POOL, f"the Miniflare pool of {prefix} bindings is used up; raise POOL"
        return f"{prefix}{n}"

    def connection(self, name: str = "cf") -> str:
        return f'{name}: {{ kind: cloudflare, url: "{self.url.rstrip("/")}", key: "{self.key_b64}" }}'

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_worker() -> MiniflareWorker:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules/miniflare").exists():
        pytest.skip("needs node and clients/node's packages (make node)")
    key = Ed25519PrivateKey.generate()
    proc = subprocess.Popen(
        ["node", str(SERVE), public_key_b64(key), "", str(POOL)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise RuntimeError("Miniflare did not start (see stderr)")
    return MiniflareWorker(json.loads(line)["url"], key, proc)
