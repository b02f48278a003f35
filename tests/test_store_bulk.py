"""Bulk loads: rows in one transaction, keys built after it, and the store as if migrated fresh.

A restore fills millions of rows through `Store.bulk_load`; whatever happens (a clean load,
rows that break a key, a crash between the commit and the keys), the store must end with exactly
the schema a new store has, and never with a duplicate behind a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from arena.export.restore import BULK_TABLES
from arena.store import LATEST_VERSION, DuplicateKeys, Store, StoreError, StoreVersionError, bulk


def schema(store: Store) -> dict[str, list[tuple]]:
    """Columns, constraints and indexes of every table, as DuckDB describes them."""
    where = "WHERE database_name = current_database() ORDER BY ALL"
    with store.cursor() as cursor:
        return {
            "columns": cursor.execute(
                "SELECT table_name, column_index, column_name, data_type, column_default, "
                f"is_nullable FROM duckdb_columns() {where}"
            ).fetchall(),
            "constraints": cursor.execute(
                "SELECT table_name, constraint_type, constraint_column_names::VARCHAR, "
                f"constraint_text FROM duckdb_constraints() {where}"
            ).fetchall(),
            "indexes": cursor.execute(
                f"SELECT table_name, index_name, is_unique, sql FROM duckdb_indexes() {where}"
            ).fetchall(),
        }


@pytest.fixture(scope="module")
def fresh_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple]]:
    with Store.open(tmp_path_factory.mktemp("fresh")) as store:
        return schema(store)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "data") as opened:
        yield opened


def insert_battles(cursor: duckdb.DuckDBPyConnection, ids: list[str]) -> None:
    """A battle, both its conversations, a prompt and a reply on each side, and a vote, per id."""
    cursor.execute("INSERT INTO sessions (id) VALUES ('bulk') ON CONFLICT DO NOTHING")
    for battle in ids:
        side_a, side_b = f"{battle}-a", f"{battle}-b"
        cursor.execute(
            "INSERT INTO battles (id, session_id, model_a, model_b, anony, conversation_a, "
            "conversation_b, created_at) VALUES (?, 'bulk', 'alpha', 'beta', true, ?, ?, now())",
            [battle, side_a, side_b],
        )
        for conversation, side, model in ((side_a, "a", "alpha"), (side_b, "b", "beta")):
            cursor.execute(
                "INSERT INTO conversations (id, session_id, mode, model, battle_id, side, "
                "created_at) VALUES (?, 'bulk', 'battle', ?, ?, ?, now())",
                [conversation, model, battle, side],
            )
            cursor.execute(
                "INSERT INTO messages (id, conversation_id, turn, attempt, role, content, "
                "created_at, model, finished) VALUES "
                "(uuid()::VARCHAR, $c, 0, 0, 'user', 'Hello', now(), NULL, NULL), "
                "(uuid()::VARCHAR, $c, 0, 0, 'assistant', 'Hi', now(), $model, true)",
                {"c": conversation, "model": model},
            )
        cursor.execute(
            "INSERT INTO votes (id, battle_id, session_id, winner, created_at) "
            "VALUES (uuid()::VARCHAR, ?, 'bulk', 'model_a', now())",
            [battle],
        )


def count(store: Store, table: str) -> int:
    with store.cursor() as cursor:
        [(rows,)] = cursor.execute(f"SELECT count(*) FROM {table}").fetchall()
    return rows


def marker(store: Store) -> list[tuple]:
    with store.cursor() as cursor:
        return cursor.execute("SELECT value FROM settings WHERE key = ?", [bulk.MARKER]).fetchall()


def test_a_bulk_load_ends_with_the_schema_of_a_fresh_store(
    store: Store, fresh_schema: dict[str, list[tuple]]
) -> None:
    with store.bulk_load(BULK_TABLES) as cursor:
        # Inside the load the keys are gone: that is what makes it fast.
        assert not cursor.execute(
            "SELECT * FROM duckdb_indexes() WHERE table_name IN ('messages', 'votes')"
        ).fetchall()
        insert_battles(cursor, ["b1", "b2"])
    assert schema(store) == fresh_schema
    assert (count(store, "battles"), count(store, "messages")) == (2, 8)
    assert marker(store) == []


def test_keys_hold_again_after_a_bulk_load(store: Store) -> None:
    with store.bulk_load(BULK_TABLES) as cursor:
        insert_battles(cursor, ["b1"])
    with store.cursor() as cursor, pytest.raises(duckdb.ConstraintException):
        insert_battles(cursor, ["b1"])


def test_rows_held_before_a_bulk_load_are_kept(store: Store) -> None:
    with store.cursor() as cursor:
        insert_battles(cursor, ["before"])
    with store.bulk_load(BULK_TABLES) as cursor:
        insert_battles(cursor, ["during"])
    with store.cursor() as cursor:
        battles = cursor.execute("SELECT id FROM battles ORDER BY id").fetchall()
    assert battles == [("before",), ("during",)]
    assert count(store, "messages") == 8


def test_rows_that_break_a_key_roll_the_whole_load_back(
    store: Store, fresh_schema: dict[str, list[tuple]]
) -> None:
    with store.cursor() as cursor:
        insert_battles(cursor, ["before"])
    with (
        pytest.raises(DuplicateKeys, match="nothing of this load was written"),
        store.bulk_load(BULK_TABLES) as cursor,
    ):
        insert_battles(cursor, ["new", "before"])
    with store.cursor() as cursor:
        assert cursor.execute("SELECT id FROM battles").fetchall() == [("before",)]
    assert count(store, "messages") == 4
    assert schema(store) == fresh_schema
    assert marker(store) == []


def test_a_duplicate_in_a_unique_key_of_several_columns_is_found(store: Store) -> None:
    expected = (
        r"messages repeat 1 values of its UNIQUE\(conversation_id, turn, .role., attempt\), "
        r"such as \(b1-a, 0, user, 0\)"
    )
    with pytest.raises(DuplicateKeys, match=expected), store.bulk_load(BULK_TABLES) as cursor:
        insert_battles(cursor, ["b1"])
        cursor.execute(
            "INSERT INTO messages (id, conversation_id, turn, attempt, role, content, "
            "created_at) VALUES ('again', 'b1-a', 0, 0, 'user', 'Hello again', now())"
        )
    assert count(store, "messages") == 0


def test_a_key_on_a_column_vouched_unique_is_not_checked(store: Store) -> None:
    # The restore fills votes.id with ids of its own that cannot repeat: checking them (and
    # messages.id, before migration 14) cost a 1M-vote restore 0.4 s. Every other key is
    # still checked.
    with store.cursor() as cursor:
        cursor.begin()
        bulk.drop_keys(cursor, BULK_TABLES)
        insert_battles(cursor, ["b1", "b2"])
        # b2's vote again, under b1's vote id.
        cursor.execute(
            "UPDATE votes SET id = (SELECT id FROM votes WHERE battle_id = 'b1') "
            "WHERE battle_id = 'b2'"
        )
        bulk.check_keys(cursor, unique_columns=["votes.id"])
        with pytest.raises(DuplicateKeys, match=r"votes repeat 1 values of its PRIMARY KEY"):
            bulk.check_keys(cursor)
        cursor.rollback()


def test_an_error_inside_the_load_rolls_it_back(
    store: Store, fresh_schema: dict[str, list[tuple]]
) -> None:
    with pytest.raises(RuntimeError), store.bulk_load(BULK_TABLES) as cursor:
        insert_battles(cursor, ["b1"])
        raise RuntimeError("the dataset could not be read")
    assert count(store, "battles") == 0
    assert schema(store) == fresh_schema


@pytest.mark.parametrize(
    "built_before_the_crash", [[], ["ALTER TABLE battles ADD PRIMARY KEY (id)"]]
)
def test_keys_a_crash_left_unbuilt_are_built_when_the_store_opens(
    tmp_path: Path, fresh_schema: dict[str, list[tuple]], built_before_the_crash: list[str]
) -> None:
    # The process dies after the rows are committed, before (or while) the keys are built.
    with Store.open(tmp_path) as store, store.cursor() as cursor:
        cursor.begin()
        bulk.drop_keys(cursor, BULK_TABLES)
        insert_battles(cursor, ["b1"])
        cursor.commit()
        for statement in built_before_the_crash:
            cursor.execute(statement)
        assert marker(store) != []

    with Store.open(tmp_path) as store:
        assert schema(store) == fresh_schema
        assert marker(store) == []
        assert count(store, "messages") == 4


def test_a_second_bulk_load_waits_for_the_keys_of_the_first(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        with store.cursor() as cursor:
            cursor.begin()
            bulk.drop_keys(cursor, BULK_TABLES)
            cursor.commit()
        pending = pytest.raises(StoreError, match="still being added back: reopen the store")
        with pending, store.bulk_load(BULK_TABLES):
            pass


def test_a_table_without_keys_is_refused(store: Store) -> None:
    with (
        pytest.raises(StoreError, match="no table 'nowhere' with keys"),
        store.bulk_load(["nowhere"]),
    ):
        pass


def test_a_newer_release_s_file_keeps_its_unfinished_load_as_it_is(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store, store.cursor() as cursor:
        cursor.begin()
        bulk.drop_keys(cursor, BULK_TABLES)
        cursor.execute(
            "UPDATE settings SET value = ? WHERE key = 'schema_version'", [str(LATEST_VERSION + 1)]
        )
        cursor.commit()

    with pytest.raises(StoreVersionError):
        Store.open(tmp_path)
    with duckdb.connect(str(tmp_path / "arena.duckdb"), read_only=True) as con:
        assert con.execute(
            "SELECT count(*) FROM settings WHERE key = ?", [bulk.MARKER]
        ).fetchone() == (1,)
        primary_keys = con.execute(
            "SELECT count(*) FROM duckdb_constraints() "
            "WHERE table_name = 'battles' AND constraint_type = 'PRIMARY KEY'"
        )
        assert primary_keys.fetchone() == (0,)
