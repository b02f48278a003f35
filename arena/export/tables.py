"""One export batch as Parquet files, one per dataset config.

A batch is a set of votes, leaderboard snapshots and deletions (`arena.export.push` assigns
them). Text comes only from sessions that chose to share, and only after `arena.pii.scrub` (the copy
the store scrubbed when it stored the message, or scrubbed here if it has none);
voters appear as a salted hash (``judge``), never as a username, IP hash or session id. Every
config gets a file in every batch (empty when it has no rows), so each config's schema is always
in the dataset; the card lists only configs with rows, since `datasets` refuses an empty one.
The battle configs are built in Arrow and written by pyarrow (`arena.export.lists`), the others
by DuckDB."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa

from arena import pii
from arena.export import direct, lists, signals

CONFIGS = (
    "battles", "conversations", "preference", "unpaired", "leaderboard", "deletions", "signals",
    *direct.CONFIGS,
)  # fmt: skip
"""The dataset's configs, each a folder ``data/<config>/`` of Parquet shards."""

_VOTES_AFTER = """
-- The watermark of the batch before this one (-1 if it has none): the batch's votes are
-- numbered above it (migration 12), so the scans of votes below skip the older row groups.
SELECT coalesce(max(votes_through), -1) FROM export_batches
WHERE target = $target AND batch < $batch
"""

_BATTLES_FROM = """
-- The lowest battle number the batch's votes keep (0 if one is unknown): a battle is numbered
-- below its conversations and tags, so the scans of all three start there.
SELECT coalesce(min(coalesce(v.battle_seq, 0)), 0)
FROM votes v
JOIN export_rows r ON r.row_id = v.id AND r.kind = 'vote' AND r.target = $target
    AND r.batch = $batch
WHERE v.seq > $votes_after
"""

_BATCH = """
CREATE OR REPLACE TEMP TABLE export_votes AS
SELECT v.battle_id, v.winner, v.created_at, b.model_a, b.model_b, b.anony,
    coalesce(k.share, false) AS text_shared,
    'arena_' || left(sha256($salt || ':' || coalesce(
        'user:' || v.username, 'ip:' || v.ip_hash, 'session:' || v.session_id)), 24) AS judge,
    bt.language, bt.tags
FROM votes v
JOIN export_rows r ON r.row_id = v.id AND r.kind = 'vote' AND r.target = $target
    AND r.batch = $batch
JOIN battles b ON b.id = v.battle_id
LEFT JOIN consents k ON k.session_id = b.session_id
LEFT JOIN battle_tags bt ON bt.battle_id = v.battle_id AND bt.seq >= $battles_from
WHERE v.seq > $votes_after AND b.seq >= $battles_from
"""

_CONTENT = """CASE WHEN m.scrubbed_by = $version THEN coalesce(m.content_scrubbed, m.content)
    ELSE s.content END"""
"""SQL: the published text of message ``m``: the copy the store scrubbed with this version of
arena.pii, else this export's scrub (``s``, from export_scrubbed)."""

_UNSCRUBBED = """
-- Shared messages without a copy scrubbed by this version of arena.pii when they were stored
-- (written before migration 8, restored, or scrubbed by another version): write_batch scrubs them.
SELECT m.id, m.content
FROM messages m
JOIN export_sides p ON p.conversation_id = m.conversation_id
WHERE m.seq >= $since AND p.text_shared AND m.scrubbed_by IS DISTINCT FROM $version
"""

_SIDES = """
-- The conversations of the batch's battles, stored in the conversations config's order, so
-- that a row's rowid is its position in that order: arena.export.lists sorts the messages by
-- this position, so each conversation's list is a range of rows. (A window's row_number()
-- carried every column through its sort: 2.0-2.7 s at 1M votes, against 0.9-1.3 s.)
CREATE OR REPLACE TEMP TABLE export_sides AS
SELECT c.id AS conversation_id, c.battle_id AS question_id, c.mode, c.side, c.model, v.judge,
    v.winner AS battle_winner, v.language, epoch(c.created_at) AS tstamp, v.text_shared, c.seq
FROM conversations c
JOIN export_votes v ON v.battle_id = c.battle_id
WHERE c.seq >= $battles_from
ORDER BY tstamp, conversation_id
"""

_SINCE = """
-- The lowest write number of the batch's conversations: none of their messages is below it
-- (migration 11), so the scans of messages start there and skip the older row groups.
SELECT coalesce(min(seq), 0) FROM export_sides
"""


