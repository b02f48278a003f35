"""Rebuilding an empty store from the published dataset (a Space's disk is wiped on restart).

What comes back: every published vote with its battle, both conversations (every attempt) and
tags, the leaderboard history, so ratings and the rating-over-time plot are as before, and every
published direct chat with its feedback events (ended, so it takes no more changes; its share
link works again). What
the dataset never held stays lost: IPs, usernames and session ids (each voter comes back as one
session named after its pseudonym, so per-voter filters group votes as before), and the text of
sessions that did not share (their turns come back as empty messages, so those votes still
count; the rating filter that subsamples much-repeated prompts cannot see those prompts any
more, so a leaderboard recomputed after a restore can differ where withheld prompts repeated
a lot). The published batches are marked as such: the next push continues after them.
Signals (the ``signals`` config) are not read back: the signals job labels the restored turns
again, from their scrubbed text.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from arena.export import direct
from arena.export.push import EXPORT_LOCK
from arena.export.tables import CONFIGS
from arena.export.targets import PublishError, Target
from arena.store import DuplicateKeys, Store

log = logging.getLogger("arena.export")


class RestoreError(Exception):
    """The published dataset could not be read; the store was left empty."""


@dataclass(frozen=True)
class RestoreResult:
    votes: int = 0
    conversations: int = 0
    snapshots: int = 0
    batches: int = 0
    seconds: float = 0.0
    skipped: str | None = None
    """Why nothing was restored, if nothing was."""

    def describe(self) -> str:
        if self.skipped is not None:
            return f"restore: skipped, {self.skipped} ({self.seconds:.2f} s)"
        return (
            f"restore: {self.votes} votes, {self.conversations} conversations, "
            f"{self.snapshots} leaderboard snapshots from {self.batches} batches "
            f"({self.seconds:.2f} s)"
        )


BULK_TABLES = ["messages", "conversations", "battles", "votes"]
"""The tables with keys a restore fills with a row or more per vote: their keys are built after
the load (`arena.store.Store.bulk_load`; at 1M votes with uuid ids the restore went from 41 s to
22-24 s). export_rows, the other one, has no key (migration 13)."""

RESTORED_IDS = ("votes.id",)
"""Columns with a key of their own that the restore fills with ids that cannot repeat ('r' and a
number from a sequence): their keys go unchecked before the commit (at 1M votes, with
messages.id, whose key migration 14 dropped, that saved 0.4 s of 1.5 s of checks)."""


def restore_store(store: Store, target: Target) -> RestoreResult:
    """Fill an empty ``store`` from what ``target`` published; a store with votes is left alone."""
    started = time.perf_counter()

    def skipped(reason: str) -> RestoreResult:
        return RestoreResult(skipped=reason, seconds=time.perf_counter() - started)

    with EXPORT_LOCK:
        with store.cursor() as cursor:
            [(held,)] = cursor.execute(
                "SELECT (SELECT count(*) FROM votes) + (SELECT count(*) FROM leaderboard_snapshots)"
            ).fetchall()
        if held:
            return skipped("the store already has votes or leaderboards")
        with tempfile.TemporaryDirectory() as scratch:
            try:
                files = target.fetch_data(Path(scratch))
            except PublishError as error:
                raise RestoreError(
                    f"cannot read the dataset to restore the store: {error}"
                ) from error
            if not any(path.startswith("data/battles/") for path in files):
                return skipped("nothing was published yet")
            try:
                with store.bulk_load(BULK_TABLES, unique_columns=RESTORED_IDS) as cursor:
                    counts = _load(cursor, files, target.key)
            except DuplicateKeys as error:
                raise RestoreError(f"the published dataset holds rows twice: {error}") from error
    return RestoreResult(**counts, seconds=time.perf_counter() - started)


def _load(cursor: duckdb.DuckDBPyConnection, files: dict[str, Path], target: str) -> dict[str, int]:
    # Every batch has a file of every config (see arena.export.tables), so none is missing, but
    # for configs newer than the dataset. Signals are not restored: the signals job labels the
    # restored turns again (from their scrubbed text).
    batches: dict[int, dict[str, int]] = {}
    duplicated: set[str] = set()
    shards: dict[str, list[str]] = {}
    for config in CONFIGS:
        paths = shards[config] = [
            str(p) for name, p in files.items() if name.startswith(f"data/{config}/")
        ]
        if not paths:  # a config added after this dataset was last published
            if config in direct.CONFIGS:
                cursor.execute(direct.EMPTY_FEEDBACK).fetchall()
            continue
        for batch, rows in cursor.execute(
            f"SELECT {_batch_of('file_name')}, sum(num_rows) "
            "FROM parquet_file_metadata($paths) GROUP BY ALL",
            {"paths": paths},
        ).fetchall():
            batches.setdefault(batch, {})[config] = int(rows)
        if config not in _READ:
            continue  # derived from battles and conversations: nothing to restore from it
        cursor.execute(
            f"CREATE OR REPLACE TEMP TABLE restore_{config} AS SELECT {_READ[config]} "
            "FROM read_parquet($paths, filename = true, union_by_name = true)",
            {"paths": paths},
        ).fetchall()
        if _drop_duplicates(cursor, config):
            duplicated.add(config)
    statements = [
        *_RESTORE_SIDES,
        _battle_messages(repeated="conversations" in duplicated),
        *_RESTORE_REST,
        *direct.restore_statements(_BATCH_OF_FILE),
    ]
    parameters = {"target": target, "conversations": shards["conversations"]}
    for sql in statements:
        cursor.execute(
            sql, {k: v for k, v in parameters.items() if f"${k}" in sql} or None
        ).fetchall()
    # Restored votes are numbered 0 and every later vote above it: watermark 0 lets the next
    # plan read only the votes written after the restore, not match them all against export_rows.
    for batch, counts in sorted(batches.items()):
        cursor.execute(
            "INSERT INTO export_batches (target, batch, counts, published_at, votes_through) "
            "VALUES (?, ?, ?, now(), 0)",
            [target, batch, json.dumps(counts)],
        ).fetchall()
    # The scratch tables hold every message list: free them before the keys are built.
    for (table,) in cursor.execute(
        "SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE 'restore_%'"
    ).fetchall():
        cursor.execute(f"DROP TABLE {table}")
    [(votes, conversations, snapshots)] = cursor.execute(
        "SELECT (SELECT count(*) FROM votes), (SELECT count(*) FROM conversations), "
        "(SELECT count(*) FROM leaderboard_snapshots)"
    ).fetchall()
    return {
        "votes": votes,
        "conversations": conversations,
        "snapshots": snapshots,
        "batches": len(batches),
    }


_READ = {
    # The lists of conversation_a/b are the latest attempts of the conversations config's
    # messages (and empty when withheld): read every other column, not them.
    "battles": "* EXCLUDE (conversation_a, conversation_b)",
    # The message lists are read straight from the files where they are stored
    # (`_battle_messages`, `arena.export.direct.restore_statements`): a table of them all cost a
    # copy of every text (1M votes: 2.4 GB).
    "conversations": "* EXCLUDE (messages)",
    "leaderboard": "*",
    "deletions": "*",
    "feedback": "*",
}
"""Per config read back, the columns restore needs."""

_KEYS = {"battles": "question_id", "conversations": "conversation_id", "leaderboard": "snapshot_id"}


def _drop_duplicates(cursor: duckdb.DuckDBPyConnection, config: str) -> bool:
    """Keep one row per key: a local compaction that crashed between writing its merged shard
    and removing the old ones leaves rows twice. Checked first on the key alone, since rewriting
    a table of message lists costs more than the rest of the restore. Returns whether any
    repeated."""
    key = _KEYS.get(config)
    if key is None:
        return False
    [(duplicated,)] = cursor.execute(
        f"SELECT count(*) > count(DISTINCT {key}) FROM restore_{config}"
    ).fetchall()
    if duplicated:
        cursor.execute(
            f"CREATE OR REPLACE TEMP TABLE restore_{config} AS SELECT * FROM restore_{config} "
            f"QUALIFY row_number() OVER (PARTITION BY {key}) = 1"
        ).fetchall()
    return bool(duplicated)


def _batch_of(column: str) -> str:
    """SQL: the batch number in a shard's file name (see `arena.export.push.shard_path`)."""
    return f"CAST(regexp_extract({column}, 'batch-(\\d+)[^/]*\\.parquet$', 1) AS INTEGER)"


