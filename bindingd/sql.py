"""The SQL rules shared by every provider (no gRPC): placeholders, script splitting, values.

D1 is SQLite, so statements are written with SQLite's positional parameters: `?` (the next
number after the largest used so far) and `?NNN` (an explicit 1-based number). PostgreSQL wants
`$N` and the MySQL driver wants `%s`, so those providers translate a statement here first. The
scanner knows each dialect's string literals, quoted identifiers, comments and (PostgreSQL)
dollar-quoted strings, and never touches a `?` or `;` inside one of them.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from bindingd.errors import BindingdError, Reason

Dialect = Literal["sqlite", "postgres", "mysql"]
# What a value is once it leaves a provider: the types the contract can carry.
Value = None | bool | int | float | str | bytes

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The largest `?NNN` SQLite accepts by default (SQLITE_MAX_VARIABLE_NUMBER).
MAX_PARAM_NUMBER = 32766
# Rows per streamed page: big enough to amortise a message, small enough to keep memory flat.
PAGE_ROWS = 500
PAGE_BYTES = 1024 * 1024
# Statements up to this long have their translation cached.
TRANSLATED_CACHE_CHARS = 4096
DEFAULT_TIMEOUT_S = 30.0

_IDENT_CHAR = re.compile(r"[A-Za-z0-9_]")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_MYSQL_EXECUTABLE_COMMENT = re.compile(r"/\*M?![0-9]*")


class StopReading(Exception):
    """Thrown into a provider's query at a page when the caller has read enough (`first()` of
    a large result): the statement's work is kept (committed), only its other rows are skipped;
    D1 runs a statement whole whatever part of its result is read. A provider answers with the
    meta of what it read."""


def sql_error(message: str) -> BindingdError:
    return BindingdError(Reason.SQL_ERROR, message)


@dataclass(frozen=True)
class Token:
    """A stretch of a statement: `code` (plain SQL), `param` (a `?`/`?NNN`), `semicolon`, or
    `quoted` (a literal, quoted identifier or comment, kept verbatim)."""

    kind: Literal["code", "param", "semicolon", "quoted"]
    text: str


def tokens(sql: str, dialect: Dialect) -> Iterator[Token]:
    """Split `sql` into tokens, so callers rewrite parameters and split scripts safely."""
    i, n, start = 0, len(sql), 0

    def code_until(j: int) -> Iterator[Token]:
        if j > start:
            yield Token("code", sql[start:j])

    while i < n:
        c = sql[i]
        end: int | None = None
        if c == "'":
            backslash = dialect == "mysql" or (
                dialect == "postgres" and i > 0 and sql[i - 1] in "eE" and not _ident_before(sql, i - 1)
            )
            end = _quoted_end(sql, i, "'", backslash)
        elif c == '"':
            end = _quoted_end(sql, i, '"', dialect == "mysql")
        elif c == "`" and dialect != "postgres":
            end = _quoted_end(sql, i, "`", False)
        elif c == "[" and dialect == "sqlite":
            close = sql.find("]", i + 1)
            end = n if close < 0 else close + 1
        elif (c == "-" and _dash_comment(sql, i, dialect)) or (c == "#" and dialect == "mysql"):
            newline = sql.find("\n", i)
            end = n if newline < 0 else newline + 1
        elif c == "/" and dialect == "mysql" and (match := _MYSQL_EXECUTABLE_COMMENT.match(sql, i)):
            # `/*! ... */` and `/*M! ... */` are code to MySQL/MariaDB, not comments: what is in
            # them is scanned like the rest (its `?`, `;` and literals count); the `*/` is code.
            yield from code_until(i)
            yield Token("code", match.group(0))
            i = start = match.end()
            continue
        elif c == "/" and sql.startswith("/*", i):
            end = _block_comment_end(sql, i, nested=dialect == "postgres")
        elif c == "$" and dialect == "postgres" and not _ident_before(sql, i):
            match = _DOLLAR_TAG.match(sql, i)
            if match:
                close = sql.find(match.group(0), match.end())
                end = n if close < 0 else close + len(match.group(0))
        if end is not None:
            yield from code_until(i)
            yield Token("quoted", sql[i:end])
            i = start = end
            continue
        if c == "?":
            j = i + 1
            while j < n and sql[j].isdigit():
                j += 1
            yield from code_until(i)
            yield Token("param", sql[i:j])
            i = start = j
            continue
        if c == ";":
            yield from code_until(i)
            yield Token("semicolon", ";")
            i = start = i + 1
            continue
        i += 1
    yield from code_until(n)


def _dash_comment(sql: str, i: int, dialect: Dialect) -> bool:
    """Whether a `--` comment starts at `i`. MySQL and MariaDB start one only before a space or
    control character (or at the end): `1--1` is `1 - -1`, code the server runs."""
    if not sql.startswith("--", i):
        return False
    if dialect != "mysql":
        return True
    return i + 2 >= len(sql) or ord(sql[i + 2]) <= 32 or ord(sql[i + 2]) == 127


def _ident_before(sql: str, i: int) -> bool:
    return i > 0 and bool(_IDENT_CHAR.match(sql[i - 1]))


def _quoted_end(sql: str, i: int, quote: str, backslash: bool) -> int:
    """The index after the closing quote (a doubled quote escapes it), or len(sql)."""
    j, n = i + 1, len(sql)
    while j < n:
        c = sql[j]
        if backslash and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return n


def _block_comment_end(sql: str, i: int, *, nested: bool) -> int:
    depth, j, n = 1, i + 2, len(sql)
    while j < n:
        if nested and sql.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif sql.startswith("*/", j):
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    return n


def parameter_numbers(sql: str, dialect: Dialect) -> list[int]:
    """The 1-based parameter number of each placeholder, in order, numbered as SQLite does."""
    numbers: list[int] = []
    largest = 0
    for token in tokens(sql, dialect):
        if token.kind != "param":
            continue
        if len(token.text) > 1:
            number = int(token.text[1:])
            if not 1 <= number <= MAX_PARAM_NUMBER:
                raise sql_error(f"parameter {token.text} is out of range: use ?1 to ?{MAX_PARAM_NUMBER}")
        else:
            number = largest + 1
        largest = max(largest, number)
        numbers.append(number)
    return numbers


def translate(sql: str, dialect: Dialect, params: list[Value]) -> tuple[str, list[Value]]:
    """`sql` with its `?`/`?NNN` placeholders in the backend's style, and the values to send.

    PostgreSQL gets `$N` (a number may repeat); MySQL's driver gets `%s` per occurrence, so
    values are repeated and reordered to match, and every other `%` is doubled because the
    driver formats the statement with Python's `%`.
    """
    if len(sql) <= TRANSLATED_CACHE_CHARS:
        numbers, out = _translated(sql, dialect)
    else:
        numbers, out = _translate(sql, dialect)
    needed = max(numbers, default=0)
    if needed != len(params):
        raise sql_error(
            f"the statement has {needed} parameter{'s' if needed != 1 else ''} but "
            f"{len(params)} value{'s were' if len(params) != 1 else ' was'} bound"
        )
    if dialect == "sqlite":
        return sql, params
    if dialect == "postgres":
        return out, params
    return out, [params[number - 1] for number in numbers]


def _translate(sql: str, dialect: Dialect) -> tuple[tuple[int, ...], str]:
    """The placeholder numbers of `sql`, in order, and `sql` in the backend's style."""
    numbers = tuple(parameter_numbers(sql, dialect))
    if dialect == "sqlite":
        return numbers, sql
    out: list[str] = []
    it = iter(numbers)
    for token in tokens(sql, dialect):
        if token.kind == "param":
            out.append(f"${next(it)}" if dialect == "postgres" else "%s")
        elif dialect == "mysql":
            out.append(token.text.replace("%", "%%"))
        else:
            out.append(token.text)
    return numbers, "".join(out)


