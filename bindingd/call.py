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


def _queue(binding: Any, name: str, op: str, args: list[str]) -> int:
    prog = f"bindingd call {name} {op}"
    if op == "send":
        p = _parser(prog)
        p.add_argument("body", help="the message; JSON unless --content-type says otherwise; - reads stdin")
        p.add_argument("--content-type", choices=("json", "text", "bytes"), default="json")
        p.add_argument("--delay", type=int, help="delay_seconds (0-43200)")
        a = _parse(p, args)
        raw = sys.stdin.buffer.read() if a.body == "-" else os.fsencode(a.body)
        body: Any = raw
        if a.content_type == "json":
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise CallUsageError(
                    f"{prog}: the body is not valid JSON ({e}); use --content-type text"
                ) from None
        elif a.content_type == "text":
            body = raw.decode("utf-8", "replace")
        binding.send(body, content_type=a.content_type, delay_seconds=a.delay)
        return 0
    if op == "send-batch":
        p = _parser(prog)
        p.add_argument(
            "messages", help='a JSON array of {"body", "content_type", "delay_seconds"}; - reads stdin'
        )
        p.add_argument("--delay", type=int, help="delay_seconds of every message that sets none")
        a = _parse(p, args)
        try:
            items = json.loads(sys.stdin.read() if a.messages == "-" else a.messages)
        except ValueError as e:
            raise CallUsageError(f"{prog}: the messages are not valid JSON ({e})") from None
        if not isinstance(items, list):
            raise CallUsageError(f'{prog}: expected a JSON array of {{"body": ...}} objects')
        binding.send_batch(items, delay_seconds=a.delay)
        return 0
    if op == "consume":
        p = _parser(prog)
        p.add_argument("--max", type=int, default=10, help="stop after this many messages (default 10)")
        p.add_argument("--wait", type=float, default=5.0, help="stop after this many seconds (default 5)")
        p.add_argument("--visibility-timeout", type=float, help="seconds each message is leased (default 30)")
        p.add_argument("--no-ack", action="store_true", help="leave the messages to be delivered again")
        a = _parse(p, args)
        if a.max < 1:
            raise CallUsageError(f"{prog}: --max must be at least 1")
        return _consume(binding, a)
    raise CallUsageError(f"unknown queue operation {op!r} (queue: send, send-batch, consume)")


def _consume(binding: Any, a: argparse.Namespace) -> int:
    """Print each message as one JSON line; ack each batch once printed (unless --no-ack)."""
    from bindingd_client import BindingError

    count = 0
    stream = binding.consume(
        batch_size=min(a.max, 100), max_wait=0, visibility_timeout=a.visibility_timeout, timeout=a.wait
    )
    try:
        for batch in stream:
            for m in batch.messages[: a.max - count]:
                body = m.body.decode("utf-8", "replace") if isinstance(m.body, bytes) else m.body
                line = {
                    "id": m.id,
                    "timestamp": m.timestamp.isoformat(),
                    "attempts": m.attempts,
                    "content_type": m.content_type,
                    "body": body,
                }
                print(json.dumps(line, ensure_ascii=False), flush=True)
            taken = batch.messages[: a.max - count]
            if not a.no_ack:
                for m in taken:
                    m.ack()
            count += len(taken)
            if count >= a.max:
                break
    except BindingError as e:
        if e.code != "DEADLINE_EXCEEDED" or e.binding is not None:  # not the end of --wait
            raise
    finally:
        stream.close()
    return 0 if count else EXIT_NOT_FOUND


def _value(binding: Any, name: str, op: str, args: list[str]) -> int:
    if op != "get" or args:
        raise CallUsageError(f"var and secret bindings have one operation: bindingd call {name} get")
    print(binding)
    return 0


OPERATIONS: dict[str, Callable[[Any, str, str, list[str]], int]] = {
    "kv": _kv,
    "queue": _queue,
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
