"""What a registry would get: `python -m build` for both Python packages, `npm pack` for Node.

`python -m build` makes the sdist, then the wheel from that sdist in an isolated environment, so a
wheel with its stubs proves that the sdist builds on its own (from the .proto files it carries).
"""

from __future__ import annotations

import email
import json
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO, run

# Builds and installs the packages: alone, after the parallel part of `make test`.
pytestmark = pytest.mark.serial

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
PROTOS = sorted(p.stem for p in (REPO / "proto/bindingd/v1").glob("*.proto"))


def _build(project: Path, out: Path) -> tuple[list[str], zipfile.ZipFile]:
    run([sys.executable, "-m", "build", "--outdir", out, project])
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    return names, zipfile.ZipFile(wheel)


Build = tuple[list[str], zipfile.ZipFile]
LICENCE = (REPO / "LICENSE").read_bytes()


def _metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    (name,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return email.message_from_bytes(wheel.read(name))


@pytest.fixture(scope="module")
def client_build(clean_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Build:
    return _build(clean_repo / "clients/python", tmp_path_factory.mktemp("client-dist"))


def test_client_sdist_carries_the_protos_and_no_stubs(client_build: Build) -> None:
    names, _ = client_build
    top = f"bindingd_client-{VERSION}"
    for proto in PROTOS:
        assert f"{top}/proto/bindingd/v1/{proto}.proto" in names
    for needed in ("setup.py", "build_stubs.py", "pyproject.toml", "LICENSE", "README.md"):
        assert f"{top}/{needed}" in names
    assert not [n for n in names if "/bindingd_client/proto" in n]


def test_client_wheel_has_the_stubs_and_the_licence(client_build: Build) -> None:
    _, wheel = client_build
    names = set(wheel.namelist())
    for proto in PROTOS:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert f"bindingd_client/proto/{proto}{suffix}" in names
    assert "bindingd_client/proto/__init__.py" in names
    assert "bindingd_client/py.typed" in names
    # The stubs import each other relatively: `from bindingd.v1 import` would find the daemon.
    assert b"from bindingd.v1" not in wheel.read("bindingd_client/proto/database_pb2_grpc.py")
    assert wheel.read(f"bindingd_client-{VERSION}.dist-info/licenses/LICENSE") == LICENCE
    meta = _metadata(wheel)
    expected = ("bindingd-client", VERSION, "Apache-2.0")
    assert (meta["Name"], meta["Version"], meta["License-Expression"]) == expected
    assert sorted(meta.get_all("Requires-Dist")) == ["grpcio>=1.85.1", "protobuf>=7.35"]


def test_daemon_sdist_and_wheel(clean_repo: Path, tmp_path: Path) -> None:
    names, wheel = _build(clean_repo, tmp_path)
    assert f"bindingd-{VERSION}/LICENSE" in names
    assert not [n for n in names if "/tests/" in n or "/clients/" in n]
    files = set(wheel.namelist())
    assert "bindingd/cli/main.py" in files
    assert wheel.read(f"bindingd-{VERSION}.dist-info/licenses/LICENSE") == LICENCE
    entry_points = wheel.read(f"bindingd-{VERSION}.dist-info/entry_points.txt").decode()
    assert "bindingd = bindingd.cli:main" in entry_points
    meta = _metadata(wheel)
    assert (meta["Name"], meta["Version"], meta["License-Expression"]) == ("bindingd", VERSION, "Apache-2.0")
    assert f"bindingd-client=={VERSION}" in meta.get_all("Requires-Dist")
    assert not [n for n in files if n.startswith(("tests/", "bench/", "bindingd_client/"))]


def test_npm_pack_has_dist_and_no_tests(node_built: Path, tmp_path: Path) -> None:
    out = json.loads(run(["npm", "pack", "--json", "--pack-destination", tmp_path], cwd=node_built))
    (packed,) = out
    assert (packed["name"], packed["version"]) == ("@bindingd/client", VERSION)
    with tarfile.open(tmp_path / packed["filename"]) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
        licence = tar.extractfile("package/LICENSE").read()  # type: ignore[union-attr]
    for needed in ("dist/index.js", "dist/index.d.ts", "dist/kv.js", "dist/gen/bindingd/v1/kv.js", "LICENSE"):
        assert f"package/{needed}" in names
    assert licence == LICENCE
    assert manifest["license"] == "Apache-2.0"
    assert not [n for n in names if n.startswith(("package/test/", "package/node_modules/"))]
    assert not [n for n in names if "test" in Path(n).name or n.endswith(".mjs")]
