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
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, Protocol, runtime_checkable

from bindingd.errors import BindingdError, Reason
from bindingd.providers.base import Provider

Dialect = Literal["sqlite", "postgres", "mysql"]
# What a value is once it leaves a provider: the types the contract can carry.
Value = None | bool | int | float | str | bytes

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The largest `?NNN` SQLite accepts by default (SQLITE_MAX_VARIABLE_NUMBER).


@functools.cache
def _pg_parser() -> ModuleType:
    """pglast's parser (PostgreSQL's own, libpg_query), imported on first use: a daemon with no
    postgres binding never loads it (it is most of this module's import time)."""
    from pglast import parser

    return parser


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
        elif c == "$" and dialect == "postgres" and not (i > 0 and _pg_ident_char(sql[i - 1])):
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


def _pg_ident_char(c: str) -> bool:
    """Whether PostgreSQL's lexer reads `c` as part of an identifier (or `$n`) it continues:
    `$` is one, so the `$$` in `a$$$` is no dollar quote."""
    return c.isalnum() or c in "_$" or ord(c) >= 0x80


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
    at, placed = 0, []  # where each `$N` starts in the translation (PostgreSQL)
    for token in tokens(sql, dialect):
        if token.kind == "param":
            text = f"${next(it)}" if dialect == "postgres" else "%s"
            placed.append(at)
        elif dialect == "mysql":
            text = token.text.replace("%", "%%")
        else:
            text = token.text
        out.append(text)
        at += len(text)
    translated = "".join(out)
    if dialect == "postgres":
        _check_postgres_reading(translated, placed)
    return numbers, translated


# What PostgreSQL's lexer calls a literal, a quoted identifier, a name or a comment: a `?` in
# one of those is text, anywhere else it is (part of) an operator.
_PG_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})
_PG_TEXT_TOKENS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST", "IDENT", "UIDENT", *_PG_COMMENTS})


def _check_postgres_reading(translated: str, placed: list[int]) -> None:
    """Refuse a translation PostgreSQL would read differently from the hand scanner above: its
    own lexer (libpg_query, through pglast) must find a parameter exactly where a `$N` was put
    and nowhere else, and no `?` left outside literals, names and comments. A scanner that
    misreads a quote (`a$$$` is a name, not a dollar quote) fails closed instead of sending a
    statement whose placeholders sit elsewhere than the caller meant."""
    try:
        scanned = _pg_parser().scan(translated)
    except _pg_parser().ParseError as e:
        raise sql_error(f"PostgreSQL cannot read the statement: {e}") from None
    found = [t.start for t in scanned if t.name == "PARAM"]
    stray = [
        t.start for t in scanned if t.name not in _PG_TEXT_TOKENS and "?" in translated[t.start : t.end + 1]
    ]
    if found != placed or stray:
        raise sql_error(
            "PostgreSQL reads the statement's quotes, comments or parameters differently from "
            "bindingd's placeholder scanner, so it was not run: write parameters as ? or ?NNN "
            "(not $N), and quote names and strings plainly ('...', \"...\", $$...$$)"
        )


# An app runs the same few statements over and over: their translation is kept (a
# tokenizer pass costs about as much as a small query's whole trip through a provider).
_translated = functools.lru_cache(maxsize=1024)(_translate)


def split_script(sql: str, dialect: Dialect) -> list[str]:
    """The statements of a script, split at `;` outside literals and comments; statements that
    hold nothing but whitespace and comments are dropped."""
    if dialect == "postgres":
        return _split_postgres(sql)
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
    if dialect == "sqlite":
        return _whole_sqlite_statements(statements)
    return statements


def _whole_sqlite_statements(pieces: list[str]) -> list[str]:
    """`pieces` joined again where SQLite's own `complete_statement` says a `;` did not end the
    statement: those inside a `CREATE TRIGGER ... BEGIN ...; END` body. An unfinished last piece
    is kept as it is, for SQLite to name what is missing."""
    statements: list[str] = []
    pending = ""
    for piece in pieces:
        pending = f"{pending};\n{piece}" if pending else piece
        if sqlite3.complete_statement(f"{pending};"):
            statements.append(pending)
            pending = ""
    if pending:
        statements.append(pending)
    return statements


def _split_postgres(sql: str) -> list[str]:
    """A PostgreSQL script split by PostgreSQL's own parser (libpg_query, through pglast): it
    knows every quote and comment as the server does, and keeps a `BEGIN ATOMIC ... END` body
    whole. A script the grammar refuses (a newer server's syntax, or a plain mistake the server
    will name) is split at the `;` tokens of the same lexer. The provider sends each statement
    on its own in the extended protocol, where the server refuses more than one command, so a
    wrong split can fail a script but never run something it did not see."""
    try:
        return [s for s in _pg_parser().split(sql) if s.strip()]
    except _pg_parser().ParseError:
        pass
    try:
        scanned = _pg_parser().scan(sql)
    except _pg_parser().ParseError as e:
        raise sql_error(f"PostgreSQL cannot read the script: {e}") from None
    statements: list[str] = []
    start, meaningful = 0, False
    for token in scanned:
        if token.name == "ASCII_59":  # `;`
            if meaningful:
                statements.append(sql[start : token.start].strip())
            start, meaningful = token.end + 1, False
        elif token.name not in _PG_COMMENTS:
            meaningful = True
    if meaningful:
        statements.append(sql[start:].strip())
    return statements


