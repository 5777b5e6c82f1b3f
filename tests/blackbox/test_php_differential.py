"""The Node client's differential scenarios re-run through the PHP client (issue 16).

clients/php/tests/differential/scenarios.php holds the scenarios of
clients/node/test/differential/scenarios.mjs in PHP, with the same names, keys and calls (what
only JavaScript can pass is left out). workerd's own answers come from running the JavaScript
originals in Miniflare (clients/node/test/differential/record.mjs); the PHP answers from a real
`bindingd serve` on the local config, through the HTTP/JSON listener. Each answer the PHP side
has is compared with workerd's answer to the same key.

The rules of the comparison, each for a reason the PHP client states in its own API:
- A failure is compared as a failure: PHP's exceptions are the error table's classes
  (Bindingd\\InvalidArgument, ...) and PHP's TypeError / ValueError, not JavaScript's TypeError /
  RangeError / Error. What a message must say (`matches`) is compared.
- PHP has one empty array for `{}` and `[]`.
- KV's cacheStatus (also in a list of field names) and R2's checksums / bodyUsed are not in the
  PHP client's answers.
- R2's storageClass is "" in Miniflare and "Standard" in R2 and bindingd (as in the Node suite).
- D1's rows_read / rows_written are counted differently by workerd's SQLite VM (as in the Node
  suite): compared as non-negative integers.
What still differs is listed in KNOWN_DIFFERENCES with why, and each listed difference must
still be there as listed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import DaemonProcess, write_project

ROOT = Path(__file__).resolve().parents[2]
PHP_DIFFERENTIAL = ROOT / "clients" / "php" / "tests" / "differential"
NODE_CLIENT = ROOT / "clients" / "node"
CONFIG = """\
version: 1
env: dev
bindings:
  CACHE: { type: kv }
  ASSETS_BUCKET: { type: objects }
  APP_DB: { type: sql }
