"""What a caller's SQL may do on a local SQLite binding, checked by SQLite itself.

SQLite calls an authorizer for every action a statement would take while it compiles it; a
denied action fails the statement before it runs. The guard is installed on each of a binding's
connections once the daemon has set them up, so the daemon's own statements before that are not
checked, and those after it (the busy timeout, the page count) are on the allow-list.

What it enforces, for every binding (D1 runs each query on its own with fixed settings):
- a binding reaches its own database file and nothing else: no ATTACH / DETACH (VACUUM and
  VACUUM INTO attach a file too), no extension loading, no PRAGMA outside the list below
  (`database_list` tells the file's path; `query_only`, `journal_mode`, `writable_schema`, ...
  would change the connection for every later call);
- no temporary tables, views, indexes or triggers: they would outlive the call on the shared
  connection;
- on a read-only connection (read-only binding, protected env), no write of any kind, whatever
  the database: `mode=ro` covers the main file only.

A denied action is remembered (`denied`) so that the provider can answer with a clear error
instead of SQLite's "not authorized".
"""

from __future__ import annotations

import re
import sqlite3

from bindingd.domain.sql import sql_error
from bindingd.errors import BindingdError, permission_denied

# PRAGMAs a caller may run, reading or with an argument (a table name, a check's limit).
_QUERY_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
        "function_list",
        "collation_list",
        "pragma_list",
        "module_list",
        "compile_options",
        "optimize",
        "freelist_count",
        "data_version",
    }
)
# PRAGMAs a caller may read but not set: the connection's settings are the binding's own.
_READ_ONLY_PRAGMAS = frozenset(
    {
        "page_count",
        "page_size",
        "max_page_count",
        "encoding",
        "journal_mode",
        "synchronous",
        "auto_vacuum",
        "schema_version",
        "application_id",
        "cache_size",
        "query_only",
        "cell_size_check",
        # Redefines LIKE: SQLite refuses to put that back while another call's cursor is open.
        "case_sensitive_like",
        "secure_delete",
        "temp_store",
        "automatic_index",
    }
)
# PRAGMAs a caller may set (those D1 lets a query set), each put back to the binding's own value
# after any call whose SQL names it (`busy_timeout` is tracked by the connection, see sql.py).
# By the statement's text, not by what this guard saw: sqlite3 reuses a compiled statement from
# its cache without asking the authorizer again.
RESET_AFTER_CALL = {
    "foreign_keys": "PRAGMA foreign_keys = ON",
    "defer_foreign_keys": "PRAGMA defer_foreign_keys = OFF",
    "ignore_check_constraints": "PRAGMA ignore_check_constraints = OFF",
    "legacy_alter_table": "PRAGMA legacy_alter_table = OFF",
    "recursive_triggers": "PRAGMA recursive_triggers = OFF",
    "reverse_unordered_selects": "PRAGMA reverse_unordered_selects = OFF",
}
_NAMES_A_SETTING = re.compile("|".join(RESET_AFTER_CALL), re.IGNORECASE)
_SETTABLE_PRAGMAS = frozenset({*RESET_AFTER_CALL, "busy_timeout", "user_version"})
# Functions that reach outside the database (or, fts3_tokenizer with two arguments, memory).
_REFUSED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"})
_TEMP_OBJECTS = frozenset(
    {
        sqlite3.SQLITE_CREATE_TEMP_INDEX,
        sqlite3.SQLITE_CREATE_TEMP_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
        sqlite3.SQLITE_CREATE_TEMP_VIEW,
    }
)
_WRITES = frozenset(
    {
        sqlite3.SQLITE_INSERT,
        sqlite3.SQLITE_UPDATE,
        sqlite3.SQLITE_DELETE,
        sqlite3.SQLITE_CREATE_INDEX,
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_CREATE_TRIGGER,
        sqlite3.SQLITE_CREATE_VIEW,
        sqlite3.SQLITE_CREATE_VTABLE,
        sqlite3.SQLITE_DROP_INDEX,
        sqlite3.SQLITE_DROP_TABLE,
        sqlite3.SQLITE_DROP_TRIGGER,
        sqlite3.SQLITE_DROP_VIEW,
        sqlite3.SQLITE_DROP_VTABLE,
        sqlite3.SQLITE_DROP_TEMP_INDEX,
        sqlite3.SQLITE_DROP_TEMP_TABLE,
        sqlite3.SQLITE_DROP_TEMP_TRIGGER,
        sqlite3.SQLITE_DROP_TEMP_VIEW,
        sqlite3.SQLITE_ALTER_TABLE,
        sqlite3.SQLITE_REINDEX,
        sqlite3.SQLITE_ANALYZE,
    }
)
# Virtual tables about the connection itself (other calls' SQL, raw pages).
_INTERNAL_TABLES = frozenset({"sqlite_stmt", "sqlite_dbpage"})
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"})
_OWN_DATABASE = "a sql binding reaches only its own database"


