"""`bindingd call BINDING OP [ARGS]`: one operation from the shell, through the Python client.

Each binding type has its own small argument parser; results print as text (a value) or as
JSON (anything structured), so the output pipes into jq.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from bindingd.cli import style

EXIT_NOT_FOUND = 1


class CallUsageError(Exception):
    """The operation or its arguments are wrong; the message says what is allowed.

    The message does not name the call (the command line prefixes "bindingd: call NAME OP: ");
    `usage` is the operation's usage line, shown once above the message when there is one.
    """

    def __init__(self, message: str, usage: str | None = None) -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """An operation's arguments: a mistake raises CallUsageError instead of printing and exiting,
    so the command line says it in its own one-line form (argparse's own form would repeat the
    prog: "bindingd call CACHE put: error: ...")."""

    def error(self, message: str) -> NoReturn:
        raise CallUsageError(message, usage=self.format_usage())

    def mistake(self, message: str) -> CallUsageError:
        return CallUsageError(message, usage=self.format_usage())


def _parser(prog: str) -> _Parser:
    return _Parser(prog=prog, add_help=True)


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    return parser.parse_args(args)


def _not_found(message: str) -> None:
    """A miss is said on stderr like every other message of the command (exit 1, as grep)."""
    print(f"bindingd: {message}", file=sys.stderr)


# C1 control characters (U+0080-U+009F): ensure_ascii=False leaves them raw, and a terminal may
# act on them (0x9B is CSI). They can only sit inside JSON strings, where \u escapes mean the same.
_C1 = re.compile("[\x80-\x9f]")


def json_text(value: Any, indent: int | None = None) -> str:
    """JSON as UTF-8 text (readable non-ASCII), with C1 control characters escaped."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _print_json(value: Any) -> None:
    print(json_text(value, indent=2))


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
            _not_found(f'key "{a.key}" not found in {name}')
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
            raise p.mistake(f"--metadata is not valid JSON ({e})") from None
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


def _object_json(obj: Any) -> dict[str, Any]:
    """An R2Object as JSON: datetimes as ISO text, digests as hex."""
    checksums = {
        k: getattr(obj.checksums, k).hex() for k in ("md5", "sha1", "sha256") if getattr(obj.checksums, k)
    }
    http = {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in obj.http_metadata.items()}
    shown = {
        "key": obj.key,
        "version": obj.version,
        "size": obj.size,
        "etag": obj.etag,
        "http_etag": obj.http_etag,
        "uploaded": obj.uploaded.isoformat(),
        "checksums": checksums,
        "http_metadata": http,
        "custom_metadata": obj.custom_metadata,
        "storage_class": obj.storage_class,
    }
    if obj.range is not None:
        shown["range"] = obj.range
    return shown


def _json_option(p: _Parser, name: str, text: str | None) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except ValueError as e:
        raise p.mistake(f"--{name} is not valid JSON ({e})") from None


def _objects(binding: Any, name: str, op: str, args: list[str]) -> int:
    prog = f"bindingd call {name} {op}"
    if op == "head":
        p = _parser(prog)
        p.add_argument("key")
        a = _parse(p, args)
        obj = binding.head(a.key)
        if obj is None:
            _not_found(f'object "{a.key}" not found in {name}')
            return EXIT_NOT_FOUND
        _print_json(_object_json(obj))
        return 0
    if op == "get":
        p = _parser(prog)
        p.add_argument("key")
        p.add_argument("-o", "--output", help="write the body to this file (default: stdout)")
        p.add_argument("--offset", type=int)
        p.add_argument("--length", type=int)
        p.add_argument("--suffix", type=int, help="the last N bytes")
        p.add_argument("--json", action="store_true", help="with -o: print the object's metadata")
        a = _parse(p, args)
        ranged = {
            k: v
            for k, v in (("offset", a.offset), ("length", a.length), ("suffix", a.suffix))
            if v is not None
        }
        obj = binding.get(a.key, range=ranged or None)
        if obj is None:
            _not_found(f'object "{a.key}" not found in {name}')
            return EXIT_NOT_FOUND
        if a.output is None:
            for chunk in obj:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        else:
            with open(a.output, "wb") as f:
                for chunk in obj:
                    f.write(chunk)
            if a.json:
                _print_json(_object_json(obj.object))
        return 0
    if op == "put":
        p = _parser(prog)
        p.add_argument("key")
        p.add_argument("file", help="the file to upload; - reads stdin")
        p.add_argument("--content-type")
        p.add_argument("--custom-metadata", help='JSON object, e.g. \'{"owner": "ann"}\'')
        p.add_argument("--sha256", help="hex digest to verify")
        p.add_argument("--json", action="store_true", help="print the stored object's metadata")
        a = _parse(p, args)
        custom = _json_option(p, "custom-metadata", a.custom_metadata)
        http = {"content_type": a.content_type} if a.content_type else None
        if a.file == "-":
            obj = binding.put(
                a.key, sys.stdin.buffer, http_metadata=http, custom_metadata=custom, sha256=a.sha256
            )
        else:
            try:
                f = open(a.file, "rb")  # noqa: SIM115 - closed below
            except OSError as e:
                raise CallUsageError(f"cannot read {a.file}: {e.strerror or e}") from None
            with f:
                obj = binding.put(a.key, f, http_metadata=http, custom_metadata=custom, sha256=a.sha256)
        # A write prints nothing on success, like cp (the same rule as kv put and queue send).
        if a.json:
            _print_json(_object_json(obj))
        return 0
    if op == "delete":
        p = _parser(prog)
        p.add_argument("keys", nargs="+")
        binding.delete(_parse(p, args).keys)
        return 0
    if op == "list":
        p = _parser(prog)
        p.add_argument("--prefix")
        p.add_argument("--delimiter")
        p.add_argument("--cursor")
        p.add_argument("--start-after")
        p.add_argument("--limit", type=int)
        p.add_argument("--include", action="append", choices=("http_metadata", "custom_metadata"))
        a = _parse(p, args)
        result = binding.list(
            prefix=a.prefix,
            delimiter=a.delimiter,
            cursor=a.cursor,
            start_after=a.start_after,
            limit=a.limit,
            include=a.include,
        )
        shown: dict[str, Any] = {
            "objects": [_object_json(o) for o in result.objects],
            "truncated": result.truncated,
            "delimited_prefixes": result.delimited_prefixes,
        }
        if result.cursor:
            shown["cursor"] = result.cursor
        _print_json(shown)
        return 0
    raise CallUsageError(f"unknown objects operation {op!r} (objects: head, get, put, delete, list)")