@dataclass(frozen=True)
class Script:
    """A script for `exec()`: its statements, in order, and the count D1 reports for it."""

    statements: list[str]
    count: int


# Words a statement starts with: a script whose every line starts with one is read as D1 reads
# every script, one line at a time. Left out: words that more often go on a statement from the
# line before (VALUES, SET, DO, END), so that `INSERT INTO t (a)` + newline + `VALUES (1)` keeps
# working as one statement here (D1 would refuse it).
_STATEMENT_WORDS = frozenset(
    [
        "alter",
        "analyze",
        "attach",
        "begin",
        "call",
        "commit",
        "copy",
        "create",
        "delete",
        "detach",
        "drop",
        "explain",
        "grant",
        "insert",
        "lock",
        "merge",
        "pragma",
        "reindex",
        "release",
        "replace",
        "revoke",
        "rollback",
        "savepoint",
        "select",
        "show",
        "truncate",
        "update",
        "vacuum",
        "with",
    ]
)
_FIRST_WORD = re.compile(r"\s*(?:/\*.*?\*/\s*)*([A-Za-z]+)", re.DOTALL)


def split_exec(sql: str, dialect: Dialect) -> Script:
    """The statements of an `exec()` script and the count D1 would report.

    D1 runs a script line by line (each line may hold several statements; its count is the
    number of lines), so statements on their own lines need no `;`. When every line that holds
    SQL starts with a statement's first word, the script is split that way, with D1's count.
    Otherwise the script holds statements that span lines, which D1 cannot run: it is split at
    `;` as a whole (count: the statements), which README lists among the differences. Line
    breaks inside literals and comments are not line breaks; a script the scanner cannot read
    is refused (SqlError) by `split_script`, never guessed at."""
    lines = _script_lines(sql, dialect)
    if lines is not None:
        per_line = [split_script(line, dialect) for line in lines]
        held = [(line, found) for line, found in zip(lines, per_line, strict=True) if found]
        if len(held) > 1 and all(_whole_line(line, dialect) for line, _ in held):
            return Script([s for _, found in held for s in found], len(held))
    statements = split_script(sql, dialect)
    if lines is not None and len(statements) > 1 and sum(1 for line in lines if line.strip()) == 1:
        return Script(statements, 1)  # several statements on one line: one line to D1
    return Script(statements, len(statements))


def _whole_line(line: str, dialect: Dialect) -> bool:
    """Whether `line` starts a statement and (SQLite's own check) leaves none unfinished: a
    `CREATE TRIGGER ... BEGIN` line goes on until its `END`."""
    match = _FIRST_WORD.match(line)
    if match is None or match.group(1).lower() not in _STATEMENT_WORDS:
        return False
    # The `;` on a line of its own: after a trailing `--` comment it would be commented out.
    return dialect != "sqlite" or sqlite3.complete_statement(f"{line.rstrip()}\n;")


def _script_lines(sql: str, dialect: Dialect) -> list[str] | None:
    """`sql` cut at its line breaks outside literals and block comments (a `--` comment ends at
    one), or None when the scanner cannot read it."""
    cuts: list[int] = []
    if dialect == "postgres":
        try:
            scanned = _pg_parser().scan(sql)
        except _pg_parser().ParseError:
            return None
        at = 0
        for token in scanned:
            cuts.extend(i for i in range(at, token.start) if sql[i] == "\n")
            at = token.end + 1
        cuts.extend(i for i in range(at, len(sql)) if sql[i] == "\n")
    else:
        at = 0
        for token in tokens(sql, dialect):
            if token.kind == "code":
                cuts.extend(at + i for i, c in enumerate(token.text) if c == "\n")
            elif token.kind == "quoted" and token.text.endswith("\n") and token.text.startswith(("--", "#")):
                cuts.append(at + len(token.text) - 1)
            at += len(token.text)
    lines, start = [], 0
    for cut in cuts:
        lines.append(sql[start:cut])
        start = cut + 1
    lines.append(sql[start:])
    return lines


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


# First words of statements that end or start a transaction: batch() and exec() are one
# transaction each, and such a statement would end it half way (what ran before it committed,
# what follows in autocommit, and a later failure could no longer undo either). D1 refuses them.
_ENDS_A_TRANSACTION = frozenset({"begin", "commit", "end", "rollback", "abort", "start", "xa"})
_WORDS = re.compile(r"[A-Za-z_]+")


