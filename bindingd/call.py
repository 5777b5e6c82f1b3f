"""`bindingd call BINDING OP [ARGS]`: one operation from the shell, through the Python client.

Each binding type has its own small argument parser; results print as text (a value) or as
JSON (anything structured), so the output pipes into jq.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_NOT_FOUND = 1


class CallUsageError(Exception):
    """The operation or its arguments are wrong; the message says what is allowed."""


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, exit_on_error=False, add_help=True)
    return parser


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(args)
    except argparse.ArgumentError as e:
        raise CallUsageError(f"{parser.prog}: {e}") from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _kv(binding: Any, name: str, op: str, args: list[str]) -> int:
    prog = f"bindingd call {name} {op}"
    if op in ("get", "get-with-metadata"):
        p = _parser(prog)
        p.add_argument("key")
        p.add_argument("--type", choices=("text", "json", "bytes"), default="text")
        a = _parse(p, args)
        try:
            if op == "get":
                value = binding.get(a.key, type=a.type)
                metadata = None
            else:
                result = binding.get_with_metadata(a.key, type=a.type)
                value, metadata = result.value, result.metadata
        except json.JSONDecodeError:
            raise CallUsageError(f'the value of "{a.key}" is not JSON; read it with --type text') from None
        if value is None:
            print(f'key "{a.key}" not found in {name}', file=sys.stderr)
            return EXIT_NOT_FOUND
        if op == "get-with-metadata":
            shown = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            _print_json({"value": shown, "metadata": metadata})
        elif isinstance(value, bytes):
            sys.stdout.buffer.write(value)
        elif a.type == "json":
            _print_json(value)
        else:
            print(value)
        return 0
    if op == "put":
        p = _parser(prog)
        p.add_argument("key")
        p.add_argument("value", help="the value; - reads it from stdin")
        p.add_argument("--ttl", type=int, help="expiration_ttl in seconds (>= 60)")
        p.add_argument("--expiration", type=int, help="expiry time in seconds since the epoch")
        p.add_argument("--metadata", help="JSON metadata")
        a = _parse(p, args)
        # The argument's own bytes, so a value that is not UTF-8 is stored as given.
        value = sys.stdin.buffer.read() if a.value == "-" else os.fsencode(a.value)
        try:
            metadata = json.loads(a.metadata) if a.metadata is not None else None
        except ValueError as e:
            raise CallUsageError(f"{prog}: --metadata is not valid JSON ({e})") from None
        binding.put(a.key, value, expiration=a.expiration, expiration_ttl=a.ttl, metadata=metadata)
        return 0
    if op == "delete":
        p = _parser(prog)
        p.add_argument("key")
        binding.delete(_parse(p, args).key)
        return 0
    if op == "list":
        p = _parser(prog)
        p.add_argument("--prefix")
        p.add_argument("--limit", type=int)
        p.add_argument("--cursor")
        a = _parse(p, args)
        result = binding.list(prefix=a.prefix, limit=a.limit, cursor=a.cursor)
        _print_json(
            {
                "keys": [
                    {
                        k: v
                        for k, v in (
                            ("name", key.name),
                            ("expiration", key.expiration),
                            ("metadata", key.metadata),
                        )
                        if v is not None
                    }
                    for key in result.keys
                ],
                "list_complete": result.list_complete,
                **({"cursor": result.cursor} if result.cursor else {}),
            }
        )
        return 0
    raise CallUsageError(f"unknown kv operation {op!r} (kv: get, get-with-metadata, put, delete, list)")


def _sql_param(text: str) -> Any:
    """A bound value from the shell: a JSON scalar (42, 1.5, null, true, "quoted") or else text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if value is None or isinstance(value, bool | int | float | str) else text


def _sql_json(value: Any) -> Any:
    return {"blob_hex": value.hex()} if isinstance(value, bytes) else value


def _sql(binding: Any, name: str, op: str, args: list[str]) -> int:
    prog = f"bindingd call {name} {op}"
    if op == "query":
        p = _parser(prog)
        p.add_argument("sql", help="one statement; - reads it from stdin")
        p.add_argument("params", nargs="*", help="bound values: JSON scalars (42, null, true) or text")
        p.add_argument("--raw", action="store_true", help="rows as arrays, the column names first")
        a = _parse(p, args)
        statement = binding.prepare(sys.stdin.read() if a.sql == "-" else a.sql)
        statement = statement.bind(*(_sql_param(v) for v in a.params))
        if a.raw:
            _print_json([[_sql_json(v) for v in row] for row in statement.raw(column_names=True)])
            return 0
        result = statement.all()
        rows = [{k: _sql_json(v) for k, v in row.items()} for row in result.results]
        _print_json({"results": rows, "success": result.success, "meta": result.meta})
        return 0
    if op == "exec":
        p = _parser(prog)
        p.add_argument("sql", help="a script of statements separated by ; (- reads it from stdin)")
        a = _parse(p, args)
        done = binding.exec(sys.stdin.read() if a.sql == "-" else a.sql)
        _print_json({"count": done.count, "duration": done.duration})
        return 0
    raise CallUsageError(f"unknown sql operation {op!r} (sql: query, exec)")


def _value(binding: Any, name: str, op: str, args: list[str]) -> int:
    if op != "get" or args:
        raise CallUsageError(f"var and secret bindings have one operation: bindingd call {name} get")
    print(binding)
    return 0


OPERATIONS: dict[str, Callable[[Any, str, str, list[str]], int]] = {
    "kv": _kv,
    "sql": _sql,
    "var": _value,
    "secret": _value,
}


def run_call(env: Any, name: str, op: str, args: list[str]) -> int:
    """Run one operation against `env` (a connected sync client env); return the exit code."""
    binding = env[name]  # BindingNotFound with the daemon's list of names
    binding_type = env._bindings[name].type
    operation = OPERATIONS.get(binding_type)
    if operation is None:
        raise CallUsageError(f"bindingd call does not support {binding_type} bindings yet")
    return operation(binding, name, op, args)
