"""bindingd_client.wire: what the daemon and the clients share, and the daemon's use of the client."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from bindingd_client import wire
from bindingd_client.proto import objects_pb2

DAEMON = Path(__file__).resolve().parents[2] / "bindingd"
CHUNK_MESSAGES = (
    objects_pb2.ObjectsPutRequest,
    objects_pb2.ObjectsUploadPartRequest,
    objects_pb2.ObjectsGetResponse,
)


@pytest.mark.parametrize("message", CHUNK_MESSAGES, ids=lambda m: m.__name__)
def test_every_body_message_has_the_chunk_at_the_same_field(message: type) -> None:
    field = message.DESCRIPTOR.fields_by_name["chunk"]
    assert field.number == wire.CHUNK_FIELD
    assert field.type == field.TYPE_BYTES


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, wire.CHUNK_BYTES])
def test_a_chunk_message_is_what_protobuf_reads(size: int) -> None:
    chunk = bytes(range(256)) * (size // 256) + bytes(size % 256)
    raw = wire.chunk_message(chunk)
    assert len(wire.chunk_head(size)) <= wire.CHUNK_HEAD_BYTES
    for message in CHUNK_MESSAGES:
        assert message.FromString(raw).chunk == chunk
    view = wire.chunk_view(raw)
    assert view is not None and bytes(view) == chunk


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        objects_pb2.ObjectsPutRequest(header=objects_pb2.ObjectsPutHeader(key="k")).SerializeToString(),
        wire.chunk_message(b"abc") + b"\x18\x01",  # another field after the chunk
        wire.chunk_message(b"abc")[:-1],  # cut short
        b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint that never ends
    ],
)
def test_only_a_lone_chunk_is_cut_out(raw: bytes) -> None:
    assert wire.chunk_view(raw) is None


def test_http_fields_are_those_of_the_message() -> None:
    assert set(wire.HTTP_FIELDS) == set(objects_pb2.ObjectHttpMetadata.DESCRIPTOR.fields_by_name)


def _client_imports(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) for each name `path` imports from bindingd_client."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "bindingd_client":
            found += [(node.module or "", alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [
                (a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "bindingd_client"
            ]
    return found


def test_the_daemon_uses_only_public_names_of_the_client() -> None:
    """Private modules and names may change with any client release; the daemon must not break."""
    private = []
    for path in sorted(DAEMON.rglob("*.py")):
        for module, name, line in _client_imports(path):
            where = f"{path.relative_to(DAEMON.parent)}:{line}: {module} {name}".rstrip()
            if module.startswith("bindingd_client.proto"):
                continue  # the generated stubs: the .proto files are the contract
            in_private_module = any(part.startswith("_") for part in module.split("."))
            public = getattr(importlib.import_module(module), "__all__", ())
            if in_private_module or (name and name not in public):
                private.append(where)
    assert private == []
