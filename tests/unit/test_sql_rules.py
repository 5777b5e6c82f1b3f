"""The SQL rules on their own: placeholder translation, script splitting, value mapping."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from bindingd_client.proto import database_pb2
from hypothesis import given
from hypothesis import strategies as st
from pglast import parser as pg_parser

from bindingd.domain.sql import SqlMeta, normalize, parameter_numbers, split_script, translate
from bindingd.errors import BindingdError, Reason
from bindingd.server.sql import _add_row, _set_meta, decode_value


def test_question_marks_number_like_sqlite() -> None:
    assert parameter_numbers("SELECT ?, ?, ?5, ?, ?1", "sqlite") == [1, 2, 5, 6, 1]


def test_postgres_gets_dollar_numbers() -> None:
    sql, params = translate("SELECT * FROM t WHERE a = ? AND b = ?2 AND c = ?1", "postgres", ["x", "y"])
    assert sql == "SELECT * FROM t WHERE a = $1 AND b = $2 AND c = $1"
    assert params == ["x", "y"]


def test_mysql_gets_percent_s_with_values_repeated_in_order() -> None:
    sql, params = translate("SELECT ?2, ?1, ?2, '100%' LIKE ?1", "mysql", ["a", "b"])
    assert sql == "SELECT %s, %s, %s, '100%%' LIKE %s"
    assert params == ["b", "a", "b", "a"]


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT '?' , 'it''s ?'",
        'SELECT "col?"',
        "SELECT 1 -- what? ?1\n",
        "SELECT /* ? */ 1",
        "SELECT /* ? ; */ 1 /* ?2 */",
    ],
)
def test_placeholders_in_literals_identifiers_and_comments_stay(dialect: str, sql: str) -> None:
    translated, params = translate(sql, dialect, [])  # type: ignore[arg-type]
    assert translated.replace("%%", "%") == sql
    assert params == []


def test_postgres_dollar_quotes_and_nested_comments() -> None:
    sql = "SELECT $$ ? $$, $fn$ it's ?; $fn$, /* outer /* inner ? */ still ? */ ?"
    translated, params = translate(sql, "postgres", [7])
    assert translated == "SELECT $$ ? $$, $fn$ it's ?; $fn$, /* outer /* inner ? */ still ? */ $1"
    assert params == [7]
    # `$1`-style text and identifiers with a dollar are not dollar quotes.
    assert translate("SELECT a$b, ?", "postgres", [1])[0] == "SELECT a$b, $1"


def test_backslash_escapes_per_dialect() -> None:
    # MySQL strings take backslash escapes; so do PostgreSQL E'' strings, but not plain ones.
    assert translate(r"SELECT 'a\'?', ?", "mysql", [1]) == (r"SELECT 'a\'?', %s", [1])
    assert translate(r"SELECT E'a\'?', ?", "postgres", [1]) == (r"SELECT E'a\'?', $1", [1])
    assert translate(r"SELECT 'a\', ?", "postgres", [1]) == (r"SELECT 'a\', $1", [1])


def test_mysql_hash_comments_and_backticks() -> None:
    assert translate("SELECT `a?` # ?\n, ?", "mysql", [1]) == ("SELECT `a?` # ?\n, %s", [1])


def test_wrong_number_of_values_is_sql_error() -> None:
    with pytest.raises(BindingdError) as failed:
        translate("SELECT ?, ?", "postgres", [1])
    assert failed.value.reason is Reason.SQL_ERROR
    assert "2 parameters but 1 value was bound" in failed.value.message
    with pytest.raises(BindingdError, match="out of range"):
        translate("SELECT ?0", "sqlite", [])


def test_split_script_keeps_semicolons_in_literals_and_drops_empty_statements() -> None:
    script = """
        CREATE TABLE t (a TEXT); -- trailing; comment
        INSERT INTO t VALUES ('x; y');;
        /* only a comment; */
        INSERT INTO t VALUES ("z;")
    """
    assert split_script(script, "sqlite") == [
        "CREATE TABLE t (a TEXT)",
        "-- trailing; comment\n        INSERT INTO t VALUES ('x; y')",
        '/* only a comment; */\n        INSERT INTO t VALUES ("z;")',
    ]
    assert split_script("-- nothing\n;  ;", "sqlite") == []
    assert split_script("DO $$ BEGIN PERFORM 1; END $$; SELECT 1", "postgres") == [
        "DO $$ BEGIN PERFORM 1; END $$",
        "SELECT 1",
    ]


def test_normalize_maps_backend_types_to_contract_values() -> None:
    assert normalize(decimal.Decimal("12.50")) == "12.50"
    assert normalize(2**70) == str(2**70)
    assert normalize(datetime.datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05"
    assert normalize(datetime.date(2024, 1, 2)) == "2024-01-02"
    assert normalize(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert normalize([1, None, "a"]) == '[1,null,"a"]'
    assert normalize({"a": [decimal.Decimal("1.5")]}) == '{"a":["1.5"]}'
    assert normalize(memoryview(b"ab")) == b"ab"
    assert normalize({"b", "a"}) == "a,b"
    for plain in (None, True, 1, 1.5, "x", b"x"):
        assert normalize(plain) == plain


@given(st.text(alphabet="?'\";-/*\n abc$", max_size=40))
def test_translation_never_breaks_on_arbitrary_text(sql: str) -> None:
    for dialect in ("postgres", "mysql"):
        numbers = parameter_numbers(sql, dialect)  # type: ignore[arg-type]
        values = list(range(max(numbers, default=0)))
        try:
            translated, params = translate(sql, dialect, values)  # type: ignore[arg-type]
        except BindingdError as e:
            # PostgreSQL's lexer reads it otherwise (or not at all): refused, never sent.
            assert dialect == "postgres" and e.reason is Reason.SQL_ERROR
            continue
        assert len(params) == (len(numbers) if dialect == "mysql" else len(values))
        assert translated.count("?") == sql.count("?") - len(numbers)


# Pieces PostgreSQL's lexer and a hand scanner easily read differently.
ODD_PIECES = [
    "$$",
    "$tag$",
    "$a$",
    "a$$$",
    "a$",
    "$1",
    "E'",
    "e'",
    "U&'",
    'U&"',
    "'",
    "''",
    "\\'",
    '"',
    '""',
    "/*",
    "*/",
    "--",
    "\n",
    ";",
    "?",
    "?1",
    "?12",
    " ",
    "x",
    "é",
    "E'\\''",
    "B'",
    "X'",
    "1",
    ".",
]


@given(st.lists(st.sampled_from(ODD_PIECES), max_size=14).map("".join))
def test_postgres_translation_is_what_postgres_reads_or_refused(sql: str) -> None:
    """What is sent is what PostgreSQL's own lexer reads: a `$N` exactly where each `?` was,
    and every `?` that PostgreSQL sees outside literals and comments was translated."""
    numbers = parameter_numbers(sql, "postgres")
    try:
        translated, _ = translate(sql, "postgres", list(range(max(numbers, default=0))))
    except BindingdError as e:
        assert e.reason is Reason.SQL_ERROR
        return
    scanned = pg_parser.scan(translated)
    assert [translated[t.start : t.end + 1] for t in scanned if t.name == "PARAM"] == [
        f"${n}" for n in numbers
    ]
    assert not [t for t in scanned if t.name in ("Op", "ASCII_63") and "?" in translated[t.start : t.end + 1]]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # `a$$$` is a name (`$` continues identifiers): no dollar quote opens there.
        ("SELECT 1 AS a$$$, ?", "SELECT 1 AS a$$$, $1"),
        ("SELECT $$ ? $$, ?", "SELECT $$ ? $$, $1"),
        ("SELECT $tag$ ?; $x$ ? $tag$, ?", "SELECT $tag$ ?; $x$ ? $tag$, $1"),
        ("SELECT E'\\'?', ?", "SELECT E'\\'?', $1"),
        ("SELECT U&'d?' UESCAPE '!', ?", "SELECT U&'d?' UESCAPE '!', $1"),
        ("SELECT /* /* ? */ ? */ ?", "SELECT /* /* ? */ ? */ $1"),
        ('SELECT "quoted""?ident", ?', 'SELECT "quoted""?ident", $1'),
        ("SELECT ? --", "SELECT $1 --"),
        ("SELECT ? -- ?", "SELECT $1 -- ?"),
    ],
)
def test_postgres_odd_quoting_reads_as_postgres_reads_it(sql: str, expected: str) -> None:
    assert translate(sql, "postgres", [1])[0] == expected


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT $1",  # PostgreSQL's own parameter syntax: not D1's
        "SELECT a?",  # `a$1` would be one name to PostgreSQL
        "SELECT 'unterminated ?",
        "SELECT $$ ?",
    ],
)
def test_postgres_statements_its_lexer_reads_otherwise_are_refused(sql: str) -> None:
    values = list(range(max(parameter_numbers(sql, "postgres"), default=0)))
    with pytest.raises(BindingdError) as refused:
        translate(sql, "postgres", values)
    assert refused.value.reason is Reason.SQL_ERROR


def test_postgres_scripts_split_where_postgres_splits() -> None:
    script = "SELECT 1 AS a$$$; SET default_transaction_read_only=off; COMMIT; INSERT INTO t VALUES (1)"
    assert split_script(script, "postgres") == [
        "SELECT 1 AS a$$$",
        "SET default_transaction_read_only=off",
        "COMMIT",
        "INSERT INTO t VALUES (1)",
    ]
    body = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END"
    assert split_script(f"{body}; SELECT 3", "postgres") == [body, "SELECT 3"]
    # A script the grammar refuses is split at the lexer's `;` (the server names the mistake).
    assert split_script("FOO BAR; /* x; */ ; SELECT 1 -- c", "postgres") == ["FOO BAR", "SELECT 1 -- c"]
    with pytest.raises(BindingdError, match="cannot read the script"):
        split_script("SELECT 'x; SELECT 2", "postgres")


def test_rows_and_meta_are_built_in_place_as_the_contract_says() -> None:
    message = database_pb2.SqlQueryResponse()
    _add_row(message.rows, (None, True, 7, 1.5, "t", b"b", decimal.Decimal("1.10")))
    _set_meta(message.meta, SqlMeta())  # every value 0: still present, so the answer is complete
    values = message.rows[0].values
    kinds = ["null", "boolean", "integer", "real", "text", "blob", "text"]
    assert [v.WhichOneof("kind") for v in values] == kinds
    assert [decode_value(v) for v in values] == [None, True, 7, 1.5, "t", b"b", "1.10"]
    assert message.HasField("meta")
    assert not message.meta.HasField("size_after")
    _set_meta(message.meta, SqlMeta(changes=2, size_after=4096))
    assert (message.meta.changes, message.meta.size_after) == (2, 4096)


def test_mysql_comments_as_the_server_reads_them() -> None:
    # `--` starts a comment only before whitespace: `1--?` is `1 - -?`, a parameter.
    assert translate("SELECT 1--?", "mysql", [1]) == ("SELECT 1--%s", [1])
    assert translate("SELECT 1 -- ?\n, ?", "mysql", [1]) == ("SELECT 1 -- ?\n, %s", [1])
    assert split_script("SELECT 1--1; SELECT 2 --", "mysql") == ["SELECT 1--1", "SELECT 2 --"]
    # Executable comments are code: their `?` and `;` count.
    assert translate("SELECT 1 /*! + ? */", "mysql", [1]) == ("SELECT 1 /*! + %s */", [1])
    assert split_script("/*!50000 SELECT 1; SELECT 2 */", "mysql") == ["/*!50000 SELECT 1", "SELECT 2 */"]
    assert split_script("/* a; b */ SELECT 1", "mysql") == ["/* a; b */ SELECT 1"]
    # Other dialects keep `--` a comment wherever it is.
    assert translate("SELECT 1--?", "postgres", []) == ("SELECT 1--?", [])


def test_exec_reads_lines_as_d1_does_past_a_trailing_comment() -> None:
    from bindingd.domain.sql import split_exec

    script = split_exec("SELECT 1 -- one\nSELECT 2", "sqlite")
    assert (script.statements, script.count) == (["SELECT 1 -- one", "SELECT 2"], 2)
    trigger = "CREATE TRIGGER tr AFTER INSERT ON a BEGIN\n  INSERT INTO b VALUES (1); END;\nSELECT 2"
    assert len(split_exec(trigger, "sqlite").statements) == 2
