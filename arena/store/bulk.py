"""Filling store tables in bulk: the rows in one transaction, the keys built after it.

DuckDB checks a key row by row as rows go in, and builds the key's index a second time when the
transaction commits. For millions of rows that was most of a restore (1M votes, 4M messages,
uuid ids: 41 s, against 22-24 s with this module). So `drop_keys` recreates the tables without
their primary keys, UNIQUE constraints and indexes, inside the caller's transaction;
`check_keys` looks for rows that would break a key before the commit (so a bad load is rolled
back whole); and `add_keys`, once the rows are committed, adds the keys back with ``ALTER TABLE
... ADD`` and ``CREATE INDEX``, two tables at a time. Until then a marker in ``settings`` says
what to add back, so that a crash in between is finished by the next `arena.store.Store` open.

Meant for a store nobody else writes to yet (a restore runs before the arena serves): without
its keys a table takes duplicates, and a duplicate written meanwhile would stop `add_keys`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict

from duckdb import DuckDBPyConnection

from arena.store.migrations import StoreError

MARKER = "bulk_load_keys"
"""The ``settings`` key of the keys still to add back: a JSON list of `TableKeys`."""

_BUILDERS = 2
"""Tables whose keys are built at the same time (one ALTER at a time per table: DuckDB refuses
to alter a table while another of its keys or indexes is being added). Measured at 1M votes,
back to back: 12.6-13.1 s for the keys two tables at a time, 14.5-14.7 s one after the other."""


class Key(TypedDict):
    clause: str
    """``PRIMARY KEY(...)`` or ``UNIQUE(...)``, as DuckDB renders it."""
    columns: list[str]


class TableKeys(TypedDict):
    table: str
    constraints: list[Key]
    indexes: dict[str, str]
    """Index name to its ``CREATE INDEX`` statement."""


class DuplicateKeys(StoreError, ValueError):
    """Rows of a bulk load that would break a key; the load was rolled back."""


def drop_keys(cursor: DuckDBPyConnection, tables: Sequence[str]) -> list[TableKeys]:
    """Recreate ``tables`` without their keys and indexes (rows kept), and record the marker.

    Runs inside the caller's transaction: a rollback brings the keyed tables back untouched.
    """
    if cursor.execute("SELECT value FROM settings WHERE key = ?", [MARKER]).fetchone():
        raise StoreError("a bulk load's keys are still being added back: reopen the store")
    keys = [_keys_of(cursor, table) for table in tables]
    for table in tables:
        keyless = _keyless_table(cursor, table)
        [(rows,)] = cursor.execute(f"SELECT count(*) FROM {_quote(table)}").fetchall()
        if rows:
            cursor.execute(f"CREATE TEMP TABLE bulk_rows AS SELECT * FROM {_quote(table)}")
        cursor.execute(f"DROP TABLE {_quote(table)}")
        cursor.execute(keyless)
        if rows:
            cursor.execute(f"INSERT INTO {_quote(table)} SELECT * FROM bulk_rows")
            cursor.execute("DROP TABLE bulk_rows")
    cursor.execute("INSERT INTO settings VALUES (?, ?)", [MARKER, json.dumps(keys)])
    return keys


def check_keys(cursor: DuckDBPyConnection, unique_columns: Collection[str] = ()) -> None:
    """Raise `DuplicateKeys` if rows in the keyless tables would break a key of the marker.

    A key on one of ``unique_columns`` (``table.column``) alone is not checked: the caller
    filled that column only with values that cannot repeat (a sequence's, ``uuid()``'s)."""
    for table_keys in _pending(cursor):
        table = table_keys["table"]
        for key in table_keys["constraints"]:
            (first, *others) = key["columns"]
            if not others and f"{table}.{first}" in unique_columns:
                continue
            listed = ", ".join(_quote(name) for name in key["columns"])
            # As UNIQUE does, NULLs never collide.
            not_null = " AND ".join(f"{_quote(name)} IS NOT NULL" for name in key["columns"])
            repeated = cursor.execute(
                f"SELECT count(*) OVER (), ({listed})::VARCHAR FROM {_quote(table)} "
                f"WHERE {not_null} GROUP BY {listed} HAVING count(*) > 1 LIMIT 1"
            ).fetchone()
            if repeated:
                keys, example = repeated
                raise DuplicateKeys(
                    f"rows for {table} repeat {keys} values of its {key['clause']}, such as "
                    f"{example}: nothing of this load was written"
                )


def add_keys(con: DuckDBPyConnection) -> None:
    """Add back the keys and indexes of the marker, if there is one, then clear it.

    ``con`` is the caller's own (nobody else runs statements on it meanwhile). Keys already
    there (from an `add_keys` cut short) are left as they are.
    """
    if not _has_settings(con):
        return
    pending = _pending(con)
    if not pending:
        return
    sizes = {
        keys["table"]: con.execute(f"SELECT count(*) FROM {_quote(keys['table'])}").fetchall()[0][0]
        for keys in pending
    }
    # The largest table first, so that the others share the second builder meanwhile.
    pending.sort(key=lambda keys: sizes[keys["table"]], reverse=True)
    # A cursor per table, made here: the builders' threads never touch ``con`` themselves.
    cursors = [con.cursor() for _ in pending]
    try:
        with ThreadPoolExecutor(_BUILDERS, thread_name_prefix="store-keys") as pool:
            list(pool.map(_add_table_keys, cursors, pending))
    finally:
        for cursor in cursors:
            cursor.close()
    con.execute("DELETE FROM settings WHERE key = ?", [MARKER])


def _add_table_keys(cursor: DuckDBPyConnection, keys: TableKeys) -> None:
    table = keys["table"]
    present = {
        text
        for (text,) in cursor.execute(
            "SELECT constraint_text FROM duckdb_constraints() "
            "WHERE database_name = current_database() AND table_name = ?",
            [table],
        ).fetchall()
    }
    indexes = {
        name
        for (name,) in cursor.execute(
            "SELECT index_name FROM duckdb_indexes() "
            "WHERE database_name = current_database() AND table_name = ?",
            [table],
        ).fetchall()
    }
    # Constraints before indexes: DuckDB refuses ALTER TABLE on a table with an index.
    for key in keys["constraints"]:
        if key["clause"] not in present:
            cursor.execute(f"ALTER TABLE {_quote(table)} ADD {key['clause']}")
    for name, sql in keys["indexes"].items():
        if name not in indexes:
            cursor.execute(sql)


def _pending(cursor: DuckDBPyConnection) -> list[TableKeys]:
    row = cursor.execute("SELECT value FROM settings WHERE key = ?", [MARKER]).fetchone()
    return json.loads(row[0]) if row else []


def _has_settings(con: DuckDBPyConnection) -> bool:
    return bool(
        con.execute(
            "SELECT 1 FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = 'settings'"
        ).fetchone()
    )


def _keys_of(cursor: DuckDBPyConnection, table: str) -> TableKeys:
    constraints: list[Key] = [
        {"clause": clause, "columns": columns}
        for clause, columns in cursor.execute(
            "SELECT constraint_text, constraint_column_names FROM duckdb_constraints() "
            "WHERE database_name = current_database() AND table_name = ? "
            "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE') ORDER BY constraint_index",
            [table],
        ).fetchall()
    ]
    if not constraints:
        raise StoreError(f"no table {table!r} with keys in the store")
    indexes = dict(
        cursor.execute(
            "SELECT index_name, sql FROM duckdb_indexes() "
            "WHERE database_name = current_database() AND table_name = ? ORDER BY index_name",
            [table],
        ).fetchall()
    )
    return {"table": table, "constraints": constraints, "indexes": indexes}


def _keyless_table(cursor: DuckDBPyConnection, table: str) -> str:
    """``CREATE TABLE`` for ``table`` as it is (columns, types, defaults, NOT NULL, CHECKs),
    without its keys."""
    columns = [
        f"{_quote(name)} {data_type}"
        + (f" DEFAULT {default}" if default is not None else "")
        + ("" if nullable else " NOT NULL")
        for name, data_type, default, nullable in cursor.execute(
            "SELECT column_name, data_type, column_default, is_nullable FROM duckdb_columns() "
            "WHERE database_name = current_database() AND table_name = ? ORDER BY column_index",
            [table],
        ).fetchall()
    ]
    checks = [
        text
        for (text,) in cursor.execute(
            "SELECT constraint_text FROM duckdb_constraints() "
            "WHERE database_name = current_database() AND table_name = ? "
            "AND constraint_type = 'CHECK' ORDER BY constraint_index",
            [table],
        ).fetchall()
    ]
    return f"CREATE TABLE {_quote(table)} ({', '.join([*columns, *checks])})"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
