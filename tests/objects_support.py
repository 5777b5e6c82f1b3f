"""S3 for the objects suites: `moto_server` (a real S3 protocol server) on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import boto3
from support import write_project

ACCESS_KEY = "bindingd-test-key"
SECRET_KEY = "bindingd-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> MotoServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"moto_server exited: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"moto_server did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name


def s3_connection(moto: MotoServer, timeout: float = 10.0) -> str:
    return textwrap.dedent(
        f"""
        connections:
          moto:
            kind: s3
            endpoint: "{moto.endpoint}"
            region: us-east-1
            access_key_id: "{ACCESS_KEY}"
            secret_access_key: "{SECRET_KEY}"
            path_style: true
            timeout: {timeout}
        """
    )


def s3_project(root: Path, moto: MotoServer, timeout: float = 10.0) -> Path:
    """ASSETS on a bucket of its own; OTHER and READONLY share a second one under prefixes."""
    assets, shared = moto.new_bucket(), moto.new_bucket()
    config = (
        "version: 1\n"
        + s3_connection(moto, timeout)
        + textwrap.dedent(
            f"""
            bindings:
              ASSETS: {{ type: objects, connection: moto, bucket: {assets} }}
              OTHER: {{ type: objects, connection: moto, bucket: {shared}, prefix: "other/" }}
              READONLY:
                {{ type: objects, connection: moto, bucket: {shared}, prefix: "ro/", access: read-only }}
            envs:
              production: {{ protected: true }}
            """
        )
    )
    return write_project(root, config)