def _messages(scrubbed_here: bool) -> str:
    """SQL: every message of the batch's battle conversations in one scan, in no order
    (arena.export.lists sorts them and cuts the lists out of them). Turns and failures count
    every conversation, shared or not; text only comes from sessions that share. Without
    ``scrubbed_here`` (the export scrubbed nothing: every shared message has its stored copy)
    no join with export_scrubbed, a quarter of the scan's cost."""
    content = _CONTENT if scrubbed_here else _CONTENT.replace("ELSE s.content END", "END")
    join = "LEFT JOIN export_scrubbed s ON s.id = m.id" if scrubbed_here else ""
    return f"""
    SELECT p.rowid AS position, m.turn, m.role <> 'user' AS reply, m.attempt, m.role,
        CASE WHEN p.text_shared THEN {content} END AS content, m.finished, m.error_kind,
        epoch(m.created_at) AS tstamp
    FROM messages m
    JOIN export_sides p ON p.conversation_id = m.conversation_id
    {join}
    WHERE m.seq >= $since
    """


_BATTLE_ROWS = """
SELECT v.battle_id AS question_id, v.model_a, v.model_b, v.winner, v.judge,
    a.rowid AS position_a, b.rowid AS position_b, v.anony, v.language,
    epoch(v.created_at) AS tstamp, coalesce(v.tags, []::VARCHAR[]) AS category_tags, v.text_shared
FROM export_votes v
LEFT JOIN export_sides a ON a.question_id = v.battle_id AND a.side = 'a'
LEFT JOIN export_sides b ON b.question_id = v.battle_id AND b.side = 'b'
ORDER BY tstamp, question_id
"""

_SIGNAL_TEXT = f"""
-- Message by message, the published text of the batch's conversations that carry signals (most
-- carry none), battles and direct chats alike: what arena.export.signals reads. Messages from
-- the batch's first conversation on, as for the lists.
CREATE OR REPLACE TEMP TABLE export_text AS
SELECT m.id, m.conversation_id, m.turn, m.attempt, m.role, m.finished, m.error_kind,
    epoch(m.created_at) AS tstamp,
    m.attempt = max(m.attempt) OVER (PARTITION BY m.conversation_id, m.turn, m.role) AS latest,
    {_CONTENT} AS content
FROM messages m
JOIN export_sides p ON p.conversation_id = m.conversation_id AND p.text_shared
LEFT JOIN export_scrubbed s ON s.id = m.id
WHERE m.seq >= $since AND m.conversation_id IN (SELECT conversation_id FROM message_signals)
UNION ALL BY NAME
SELECT id, conversation_id, turn, attempt, role, finished, error_kind, tstamp, latest, content
FROM export_direct_text
WHERE conversation_id IN (SELECT conversation_id FROM message_signals)
"""

_QUERIES = {
    "leaderboard": """
        SELECT s.id AS snapshot_id, s.computed_at, s.category, s.style_control, s.battles_used,
            s.records::VARCHAR AS records
        FROM leaderboard_snapshots s
        JOIN export_rows r ON r.row_id = s.id AND r.kind = 'snapshot' AND r.target = $target
            AND r.batch = $batch
        ORDER BY s.computed_at, s.id
    """,
    # Battles their authors deleted: drop them from any copy (the next compaction drops them
    # from this dataset's earlier shards).
    "deletions": """
        SELECT d.id AS question_id, epoch(d.deleted_at) AS tstamp
        FROM deletions d
        JOIN export_rows r ON r.row_id = d.id AND r.kind = 'deletion' AND r.target = $target
            AND r.batch = $batch
        ORDER BY tstamp, question_id
    """,
    "signals": "SELECT * FROM export_signals ORDER BY tstamp, question_id, conversation_id, turn",
}