def refuse_transaction_control(statements: list[str], dialect: Dialect) -> None:
    """SqlError naming the first statement of a batch or script that would end or start a
    transaction (`ROLLBACK TO` a savepoint, which ends none, is fine)."""
    for index, statement in enumerate(statements):
        words = _first_words(statement, dialect)
        if not words or words[0] not in _ENDS_A_TRANSACTION:
            continue
        if words[0] == "rollback" and "to" in words[1:3]:
            continue
        if words[0] == "start" and words[1:2] != ["transaction"]:
            continue
        what = " ".join(words[:2]) if words[0] in ("start", "xa") else words[0]
        raise batch_error(
            index,
            sql_error(
                f"{what.upper()} is not allowed here: batch() and exec() run as one transaction"
                " (all or nothing), which the daemon begins and commits"
            ),
        )


def _first_words(statement: str, dialect: Dialect) -> list[str]:
    """The first three words of a statement's code, past comments, lowercased."""
    words: list[str] = []
    for token in tokens(statement, dialect):
        if token.kind == "quoted" and token.text.startswith(("--", "/*", "#")):
            continue
        if token.kind != "code":
            break
        words.extend(w.lower() for w in _WORDS.findall(token.text))
        if len(words) >= 3:
            break
    return words[:3]


def dialect_of(backend_kind: str) -> Dialect:
    """The SQL dialect of a backend kind: SQLite's for `local` and `sqlite`."""
    return _DIALECTS.get(backend_kind, "sqlite")


_DIALECTS: dict[str, Dialect] = {"postgres": "postgres", "mysql": "mysql"}


def batch_error(index: int, err: BindingdError) -> BindingdError:
    """A statement's failure inside a batch or script, naming its index (from 0)."""
    return BindingdError(
        err.reason, f"statement {index} failed, nothing was applied: {err.message}", backend=err.backend
    )


# The contract of a SQL provider: what it returns, and the Protocol it implements.


@dataclass(frozen=True)
class SqlMeta:
    """D1's meta of one statement; what a backend cannot tell stays 0."""

    duration: float = 0.0
    changes: int = 0
    last_row_id: int = 0
    changed_db: bool = False
    rows_read: int = 0
    rows_written: int = 0
    size_after: int | None = None


@dataclass(frozen=True)
class SqlResult:
    """A statement's whole answer (batch results, which D1 returns whole)."""

    columns: list[str]
    rows: list[tuple[object, ...]]
    meta: SqlMeta


@dataclass(frozen=True)
class SqlStatement:
    sql: str
    params: list[object]


@dataclass(frozen=True)
class SqlAccess:
    """How a call may use the database: `read_only` runs it in a read-only transaction (the
    backend refuses writes), `timeout` is the statement timeout in seconds."""

    read_only: bool
    timeout: float


# A page of a statement's rows: at most PAGE_ROWS of them.
Page = list[tuple[object, ...]]


class SqlCursor(Protocol):
    """A statement's answer as it is read: its columns, its rows page by page, then its end.

    `finish` ends the statement, on every path (a second call does nothing and returns None):
    - after the last page, the statement has ended (committed): keep=True returns its meta;
    - before it, keep=True means the caller read enough (`first()` of a large result): the
      rest of the rows are skipped and what the statement did is kept, as D1 runs a statement
      whole whatever part of its result is read. It returns the meta, or None when the backend
      has none to tell (SQLite), or when a read-only call had nothing to keep (MySQL: stopped
      like keep=False rather than read to its end);
    - keep=False abandons the statement (an expired or cancelled cursor): it is cancelled on
      the server and rolled back.
    """

    columns: list[str]

    def pages(self) -> AsyncIterator[Page]:
        """The rows, in pages of at most `PAGE_ROWS`."""
        ...

    async def finish(self, keep: bool) -> SqlMeta | None: ...


@runtime_checkable
class SqlProvider(Provider, Protocol):
    """A D1 database. Values in and out are those of `Value`; providers translate
    placeholders with `translate` and map every backend failure to the error table
    (SQL_ERROR with the backend's message for the caller's SQL; PERMISSION_DENIED when the
    read-only transaction refused a write; BACKEND_TIMEOUT once the statement was cancelled on
    the server)."""

    async def query(self, statement: SqlStatement, access: SqlAccess) -> SqlCursor:
        """The statement run up to its first page of rows (its errors are raised here), as a
        cursor the caller finishes on every path."""

    async def batch(self, statements: list[SqlStatement], access: SqlAccess) -> list[SqlResult]:
        """Every statement in one transaction; on a failure roll back and raise
        `batch_error(index, err)`."""

    async def exec(self, statements: list[str], access: SqlAccess) -> None:
        """A script's statements (already split), in one transaction, like `batch`."""