_BATCH_OF_FILE = _batch_of("filename")

_RESTORED_ID = "'r' || to_base(nextval('restored_ids'), 36)"


def _battle_messages(*, repeated: bool) -> str:
    """SQL: the restored battles' messages, unnested straight from the conversations config's
    files (``$conversations``); deleted battles are not in restore_battles. Where conversations
    ``repeated`` (in two files), only the copy `_drop_duplicates` kept."""
    kept = (
        "SEMI JOIN restore_conversations k "
        "ON k.conversation_id = f.conversation_id AND k.filename = f.filename"
        if repeated
        else ""
    )
    return f"""
    INSERT INTO messages (id, conversation_id, turn, attempt, role, content, created_at, model,
        finished, error_kind, seq)
    SELECT {_RESTORED_ID}, c.conversation_id, m.turn, m.attempt, m.role, m.content,
        to_timestamp(m.tstamp), CASE WHEN m.role = 'assistant' THEN c.model END,
        CASE WHEN m.role = 'assistant' THEN m.finished END, m.error_kind, 0
    FROM (
        SELECT f.conversation_id, f.model, unnest(f.messages) AS m
        FROM read_parquet($conversations, filename = true, union_by_name = true) f
        {kept}
        WHERE f.question_id IN (SELECT question_id FROM restore_battles)
    ) c
    """


