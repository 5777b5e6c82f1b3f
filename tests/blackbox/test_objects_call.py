"""`bindingd call` on an objects binding, as a user runs it from the shell."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from support import bindingd_cli, write_project


def test_call_put_get_head_list_delete(tmp_path: Path) -> None:
    write_project(tmp_path, "version: 1\nbindings:\n  ASSETS: { type: objects }\n")
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "src.bin").write_bytes(data)

    put = bindingd_cli(
        "call", "ASSETS", "put", "a/src.bin", "src.bin", "--content-type", "x/y", "--json", cwd=tmp_path
    )
    assert put.returncode == 0, put.stderr
    shown = json.loads(put.stdout)
    assert shown["etag"] == hashlib.md5(data).hexdigest() and shown["http_metadata"] == {
        "content_type": "x/y"
    }

    got = bindingd_cli("call", "ASSETS", "get", "a/src.bin", "-o", "out.bin", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out.bin").read_bytes() == data

    stdin_put = bindingd_cli("call", "ASSETS", "put", "hello.txt", "-", cwd=tmp_path, stdin=b"hello\n")
    assert stdin_put.returncode == 0, stdin_put.stderr
    assert bindingd_cli("call", "ASSETS", "get", "hello.txt", cwd=tmp_path).stdout == "hello\n"
    suffix = bindingd_cli("call", "ASSETS", "get", "hello.txt", "--suffix", "3", cwd=tmp_path)
    assert suffix.stdout == "lo\n"

    listed = json.loads(bindingd_cli("call", "ASSETS", "list", "--delimiter", "/", cwd=tmp_path).stdout)
    assert [o["key"] for o in listed["objects"]] == ["hello.txt"] and listed["delimited_prefixes"] == ["a/"]

    assert bindingd_cli("call", "ASSETS", "delete", "hello.txt", cwd=tmp_path).returncode == 0
    missing = bindingd_cli("call", "ASSETS", "head", "hello.txt", cwd=tmp_path)
    assert missing.returncode == 1 and 'object "hello.txt" not found in ASSETS' in missing.stderr

    bad = bindingd_cli("call", "ASSETS", "frob", cwd=tmp_path)
    assert bad.returncode != 0 and "objects: head, get, put, delete, list" in bad.stderr
    unreadable = bindingd_cli("call", "ASSETS", "put", "k", "no-such-file", cwd=tmp_path)
    assert unreadable.returncode != 0 and "cannot read no-such-file" in unreadable.stderr
    assert "Traceback" not in unreadable.stderr