class Guard:
    """The authorizer of one connection; `read_only` refuses every write."""

    __slots__ = ("denied", "read_only")

    def __init__(self, read_only: bool) -> None:
        self.read_only = read_only
        # Why the last statement was refused, until the provider reads it (`take_denial`).
        self.denied: BindingdError | None = None

    def install(self, conn: sqlite3.Connection) -> None:
        conn.set_authorizer(self)

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, _: str | None) -> int:
        refusal = self._refusal(action, arg1, arg2, db)
        if refusal is None:
            return sqlite3.SQLITE_OK
        self.denied = refusal
        return sqlite3.SQLITE_DENY

    def _refusal(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None
    ) -> BindingdError | None:
        if action == sqlite3.SQLITE_ATTACH:
            # VACUUM attaches "" (a temporary file) and VACUUM INTO its target.
            what = "ATTACH and VACUUM are" if not arg1 else "ATTACH and VACUUM INTO are"
            return sql_error(f"{what} not allowed: {_OWN_DATABASE}")
        if action == sqlite3.SQLITE_DETACH:
            return sql_error(f"DETACH is not allowed: {_OWN_DATABASE}")
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _REFUSED_FUNCTIONS:
            return sql_error(f"{arg2}() is not allowed: {_OWN_DATABASE}")
        if action == sqlite3.SQLITE_READ and arg1 in _INTERNAL_TABLES:
            return sql_error(f"{arg1} is not allowed: it shows the connection's state, not the data")
        if action in _TEMP_OBJECTS or (db == "temp" and action == sqlite3.SQLITE_INSERT):
            return sql_error(
                "temporary tables, views, indexes and triggers are not supported: each call"
                " runs on its own, as each D1 query does"
            )
        if action == sqlite3.SQLITE_PRAGMA:
            return self._pragma((arg1 or "").lower(), arg2)
        # On the read-only connection every write to the main file is refused by SQLite itself
        # (`mode=ro`, query_only); the guard refuses writes anywhere else. Not in main too: a
        # virtual table (R*Tree) compiles its shadow tables' writes when it is opened to read.
        if self.read_only and action in _WRITES and db != "main":
            if action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA_TABLES:
                # Asked while SQLite sets up a table-valued PRAGMA (`pragma_table_info(...)`);
                # the schema itself is written only with writable_schema, which is refused.
                return None
            return permission_denied("the binding is read-only: SQLite refused the write")
        return None

    def _pragma(self, name: str, value: str | None) -> BindingdError | None:
        if name in _QUERY_PRAGMAS or (value is None and name in _READ_ONLY_PRAGMAS):
            return None
        if name in _SETTABLE_PRAGMAS:
            if value is not None and self.read_only and name == "user_version":
                return permission_denied("the binding is read-only: PRAGMA user_version is a write")
            return None
        if name in _READ_ONLY_PRAGMAS:
            return sql_error(f"PRAGMA {name} cannot be changed: the binding's settings are fixed")
        return sql_error(f"PRAGMA {name} is not allowed on a sql binding")

    def take_denial(self) -> BindingdError | None:
        denied, self.denied = self.denied, None
        return denied


def settings_named(sql: str) -> frozenset[str]:
    """The settings `sql` may change, to put back after its call (empty for nearly every call)."""
    if _NAMES_A_SETTING.search(sql) is None:
        return frozenset()
    return frozenset(match.lower() for match in _NAMES_A_SETTING.findall(sql))


def reset_settings(conn: sqlite3.Connection, names: frozenset[str]) -> None:
    """Put back `names` (outside a transaction, where they apply)."""
    for name in sorted(names):
        conn.execute(RESET_AFTER_CALL[name])
