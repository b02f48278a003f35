"""One export batch as Parquet files, one per dataset config, written by DuckDB.

A batch is a set of votes, leaderboard snapshots and deletions (`arena.export.push` assigns
them). Text comes only from sessions that chose to share, and only after `arena.pii.scrub` (the copy
the store scrubbed when it stored the message, or scrubbed here if it has none);
voters appear as a salted hash (``judge``), never as a username, IP hash or session id. Every
config gets a file in every batch (empty when it has no rows), so each config's schema is always
in the dataset; the card lists only configs with rows, since `datasets` refuses an empty one.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from arena import pii
from arena.export import direct, signals

CONFIGS = (
    "battles", "conversations", "preference", "unpaired", "leaderboard", "deletions", "signals",
    *direct.CONFIGS,
)  # fmt: skip
"""The dataset's configs, each a folder ``data/<config>/`` of Parquet shards."""

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
LEFT JOIN battle_tags bt ON bt.battle_id = v.battle_id
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
JOIN conversations c ON c.id = m.conversation_id
JOIN export_votes v ON v.battle_id = c.battle_id
WHERE v.text_shared AND m.scrubbed_by IS DISTINCT FROM $version
"""

_LISTS = f"""
-- The one place the message lists are built, one per conversation of the batch's battles, in
-- one scan of messages: no window ranks the attempts and no join fetches the text again. The
-- list is sorted by a narrow key (list_grade_up; sorting the structs would compare their text),
-- and an attempt is the latest of its turn and role when the next element is of another one.
-- battles keeps the latest attempts of these lists, conversations all of them. Turns and
-- failures count every conversation, shared or not; text only comes from sessions that share.
CREATE OR REPLACE TEMP TABLE export_lists AS
WITH grouped AS (
    SELECT c.id AS conversation_id, c.battle_id, c.mode, c.side, c.model,
        epoch(c.created_at) AS tstamp, v.text_shared,
        list({{'turn': m.turn, 'reply': m.role <> 'user', 'attempt': m.attempt,
            'role': m.role, 'content': CASE WHEN v.text_shared THEN {_CONTENT} END,
            'finished': m.finished, 'error_kind': m.error_kind,
            'tstamp': epoch(m.created_at)}}) AS messages
    FROM messages m
    JOIN conversations c ON c.id = m.conversation_id
    JOIN export_votes v ON v.battle_id = c.battle_id
    LEFT JOIN export_scrubbed s ON s.id = m.id
    GROUP BY ALL
), sorted AS (
    SELECT * REPLACE (list_select(messages, list_grade_up(
        [{{'turn': m.turn, 'reply': m.reply, 'attempt': m.attempt}} FOR m IN messages]
    )) AS messages)
    FROM grouped
), ranked AS (
    SELECT * REPLACE (list_transform(messages, lambda m, i: {{'turn': m.turn,
        'attempt': m.attempt, 'role': m.role, 'content': m.content, 'finished': m.finished,
        'error_kind': m.error_kind,
        'latest': i = len(messages) OR messages[i + 1].turn <> m.turn
            OR messages[i + 1].reply <> m.reply,
        'tstamp': m.tstamp}}) AS messages)
    FROM sorted
)
SELECT *, list_sum([(m.role = 'user')::INTEGER FOR m IN messages]) AS turns,
    -- Some turn has no reply, or its latest reply failed or was cut short.
    list_sum([(m.role = 'user')::INTEGER FOR m IN messages])
        > list_sum([(m.latest AND m.role = 'assistant' AND m.finished
            AND m.error_kind IS NULL)::INTEGER FOR m IN messages]) AS unanswered
FROM ranked
"""

_SIGNAL_TEXT = f"""
-- Message by message, the published text of the batch's conversations that carry signals (most
-- carry none), battles and direct chats alike: what arena.export.signals reads.
CREATE OR REPLACE TEMP TABLE export_text AS
SELECT m.id, m.conversation_id, m.turn, m.attempt, m.role, m.finished, m.error_kind,
    epoch(m.created_at) AS tstamp,
    m.attempt = max(m.attempt) OVER (PARTITION BY m.conversation_id, m.turn, m.role) AS latest,
    {_CONTENT} AS content
