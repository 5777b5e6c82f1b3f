"""`bindingd call APP_DB query|exec` through the real command line (a short-lived daemon)."""

from __future__ import annotations

import json
from pathlib import Path

from support import bindingd_cli, write_project


def test_query_and_exec_from_the_shell(tmp_path: Path) -> None:
    root = tmp_path / "project"
    write_project(root, "version: 1\nbindings:\n  APP_DB: { type: sql }\n")
    done = bindingd_cli(
        "call",
        "APP_DB",
        "exec",
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT, body BLOB);"
        " INSERT INTO posts VALUES (7, 'hello; world', x'00ff')",
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["count"] == 1  # D1's count: the lines that hold SQL

    query = bindingd_cli("call", "APP_DB", "query", "SELECT * FROM posts WHERE id = ?", "7", cwd=root)
    assert query.returncode == 0, query.stderr
    answer = json.loads(query.stdout)
    assert answer["results"] == [{"id": 7, "title": "hello; world", "body": {"blob_hex": "00ff"}}]
    assert answer["success"] is True
    assert answer["meta"]["rows_read"] == 1

    raw = bindingd_cli("call", "APP_DB", "query", "SELECT id, ? AS t FROM posts", "text", "--raw", cwd=root)
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout) == [["id", "t"], [7, "text"]]

    bad = bindingd_cli("call", "APP_DB", "query", "SELEC 1", cwd=root)
    assert bad.returncode == 1
    assert "SQL_ERROR" in bad.stderr and "syntax" in bad.stderr
    assert "Traceback" not in bad.stderr