def _sql_param(text: str) -> Any:
    """A bound value from the shell: a JSON scalar (42, 1.5, null, true, "quoted") or else text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if value is None or isinstance(value, bool | int | float | str) else text


def _sql_json(value: Any) -> Any:
    return {"blob_hex": value.hex()} if isinstance(value, bytes) else value


def _sql_cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        shown = value[:32].hex()
        return f"x'{shown}'" if len(value) <= 32 else f"x'{shown}...' ({len(value)} bytes)"
    # The table shows control characters escaped (\n, \x1b: style.printable), so a backslash
    # of the value's own is doubled to tell them apart.
    return str(value).replace("\\", "\\\\")


def _sql_table(header: list[str], rows: list[list[Any]]) -> None:
    if not header:
        print(style.paint("no rows (the statement returns no columns)", style.DIM, sys.stdout))
        return
    style.box(header, [[_sql_cell(v) for v in row] for row in rows], sys.stdout, dim={"NULL"})
    count = f"{len(rows)} row" + ("" if len(rows) == 1 else "s")
    print(style.paint(count, style.DIM, sys.stdout))


def _sql(binding: Any, name: str, op: str, args: list[str]) -> int:
    prog = f"bindingd call {name} {op}"
    if op == "query":
        p = _parser(prog)
        p.add_argument("sql", help="one statement; - reads it from stdin")
        p.add_argument("params", nargs="*", help="bound values: JSON scalars (42, null, true) or text")
        p.add_argument("--raw", action="store_true", help="rows as arrays, the column names first")
        p.add_argument(
            "--json", action="store_true", help="JSON even on a terminal (it is the default in a pipe)"
        )
        a = _parse(p, args)
        statement = binding.prepare(sys.stdin.read() if a.sql == "-" else a.sql)
        statement = statement.bind(*(_sql_param(v) for v in a.params))
        if not (a.raw or a.json) and sys.stdout.isatty():
            # A person at a terminal reads a table, as `wrangler d1 execute` prints; a program
            # reading the pipe gets the JSON below.
            header, *rows = statement.raw(column_names=True)
            _sql_table([str(h) for h in header], rows)
            return 0
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
                raise p.mistake(f"the body is not valid JSON ({e}); use --content-type text") from None
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
            raise p.mistake(f"the messages are not valid JSON ({e})") from None
        if not isinstance(items, list):
            raise p.mistake('expected a JSON array of {"body": ...} objects')
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
            raise p.mistake("--max must be at least 1")
        count = _consume(binding, a)
        if not count:
            # Exit 1 as grep does when nothing matched, so `while bindingd call Q consume` ends.
            _not_found(f"no messages in {name} within {a.wait:g}s")
        return 0 if count else EXIT_NOT_FOUND
    raise CallUsageError(f"unknown queue operation {op!r} (queue: send, send-batch, consume)")


def _consume(binding: Any, a: argparse.Namespace) -> int:
    """Print each message as one JSON line; ack each batch once printed (unless --no-ack).
    Return how many were printed."""
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
                print(json_text(line), flush=True)
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
    return count


def _value(binding: Any, name: str, op: str, args: list[str]) -> int:
    if op != "get":
        raise CallUsageError(f"var and secret bindings have one operation: bindingd call {name} get")
    _parse(_parser(f"bindingd call {name} get"), args)  # --help, or a stray argument refused
    print(binding)
    return 0


OPERATIONS: dict[str, Callable[[Any, str, str, list[str]], int]] = {
    "kv": _kv,
    "objects": _objects,
    "sql": _sql,
    "queue": _queue,
    "var": _value,
    "secret": _value,
}


OPERATION_NAMES = {
    "kv": "get, get-with-metadata, put, delete, list",
    "objects": "head, get, put, delete, list",
    "sql": "query, exec",
    "queue": "send, send-batch, consume",
    "var": "get",
    "secret": "get",
}


def run_call(env: Any, name: str, op: str | None, args: list[str]) -> int:
    """Run one operation against `env` (a connected sync client env); return the exit code."""
    binding = env[name]  # BindingNotFound with the daemon's list of names
    binding_type = env._bindings[name].type
    operation = OPERATIONS.get(binding_type)
    if operation is None:
        raise CallUsageError(f"bindingd call does not support {binding_type} bindings yet")
    if op is None:
        raise CallUsageError(
            f"name an operation: bindingd call {name} OP [ARGS] "
            f"({binding_type}: {OPERATION_NAMES[binding_type]}; OP --help for its arguments)"
        )
    return operation(binding, name, op, args)
