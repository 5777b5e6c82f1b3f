"""`bindingd call` on a queue binding, as a user runs it from the shell."""

from __future__ import annotations

import json
from pathlib import Path

from support import bindingd_cli, write_project

CONFIG = """
    version: 1
    bindings:
      JOBS: { type: queue }
    envs:
      review:
        bindings:
          JOBS: { access: read-only }
"""


def test_send_send_batch_and_consume(tmp_path: Path) -> None:
    write_project(tmp_path, CONFIG)
    assert bindingd_cli("call", "JOBS", "send", '{"a": 1}', cwd=tmp_path).returncode == 0
    assert bindingd_cli("call", "JOBS", "send", "hi", "--content-type", "text", cwd=tmp_path).returncode == 0
    batch = json.dumps([{"body": 2}, {"body": "x", "content_type": "text"}])
    assert bindingd_cli("call", "JOBS", "send-batch", batch, cwd=tmp_path).returncode == 0

    out = bindingd_cli("call", "JOBS", "consume", "--max", "10", "--wait", "3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(m["body"], m["content_type"], m["attempts"]) for m in lines] == [
        ({"a": 1}, "json", 1),
        ("hi", "text", 1),
        (2, "json", 1),
        ("x", "text", 1),
    ]
    # Acked as printed: nothing is left, and an empty consume exits 1 after --wait.
    empty = bindingd_cli("call", "JOBS", "consume", "--wait", "1", cwd=tmp_path)
    assert (empty.returncode, empty.stdout) == (1, "")


def test_mistakes_and_refusals_are_clear(tmp_path: Path) -> None:
    write_project(tmp_path, CONFIG)
    bad = bindingd_cli("call", "JOBS", "send", "{nope", cwd=tmp_path)
    assert bad.returncode != 0 and "not valid JSON" in bad.stderr and "Traceback" not in bad.stderr
    late = bindingd_cli("call", "JOBS", "send", "1", "--delay", "50000", cwd=tmp_path)
    assert late.returncode != 0 and "43200" in late.stderr
    refused = bindingd_cli("call", "JOBS", "send", "1", "--env", "review", cwd=tmp_path)
    assert refused.returncode != 0 and "read-only" in refused.stderr