FROM messages m
JOIN conversations c ON c.id = m.conversation_id
JOIN export_votes v ON v.battle_id = c.battle_id AND v.text_shared
LEFT JOIN export_scrubbed s ON s.id = m.id
WHERE m.conversation_id IN (SELECT conversation_id FROM message_signals)
UNION ALL BY NAME
SELECT id, conversation_id, turn, attempt, role, finished, error_kind, tstamp, latest, content
FROM export_direct_text
WHERE conversation_id IN (SELECT conversation_id FROM message_signals)
"""

_BATTLES = """
-- Sorted once, here: the battles config reads it in this order (a scan of one table keeps it).
CREATE OR REPLACE TEMP TABLE export_battles AS
SELECT v.battle_id AS question_id, v.model_a, v.model_b, v.winner, v.judge,
    CASE WHEN v.text_shared THEN
        [{'role': m.role, 'content': m.content} FOR m IN coalesce(a.messages, []) IF m.latest]
        ELSE [] END AS conversation_a,
    CASE WHEN v.text_shared THEN
        [{'role': m.role, 'content': m.content} FOR m IN coalesce(b.messages, []) IF m.latest]
        ELSE [] END AS conversation_b,
    coalesce(a.turns, 0)::INTEGER AS turn,
    v.anony, v.language, epoch(v.created_at) AS tstamp,
    coalesce(v.tags, []::VARCHAR[]) AS category_tags,
    (a.turns IS NULL AND b.turns IS NULL) OR coalesce(a.turns, 0) <> coalesce(b.turns, 0)
        OR coalesce(a.unanswered, false) OR coalesce(b.unanswered, false) AS has_error,
    v.text_shared
FROM export_votes v
LEFT JOIN export_lists a ON a.battle_id = v.battle_id AND a.side = 'a'
LEFT JOIN export_lists b ON b.battle_id = v.battle_id AND b.side = 'b'
ORDER BY tstamp, question_id
"""

_QUERIES = {
    "battles": "SELECT * FROM export_battles",  # sorted when it was built
    # One row per side of each shared battle, with every attempt (lists from export_lists).
    # Sorted, like preference and unpaired, by arena.export.direct.queries, which adds the
    # direct chats' rows.
    "conversations": """
        SELECT l.conversation_id, l.battle_id AS question_id, l.mode, l.side, l.model, v.judge,
            v.winner AS battle_winner, v.language, l.tstamp, l.messages
        FROM export_lists l
        JOIN export_votes v ON v.battle_id = l.battle_id
        WHERE l.text_shared
    """,
    # TRL preference rows: the first-turn prompt, the winner's reply chosen, the loser's rejected;
    # then the pairs read from the users' reactions (arena.export.signals).
    "preference": """
        SELECT question_id, [conversation_a[1]] AS prompt,
            [CASE WHEN winner = 'model_a' THEN conversation_a[2] ELSE conversation_b[2] END]
                AS chosen,
            [CASE WHEN winner = 'model_a' THEN conversation_b[2] ELSE conversation_a[2] END]
                AS rejected,
            CASE WHEN winner = 'model_a' THEN model_a ELSE model_b END AS chosen_model,
            CASE WHEN winner = 'model_a' THEN model_b ELSE model_a END AS rejected_model,
            language, tstamp, 'vote' AS source
        FROM export_battles
        WHERE text_shared AND NOT has_error AND winner IN ('model_a', 'model_b')
        UNION ALL
        SELECT *, 'signals' AS source FROM export_signal_pairs
    """,
    # TRL unpaired (KTO) rows: each first-turn reply of a decided battle, labelled good or bad.
    "unpaired": """
        SELECT question_id, [conversation_a[1]] AS prompt,
            [CASE WHEN side = 'a' THEN conversation_a[2] ELSE conversation_b[2] END]
                AS completion,
            CASE WHEN side = 'a' THEN model_a ELSE model_b END AS model,
            winner = 'model_' || side AS label, language, tstamp
        FROM export_battles, (VALUES ('a'), ('b')) sides(side)
        WHERE text_shared AND NOT has_error
            AND winner IN ('model_a', 'model_b', 'tie (bothbad)')
    """,
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
        _run(cursor, _BATCH, params | {"salt": salt})
        cursor.register("export_scrubbed", _scrub_missing(cursor))
        _run(cursor, _LISTS, version)
        _run(cursor, _BATTLES)
        direct.prepare(cursor, target=target, batch=batch, salt=salt)
        _run(cursor, _SIGNAL_TEXT, version)
        signals.prepare(cursor)
        counts: dict[str, int] = {}
        for config, sql in direct.queries(_QUERIES).items():
            path = folder / f"{config}.parquet"
            query_params = params if "$batch" in sql else None
            _run(
                cursor,
                f"COPY ({sql}) TO '{_quote(path)}' (FORMAT parquet, COMPRESSION zstd)",
                query_params,
            )
            counts[config] = _count(cursor, path)
    finally:
        direct.cleanup(cursor)
        cursor.unregister("export_scrubbed")
        temp = ("export_votes", "export_lists", "export_battles", "export_text")
        for table in (*temp, *signals.TEMP_TABLES):
            _run(cursor, f"DROP TABLE IF EXISTS {table}")
    return counts


def _scrub_missing(cursor: duckdb.DuckDBPyConnection) -> pa.Table:
    """(id, content) of the shared messages `_UNSCRUBBED` finds, scrubbed; usually none."""
    missing = cursor.sql(_UNSCRUBBED, params={"version": pii.VERSION}).to_arrow_table()
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