"""

Json = Any

THREW = {"threw": "<threw>"}
UNDEFINED = {"$undefined": True}


def _as_number(value: str) -> Json:
    return {"$arrayBuffer": {"text": value}}


# scenario -> [(path in its answer, what workerd answers there, what the PHP client answers,
# why)]. Each is checked on both sides, then left out of the comparison. The first group is the
# Node client's own (clients/node/test/differential.test.mjs): bindingd's choices, whatever
# the client; the rest are PHP's.
KNOWN_DIFFERENCES: dict[str, list[tuple[tuple[str, ...], Json, Json, str]]] = {
    "kv/listPaging": [
        (
            ("badCursor",),
            {"ok": []},
            THREW,
            "a cursor the store did not make: Miniflare answers an empty page, bindingd InvalidArgument",
        ),
    ],
    "r2/keys": [
        (
            (name,),
            None,
            THREW,
            "an empty key: Miniflare takes it, bindingd refuses (R2 keys are 1-1024 bytes)",
        )
        for name in ("emptyPut", "emptyGet", "emptyHead")
    ],
    "r2/list": [
        (
            ("badCursor",),
            {"ok": {"keys": [], "truncated": False, "hasCursor": False, "delimitedPrefixes": []}},
            THREW,
            "a cursor the store did not make: Miniflare answers an empty page, bindingd InvalidArgument",
        ),
    ],
    "r2/deleteMany": [
        (
            ("deleteOverThousand",),
            {"ok": UNDEFINED},
            THREW,
            "1001 keys: Miniflare deletes them, bindingd refuses (R2's limit is 1000)",
        ),
    ],
    "d1/valueTypes": [
        *(
            (
                (name, "ok", "storage", "value"),
                "real",
                "integer",
                "D1 binds every JS number and boolean as REAL; PHP's int and bool bind as INTEGER",
            )
            for name in ("integer", "negative", "bigSafe", "booleanTrue", "booleanFalse")
        ),
        (
            ("boundDivision",),
            {"ok": {"half": 2.5, "storage": "real"}},
            {"ok": {"half": 2, "storage": "integer"}},
            "the same in arithmetic",
        ),
        # PHP's own: its ints are 64-bit and its blobs are strings of bytes.
        (
            ("literals", "ok", "blob"),
            {"type": "array", "value": [0, 255]},
            {"type": "string", "value": "\u0000\ufffd"},
            "a BLOB is an array of numbers in D1, a binary string in PHP (shown here as JSON text)",
        ),
        (
            ("literals", "ok", "big"),
            {"type": "number", "value": 9007199254740992},
            {"type": "number", "value": 9007199254740993},
            "an INTEGER beyond 2**53: a rounded double in JavaScript, exact in PHP",
        ),
        (
            ("literals", "ok", "min64"),
            {"type": "number", "value": -9223372036854776000},
            {"type": "number", "value": -9223372036854775808},
            "the same for -2**63",
        ),
        (
            ("literals", "ok", "inf"),
            {"type": "null", "value": None},
            {"type": "number", "value": {"$number": "Infinity"}},
            "SQLite's Inf: null in D1's JSON, INF in PHP",
        ),
    ],
    "d1/meta": [
        (
            (name, "ok", "meta", "changed_db"),
            True,
            False,
            "DDL: D1 reports changed_db true, bindingd false (it counts changed rows)",
        )
        for name in ("createTable", "dropTable")
    ],
    "d1/exec": [
        (
            ("multiLineStatement",),
            THREW,
            {"ok": {"count": 1, "duration": "<duration>"}},
            "a statement across lines: D1 runs each line alone and fails, bindingd runs the statement",
        ),
    ],
    "d1/errors": [
        (
            ("namedParameters",),
            {"ok": {"v": "x"}},
            THREW,
            ":name parameters: D1 binds them by position, bindingd refuses",
        ),
        (
            ("onlyComment",),
            THREW,
            None,
            "a statement that is only a comment: D1 refuses it, bindingd runs it (no rows)",
        ),
        (
            ("twoStatements",),
            None,
            THREW,
            "prepare() of two statements: D1 runs both and answers the last, bindingd refuses",
        ),
    ],
    # PHP's own.
    "kv/writeValueKinds": [
        (
            (name,),
            {"put": {"ok": UNDEFINED}, "read": {"ok": _as_number(text)}},
            {"put": THREW, "read": {"ok": None}},
            "a KV value is a string or a stream in PHP (TypeError: json_encode it first); "
            "workerd stores a number, null or boolean as its text",
        )
        for name, text in (("number", "42"), ("nullValue", "null"), ("booleanValue", "true"))
    ],
    "r2/unusualText": [
        (
            ("bomText",),
            {"ok": "{}"},
            {"ok": "\ufeff{}"},
            "PHP strings are bytes: text() is the stored bytes, a byte order mark too "
            "(json() skips it, as R2's does)",
        ),
    ],
}


def _php_ready() -> bool:
    if shutil.which("php") is None or shutil.which("node") is None:
        return False
    modules = subprocess.run(["php", "-m"], capture_output=True, text=True).stdout.split()
    return "curl" in modules and "json" in modules and (NODE_CLIENT / "node_modules" / "miniflare").is_dir()


pytestmark = pytest.mark.skipif(
    not _php_ready(), reason="php-cli with curl, node and the Node client's packages are needed"
)


def _php_ids() -> list[str]:
    if not _php_ready():
        return []
    run = subprocess.run(
        ["php", str(PHP_DIFFERENTIAL / "run.php"), "--list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return run.stdout.split()


IDS = _php_ids()


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Json], dict[str, Json]]:
    """workerd's answers and the PHP client's, to every PHP scenario."""
    work = tmp_path_factory.mktemp("php-differential")
    recorded = work / "workerd.json"
    subprocess.run(
        ["node", "test/differential/record.mjs", str(recorded), *IDS],
        cwd=NODE_CLIENT,
        check=True,
        timeout=300,
        capture_output=True,
    )
    project = work / "project"
    project.mkdir()
    write_project(project, CONFIG)
    daemon = DaemonProcess(project).start()
    try:
        env = {**os.environ, "BINDINGD_ENDPOINT": daemon.endpoint}
        env.pop("BINDINGD_TOKEN", None)
        run = subprocess.run(
            ["php", str(PHP_DIFFERENTIAL / "run.php"), *IDS],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + daemon.logs()[-3000:]
        php = json.loads(run.stdout)
    finally:
        assert daemon.stop() == 0
    return json.loads(recorded.read_text()), php


def _relaxed(node: Json, side: str) -> Json:
    """One side's answer with the comparison's rules applied (the module's docstring)."""
    if isinstance(node, list):
        return [_relaxed(item, side) for item in node]
    if not isinstance(node, dict):
        return node
    if "threw" in node and set(node) <= {"threw", "matches"}:
        return {**node, "threw": "<threw>"}
    out: dict[str, Json] = {}
    for key, value in node.items():
        if key == "cacheStatus" or (
            node.get("$class") in ("R2Object", "R2ObjectBody") and key in ("checksums", "bodyUsed")
        ):
            continue
        if key == "fields" and isinstance(value, list):
            value = [field for field in value if field != "cacheStatus"]
        out[key] = _relaxed(value, side)
    if out.get("$class") in ("R2Object", "R2ObjectBody"):
        expected = "" if side == "workerd" else "Standard"
        assert out.get("storageClass") == expected, f"{side}: storageClass of {out.get('key')}"
        out["storageClass"] = "<storageClass>"
    if out.get("served_by") == "<served_by>":
        for field in ("rows_read", "rows_written"):
            if field in out:
                assert isinstance(out[field], int) and out[field] >= 0, (
                    f"{side}: meta.{field} is {out[field]}"
                )
                out[field] = "<counted>"
    return out if out else []


@pytest.mark.parametrize("scenario", IDS)
def test_php_answers_as_workerd(scenario: str, answers: tuple[dict[str, Json], dict[str, Json]]) -> None:
    workerd_all, php_all = answers
    workerd, php = workerd_all[scenario], php_all[scenario]
    assert "failed" not in workerd, workerd.get("messages")
    assert "failed" not in php, "\n".join(php.get("messages", []))
    theirs, ours = _relaxed(workerd["result"], "workerd"), _relaxed(php["result"], "php")
    for path, expected_workerd, expected_php, why in KNOWN_DIFFERENCES.get(scenario, []):
        where = ".".join(path)
        for side, answer, expected in (("workerd", theirs, expected_workerd), ("PHP", ours, expected_php)):
            parent = answer
            for step in path[:-1]:
                parent = parent[step]
            # None: an answer too long to list, which must still differ from the other side's.
            assert expected is None or parent[path[-1]] == expected, (
                f"{scenario}.{where}: {side} no longer answers as listed ({why}): "
                f"{json.dumps(parent[path[-1]])}"
            )
            answer_at = parent.pop(path[-1])
            if side == "workerd":
                workerd_at = answer_at
        assert answer_at != workerd_at, (
            f"{scenario}.{where} no longer differs; take it off KNOWN_DIFFERENCES ({why})"
        )
    mismatches = []
    for key, answer in ours.items():
        assert key in theirs, f"{scenario}: the PHP scenario has a key {key!r} the JavaScript one does not"
        if answer != theirs[key]:
            mismatches.append(
                f"{key}:\n  workerd: {json.dumps(theirs[key])}\n  php:     {json.dumps(answer)}"
            )
    assert not mismatches, (
        f"{scenario}: {len(mismatches)} answers differ\n"
        + "\n".join(mismatches)
        + "\nerrors caught in workerd:\n  "
        + "\n  ".join(workerd.get("messages", []))
        + "\nerrors caught through PHP:\n  "
        + "\n  ".join(php.get("messages", []))
    )