_RESTORE_SIDES = [
    # Deleted battles stay deleted, even while earlier shards still hold them.
    """
    INSERT INTO deletions SELECT DISTINCT question_id, to_timestamp(tstamp) FROM restore_deletions
    """,
    """
    DELETE FROM restore_battles WHERE question_id IN (SELECT id FROM deletions)
    """,
    """
    DELETE FROM restore_conversations WHERE question_id IN (SELECT id FROM deletions)
    """,
    # One session per voter pseudonym, sharing if any of its battles came with text.
    """
    INSERT INTO sessions (id)
    SELECT DISTINCT 'restored-' || judge FROM restore_battles
    """,
    """
    INSERT INTO consents
    SELECT 'restored-' || judge, bool_or(text_shared), 'restored', now()
    FROM restore_battles GROUP BY judge
    """,
    # Conversations that were published keep their ids; withheld ones get ids of their own. No
    # message lists here: the published ones are unnested straight from the files.
    """
    CREATE OR REPLACE TEMP TABLE restore_sides AS
    SELECT b.question_id, s.side, 'restored-' || b.judge AS session_id,
        CASE s.side WHEN 'a' THEN b.model_a ELSE b.model_b END AS model,
        coalesce(c.conversation_id, b.question_id || '-' || s.side) AS conversation_id,
        coalesce(c.mode, CASE WHEN b.anony THEN 'battle' ELSE 'side_by_side' END) AS mode,
        to_timestamp(coalesce(c.tstamp, b.tstamp)) AS created_at,
        c.conversation_id IS NOT NULL AS published, b.turn, b.has_error
    FROM restore_battles b
    CROSS JOIN (VALUES ('a'), ('b')) s(side)
    LEFT JOIN restore_conversations c ON c.question_id = b.question_id AND c.side = s.side
    """,
    # Restored rows are numbered 0, below every row the store writes later (migrations 11 and
    # 12): the export then scans them whole if it ever reads them, and the load skips a
    # nextval per row (0.7 s for 1M battles, as much for their votes).
    """
    INSERT INTO battles (id, session_id, model_a, model_b, anony, conversation_a,
        conversation_b, created_at, seq)
    SELECT b.question_id, 'restored-' || b.judge, b.model_a, b.model_b, b.anony,
        a.conversation_id, s.conversation_id, a.created_at, 0
    FROM restore_battles b
    JOIN restore_sides a ON a.question_id = b.question_id AND a.side = 'a'
    JOIN restore_sides s ON s.question_id = b.question_id AND s.side = 'b'
    """,
    """
    INSERT INTO conversations (id, session_id, mode, model, battle_id, side, created_at, seq)
    SELECT conversation_id, session_id, mode, model, question_id, side, created_at, 0
    FROM restore_sides
    """,
    # Restored messages and votes get short ids of their own ('r' and a number), cheaper to
    # store than uuids and, for votes, to key (a primary key of 4M such ids built in half the
    # time of one of uuids: 1.5 s against 3.2 s, DuckDB 2.0). They never meet the uuids the
    # store gives new rows, and a restore runs once per store.
    """
    CREATE OR REPLACE TEMP SEQUENCE restored_ids
    """,
]
"""Filling the store from the scratch tables, up to the battles' messages (`_battle_messages`)."""

_RESTORE_REST = [
    # Withheld text: each turn comes back as an empty prompt and reply, failed if the battle had
    # a failure, so the vote is rated (or filtered) exactly as before.
    f"""
    INSERT INTO messages (id, conversation_id, turn, attempt, role, content, created_at, model,
        finished, error_kind, seq)
    SELECT {_RESTORED_ID}, s.conversation_id, t.turn, 0, r.role, '', s.created_at,
        CASE WHEN r.role = 'assistant' THEN s.model END,
        CASE WHEN r.role = 'assistant' THEN NOT s.has_error END, NULL, 0
    FROM restore_sides s, range(s.turn) t(turn), (VALUES ('user'), ('assistant')) r(role)
    WHERE NOT s.published
    """,
    f"""
    INSERT INTO votes (id, battle_id, session_id, winner, created_at, seq)
    SELECT {_RESTORED_ID}, question_id, 'restored-' || judge, winner, to_timestamp(tstamp), 0
    FROM restore_battles
    """,
    """
    INSERT INTO battle_tags (battle_id, language, tags, seq)
    SELECT question_id, language, category_tags, 0 FROM restore_battles
    WHERE language IS NOT NULL OR len(category_tags) > 0
    """,
    """
    INSERT INTO leaderboard_snapshots
    SELECT snapshot_id, computed_at, category, style_control, battles_used, records::JSON
    FROM restore_leaderboard
    """,
    # What was restored is published already: the watermark resumes after the last batch.
    f"""
    INSERT INTO export_rows
    SELECT $target, 'vote', v.id, {_BATCH_OF_FILE} FROM restore_battles b
    JOIN votes v ON v.battle_id = b.question_id
    UNION ALL
    SELECT $target, 'snapshot', snapshot_id, {_BATCH_OF_FILE} FROM restore_leaderboard
    UNION ALL
    SELECT DISTINCT ON (question_id) $target, 'deletion', question_id, {_BATCH_OF_FILE}
    FROM restore_deletions
    """,
]
"""After the battles' messages: withheld turns, votes, tags, leaderboards, and the marks of what
the target holds."""