def write_batch(
    cursor: duckdb.DuckDBPyConnection, *, target: str, batch: int, salt: str, folder: Path
) -> dict[str, int]:
    """Write batch ``batch`` of ``target`` as ``folder/<config>.parquet``; returns row counts."""
    params = {"target": target, "batch": batch}
    version = {"version": pii.VERSION}
    try:
        [(votes_after,)] = cursor.execute(_VOTES_AFTER, params).fetchall()
        [(battles_from,)] = cursor.execute(
            _BATTLES_FROM, params | {"votes_after": votes_after}
        ).fetchall()
        window = {"votes_after": votes_after, "battles_from": battles_from}
        _run(cursor, _BATCH, params | window | {"salt": salt})
        _run(cursor, _SIDES, {"battles_from": battles_from})
        [(since,)] = cursor.execute(_SINCE).fetchall()
        scrubbed = _scrub_missing(cursor, since)
        cursor.register("export_scrubbed", scrubbed)
        battle_lists = lists.BattleLists(
            _arrow(cursor, "SELECT * EXCLUDE (seq) FROM export_sides"),
            _arrow(cursor, _messages(scrubbed.num_rows > 0), version | {"since": since}),
        )
        battles = battle_lists.battles(_arrow(cursor, _BATTLE_ROWS))
        direct.prepare(cursor, target=target, batch=batch, salt=salt)
        _run(cursor, _SIGNAL_TEXT, version | {"since": since})
        signals.prepare(cursor)
        # Longest first, so that two threads finish together: per 1M votes, the conversations
        # take about 3 s, unpaired and battles 2 s each, preference 1 s.
        built = {
            "conversations": battle_lists.conversations,
            "unpaired": battles.unpaired,
            "battles": battles.table,
            "preference": battles.preference,
        }
        beside = {config: _beside_battles(cursor, config) for config in built}
        counts: dict[str, int] = {}
        # Each config is built and written on a thread of its own (pyarrow's kernels and writer let
        # go of the GIL), beside DuckDB writing the small configs.
        with ThreadPoolExecutor(max_workers=min(len(built), os.cpu_count() or 1)) as pool:
            written = {
                config: pool.submit(_build_and_write, config, build, beside[config], folder)
                for config, build in built.items()
            }
            for config, sql in (_QUERIES | direct.COPIED).items():
                path = folder / f"{config}.parquet"
                query_params = params if "$batch" in sql else None
                _run(
                    cursor,
                    f"COPY ({sql}) TO '{_quote(path)}' (FORMAT parquet, COMPRESSION zstd)",
                    query_params,
                )
                counts[config] = _count(cursor, path)
            for config, future in written.items():
                counts[config] = future.result()
    finally:
        direct.cleanup(cursor)
        cursor.unregister("export_scrubbed")
        for table in ("export_votes", "export_sides", "export_text", *signals.TEMP_TABLES):
            _run(cursor, f"DROP TABLE IF EXISTS {table}")
    return {config: counts[config] for config in CONFIGS}


def _build_and_write(
    config: str, build: Callable[[], pa.Table], beside: list[pa.Table], folder: Path
) -> int:
    """Build one battle config, put the other rows beside it, write it; returns its rows."""
    table = lists.merged(config, [build(), *beside])
    lists.write(table, folder / f"{config}.parquet")
    return table.num_rows


def _beside_battles(cursor: duckdb.DuckDBPyConnection, config: str) -> list[pa.Table]:
    """A config's rows other than the battles': direct chats', and signal pairs in preference."""
    parts = [_arrow(cursor, direct.ROWS[config])] if config in direct.ROWS else []
    if config == "preference":
        parts.append(_arrow(cursor, "SELECT *, 'signals' AS source FROM export_signal_pairs"))
    return parts


def _arrow(
    cursor: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object] | None = None
) -> pa.Table:
    return cursor.sql(sql, params=params).to_arrow_table()


def _scrub_missing(cursor: duckdb.DuckDBPyConnection, since: int) -> pa.Table:
    """(id, content) of the shared messages `_UNSCRUBBED` finds, scrubbed; usually none."""
    params = {"version": pii.VERSION, "since": since}
    missing = cursor.sql(_UNSCRUBBED, params=params).to_arrow_table()
    return pa.table(
        {
            "id": missing.column("id").cast(pa.string()),
            "content": pa.array(
                pii.scrub_all(missing.column("content").to_pylist()), type=pa.string()
            ),
        }
    )


def _run(
    cursor: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object] | None = None
) -> None:
    """Run a statement to completion: DuckDB 2 refuses new work while a result is unread."""
    cursor.execute(sql, params).fetchall()


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def _count(cursor: duckdb.DuckDBPyConnection, path: Path) -> int:
    [(rows,)] = cursor.execute(
        f"SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata('{_quote(path)}')"
    ).fetchall()
    return int(rows)