# An app runs the same few statements over and over: their translation is kept (a
# tokenizer pass costs about as much as a small query's whole trip through a provider).
_translated = functools.lru_cache(maxsize=1024)(_translate)


def split_script(sql: str, dialect: Dialect) -> list[str]:
    """The statements of a script, split at `;` outside literals and comments; statements that
    hold nothing but whitespace and comments are dropped."""
    statements: list[str] = []
    current: list[str] = []
    meaningful = False
    for token in tokens(sql, dialect):
        if token.kind == "semicolon":
            if meaningful:
                statements.append("".join(current).strip())
            current, meaningful = [], False
            continue
        current.append(token.text)
        if (
            (token.kind == "code" and token.text.strip())
            or token.kind == "param"
            or (token.kind == "quoted" and not token.text.startswith(("--", "/*", "#")))
        ):
            meaningful = True
    if meaningful:
        statements.append("".join(current).strip())
    return statements


def check_statement(sql: str) -> None:
    if not sql.strip():
        raise sql_error("the statement is empty: give one SQL statement")


def normalize(value: object) -> Value:
    """A backend's value as one the contract carries (the mapping the README documents):
    exact numbers and big integers as text, times as ISO 8601 text, UUIDs as text, JSON
    documents and arrays as JSON text."""
    if value is None or isinstance(value, bool | float | str | bytes):
        return value
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else str(value)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple | dict):
        return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, set | frozenset):  # a MySQL SET column
        return ",".join(sorted(str(v) for v in value))
    return str(value)


def _jsonable(value: object) -> object:
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return normalize(value)


def check_timeout(value: object) -> float:
    return DEFAULT_TIMEOUT_S if value is None else float(value)  # type: ignore[arg-type]


def batch_error(index: int, err: BindingdError) -> BindingdError:
    """A statement's failure inside a batch or script, naming its index (from 0)."""
    return BindingdError(
        err.reason, f"statement {index} failed, nothing was applied: {err.message}", backend=err.backend
    )
