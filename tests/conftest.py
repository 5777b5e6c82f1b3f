from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# tests/support.py is imported as `support` by every suite.
sys.path.insert(0, str(Path(__file__).parent))

if TYPE_CHECKING:
    from objects_support import MotoServer


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A real S3 protocol server on a free loopback port, for the tests of one module (it keeps
    every object in memory until it stops). Imported here, not at collection: boto3 is slow."""
    from objects_support import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cloudflare_worker() -> Iterator[object]:
    """bindingd's proxy Worker in Miniflare, once per session (tests/cloudflare_support.py)."""
    from cloudflare_support import start_worker

    worker = start_worker()
    try:
        yield worker
    finally:
        worker.stop()
