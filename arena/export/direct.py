"""Direct chats in the feedback dataset: what `arena.export.tables` adds to each batch for them.

A direct chat is exported once, whole, when it is settled: its owner left it (New chat, another
model: ``conversation_ends``) or nothing happened in it for `IDLE_BEFORE_EXPORT`. Only chats of
sessions that chose to share are planned, and only if they still share when the batch is
written; from the moment a chat is planned the store refuses changes to it, so a row is never
published twice and nothing published goes stale. Text (messages, edits, comments) goes through
`arena.pii.scrub`; the author appears only as ``judge``, the same salted pseudonym as their votes.

Rows, in the configs they join:

- ``conversations``: one row per chat (mode ``direct``, no side or winner; ``question_id`` is
  the chat's id, so deletions and compaction treat it like a battle), every attempt included.
- ``feedback`` (new): one row per feedback event (rating, edit, comment; value null when
  withdrawn), with ``current`` true for the latest event of its reply and aspect.
- ``preference``: an edit (prompt = the chat up to that user turn, chosen = the user's edit,
  rejected = the model's reply, ``chosen_model`` ``human``); a regenerated reply the user liked
  against each reply it replaced.
- ``unpaired``: every reply with a current like (label true) or dislike (false), and every
  replaced reply that was not rated (false: the user asked for another).
"""

from __future__ import annotations

from contextlib import suppress

import duckdb
import pyarrow as pa

from arena.pii import scrub

CONFIGS = ("feedback",)
"""Configs only direct chats fill."""

IDLE_BEFORE_EXPORT_S = 3600
"""A chat nobody ended is exported once it has been this long without a message or feedback."""

HUMAN = "human"
"""``chosen_model`` of a preference row whose chosen reply the user wrote (an edit)."""

_UNEXPORTED = """
FROM conversations c
JOIN consents k ON k.session_id = c.session_id AND k.share
WHERE c.mode = 'direct'
    AND c.id NOT IN (SELECT row_id FROM export_rows WHERE target = $target AND kind = 'direct')
"""

_SINCE = f"""
-- The lowest write number of the shared direct chats not exported yet: none of their messages
-- is below it (migration 11), so the plan's scans of messages start there.
SELECT coalesce(min(c.seq), 0) {_UNEXPORTED}
"""

_PLAN = f"""
INSERT INTO export_rows
SELECT $target, 'direct', c.id, $batch
{_UNEXPORTED}
    AND c.seq >= $since
    AND EXISTS (
        SELECT 1 FROM messages m
        WHERE m.conversation_id = c.id AND m.role = 'assistant' AND m.seq >= $since
    )
    AND (
        c.id IN (SELECT conversation_id FROM conversation_ends)
        OR greatest(
            (SELECT max(m.created_at) FROM messages m
             WHERE m.conversation_id = c.id AND m.seq >= $since),
            (SELECT max(e.created_at) FROM feedback_events e WHERE e.conversation_id = c.id)
        ) < now() - to_seconds($idle)
    )
"""


def plan(cursor: duckdb.DuckDBPyConnection, *, target: str, batch: int) -> int:
    """Assign the settled, shared direct chats not yet exported to ``batch``; returns how many.
    Runs inside `arena.export.push`'s planning transaction."""
    [(since,)] = cursor.execute(_SINCE, {"target": target}).fetchall()
    row = cursor.execute(
        _PLAN, {"target": target, "batch": batch, "idle": IDLE_BEFORE_EXPORT_S, "since": since}
    ).fetchone()
    return int(row[0]) if row else 0


_PREPARE = [
    # The batch's direct chats that still share (a session may have changed its mind since).
    """
    CREATE OR REPLACE TEMP TABLE export_direct AS
    SELECT c.id AS conversation_id, c.model, epoch(c.created_at) AS tstamp,
        'arena_' || left(sha256($salt || ':' || coalesce(
            'user:' || s.username, 'ip:' || s.ip_hash, 'session:' || c.session_id)), 24) AS judge
    FROM conversations c
    JOIN export_rows r ON r.row_id = c.id AND r.kind = 'direct' AND r.target = $target
        AND r.batch = $batch
    JOIN consents k ON k.session_id = c.session_id AND k.share
    LEFT JOIN sessions s ON s.id = c.session_id
    WHERE c.mode = 'direct'
    """,
    """
    CREATE OR REPLACE TEMP TABLE export_direct_messages AS
    SELECT m.id, m.conversation_id, m.turn, m.attempt, m.role, m.content AS raw, m.finished,
        m.error_kind, epoch(m.created_at) AS tstamp,
        m.attempt = max(m.attempt) OVER (PARTITION BY m.conversation_id, m.turn, m.role) AS latest
    FROM messages m
    WHERE m.conversation_id IN (SELECT conversation_id FROM export_direct)
    """,
    """
    CREATE OR REPLACE TEMP TABLE export_direct_events AS
    SELECT e.id, e.seq, e.conversation_id, e.message_id, m.turn, m.attempt, e.aspect,
        e.value AS raw, epoch(e.created_at) AS tstamp,
        e.seq = max(e.seq) OVER (PARTITION BY e.message_id, e.aspect) AS current,
        row_number() OVER (PARTITION BY e.conversation_id ORDER BY e.seq) - 1 AS event_index
    FROM feedback_events e
    JOIN messages m ON m.id = e.message_id
    WHERE e.conversation_id IN (SELECT conversation_id FROM export_direct)
    """,
]

_TEXT = """
SELECT id, raw FROM export_direct_messages
UNION ALL
SELECT id, raw FROM export_direct_events WHERE aspect <> 'rating' AND raw IS NOT NULL
"""

_SCRUBBED = [
    """
    CREATE OR REPLACE TEMP TABLE export_direct_text AS
    SELECT m.* EXCLUDE (raw), s.content FROM export_direct_messages m
    JOIN export_direct_scrubbed s ON s.id = m.id
    """,
    """
    CREATE OR REPLACE TEMP TABLE export_direct_feedback AS
    SELECT e.* EXCLUDE (raw),
        CASE WHEN e.aspect = 'rating' THEN e.raw ELSE s.content END AS value
    FROM export_direct_events e
    LEFT JOIN export_direct_scrubbed s ON s.id = e.id
    """,
    # Each turn as the chat went on from it: the prompt, and the latest reply or its edit.
    """
    CREATE OR REPLACE TEMP TABLE export_direct_turns AS
    SELECT u.conversation_id, u.turn, u.content AS prompt_text,
        coalesce(ed.value, a.content, '') AS final_text
    FROM export_direct_text u
    LEFT JOIN export_direct_text a ON a.conversation_id = u.conversation_id AND a.turn = u.turn
        AND a.role = 'assistant' AND a.latest
    LEFT JOIN export_direct_feedback ed ON ed.message_id = a.id AND ed.aspect = 'edit'
        AND ed.current
    WHERE u.role = 'user'
    """,
    # The prompt of each turn, in TRL's conversational format: every earlier turn, then its own
    # user message.
    """
    CREATE OR REPLACE TEMP TABLE export_direct_prompts AS
    SELECT t.conversation_id, t.turn,
        coalesce(flatten(list(
            [{'role': 'user', 'content': p.prompt_text},
             {'role': 'assistant', 'content': p.final_text}] ORDER BY p.turn
        ) FILTER (p.turn < t.turn)), [])
            || [{'role': 'user', 'content': t.prompt_text}] AS prompt
    FROM export_direct_turns t
    JOIN export_direct_turns p ON p.conversation_id = t.conversation_id
    GROUP BY t.conversation_id, t.turn, t.prompt_text
    """,
    # Every reply, with its current rating and edit.
    """
    CREATE OR REPLACE TEMP TABLE export_direct_replies AS
    SELECT a.id, a.conversation_id, a.turn, a.attempt, a.latest, a.content, a.tstamp,
        d.model, r.value AS rating, ed.value AS edit, p.prompt
    FROM export_direct_text a
    JOIN export_direct d ON d.conversation_id = a.conversation_id
    JOIN export_direct_prompts p ON p.conversation_id = a.conversation_id AND p.turn = a.turn
    LEFT JOIN export_direct_feedback r ON r.message_id = a.id AND r.aspect = 'rating'
        AND r.current
    LEFT JOIN export_direct_feedback ed ON ed.message_id = a.id AND ed.aspect = 'edit'
        AND ed.current
    WHERE a.role = 'assistant'
    """,
]

_TABLES = (
    "export_direct",
    "export_direct_messages",
    "export_direct_events",
    "export_direct_text",
    "export_direct_feedback",
    "export_direct_turns",
    "export_direct_prompts",
    "export_direct_replies",
)

ROWS = {
    # The direct chats' rows beside the battles' in three configs (arena.export.lists.merged
    # puts them in order); feedback is theirs alone.
    "conversations": """
        WITH grouped AS (
            SELECT conversation_id,
                list({'turn': turn, 'reply': role <> 'user', 'attempt': attempt, 'role': role,
                    'content': content, 'finished': finished, 'error_kind': error_kind,
                    'latest': latest, 'tstamp': tstamp}) AS messages
            FROM export_direct_text
            GROUP BY conversation_id
        )
        SELECT d.conversation_id, d.conversation_id AS question_id, 'direct' AS mode,
            NULL::VARCHAR AS side, d.model, d.judge, NULL::VARCHAR AS battle_winner,
            NULL::VARCHAR AS language, d.tstamp,
            list_transform(list_sort(g.messages), lambda m: {'turn': m.turn,
                'attempt': m.attempt, 'role': m.role, 'content': m.content,
                'finished': m.finished, 'error_kind': m.error_kind, 'latest': m.latest,
                'tstamp': m.tstamp}) AS messages
        FROM export_direct d JOIN grouped g ON g.conversation_id = d.conversation_id
    """,
    "preference": f"""
        -- An edit: the user's version preferred to the model's.
        SELECT conversation_id AS question_id, prompt,
            [{{'role': 'assistant', 'content': edit}}] AS chosen,
            [{{'role': 'assistant', 'content': content}}] AS rejected,
            '{HUMAN}' AS chosen_model, model AS rejected_model, NULL::VARCHAR AS language,
            tstamp, 'edit' AS source
        FROM export_direct_replies
        WHERE edit IS NOT NULL AND trim(content) <> ''
        UNION ALL
        -- A regenerated reply the user liked, preferred to each reply it replaced.
        SELECT new.conversation_id, new.prompt,
            [{{'role': 'assistant', 'content': new.content}}],
            [{{'role': 'assistant', 'content': old.content}}],
            new.model, old.model, NULL::VARCHAR, new.tstamp, 'regeneration'
        FROM export_direct_replies new
        JOIN export_direct_replies old ON old.conversation_id = new.conversation_id
            AND old.turn = new.turn AND old.attempt < new.attempt
        WHERE new.latest AND new.rating = 'like' AND old.rating IS DISTINCT FROM 'like'
            AND trim(old.content) <> '' AND trim(new.content) <> ''
    """,
    "unpaired": """
        -- Rated replies as rated; replaced ones the user did not rate as undesirable.
        SELECT conversation_id AS question_id, prompt,
            [{'role': 'assistant', 'content': content}] AS completion, model,
            coalesce(rating = 'like', false) AS label, NULL::VARCHAR AS language, tstamp
        FROM export_direct_replies
        WHERE (rating IS NOT NULL OR NOT latest) AND trim(content) <> ''
    """,
}

COPIED = {
    "feedback": """
        SELECT f.conversation_id, f.conversation_id AS question_id, d.model, d.judge, f.turn,
            f.attempt, f.event_index, f.aspect, f.value, f.current, f.tstamp
        FROM export_direct_feedback f JOIN export_direct d ON d.conversation_id = f.conversation_id
        ORDER BY f.tstamp, f.conversation_id, f.event_index
    """,
}


def prepare(cursor: duckdb.DuckDBPyConnection, *, target: str, batch: int, salt: str) -> None:
    """Build the batch's direct-chat tables (scrubbed) for `ROWS` and `COPIED`; `cleanup`
    drops them."""
    params = {"target": target, "batch": batch, "salt": salt}
    for sql in _PREPARE:
        cursor.execute(sql, params if "$" in sql else None).fetchall()
    raw = cursor.sql(_TEXT).to_arrow_table()
    scrubbed = pa.table(
        {
            "id": raw.column("id").cast(pa.string()),
            "content": pa.array(
                [scrub(text) for text in raw.column("raw").to_pylist()], type=pa.string()
            ),
        }
    )
    cursor.register("export_direct_scrubbed", scrubbed)
    for sql in _SCRUBBED:
        cursor.execute(sql).fetchall()


def cleanup(cursor: duckdb.DuckDBPyConnection) -> None:
    with suppress(duckdb.Error):
        cursor.unregister("export_direct_scrubbed")
    for table in _TABLES:
        cursor.execute(f"DROP TABLE IF EXISTS {table}").fetchall()


# -- restore ------------------------------------------------------------------------------------

EMPTY_FEEDBACK = """
CREATE OR REPLACE TEMP TABLE restore_feedback (
    conversation_id VARCHAR, question_id VARCHAR, model VARCHAR, judge VARCHAR, turn INTEGER,
    attempt INTEGER, event_index BIGINT, aspect VARCHAR, value VARCHAR, current BOOLEAN,
    tstamp DOUBLE, filename VARCHAR
)
"""
"""The ``feedback`` table of a dataset published before direct chats existed: no rows."""


def restore_statements(batch_of_file: str) -> list[str]:
    """SQL that brings back published direct chats, after `arena.export.restore` has loaded and
    deduplicated ``restore_conversations`` (minus deleted ids, without the message lists) and
    ``restore_feedback``; ``$conversations`` is the list of the conversations config's files.

    Each author comes back as the session named after their pseudonym, sharing (they shared
    these chats); the chats come back ended and exported, so they are never exported again, and
    their share links keep working.
    """
    return [
        """
        DELETE FROM restore_feedback WHERE question_id IN (SELECT id FROM deletions)
        """,
        """
        CREATE OR REPLACE TEMP TABLE restore_feedback AS
        SELECT * FROM restore_feedback
        QUALIFY row_number() OVER (PARTITION BY conversation_id, event_index) = 1
        """,
        # Their message lists from the files (``$conversations``), from the copy of each chat
        # that restore_conversations kept.
        """
        CREATE OR REPLACE TEMP TABLE restore_direct AS
        SELECT c.*, f.messages FROM restore_conversations c
        JOIN read_parquet($conversations, filename = true, union_by_name = true) f
            ON f.conversation_id = c.conversation_id AND f.filename = c.filename
        WHERE c.mode = 'direct' AND f.mode = 'direct'
        """,
        """
        INSERT INTO sessions (id)
        SELECT DISTINCT 'restored-' || judge FROM restore_direct ON CONFLICT DO NOTHING
        """,
        """
        INSERT INTO consents
        SELECT DISTINCT 'restored-' || judge, true, 'restored', now() FROM restore_direct
        ON CONFLICT (session_id) DO UPDATE SET share = true
        """,
        """
        INSERT INTO conversations (id, session_id, mode, model, created_at)
        SELECT conversation_id, 'restored-' || judge, 'direct', model, to_timestamp(tstamp)
        FROM restore_direct
        """,
        """
        INSERT INTO messages (id, conversation_id, turn, attempt, role, content, created_at,
            model, finished, error_kind)
        SELECT uuid()::VARCHAR, d.conversation_id, m.turn, m.attempt, m.role, m.content,
            to_timestamp(m.tstamp), CASE WHEN m.role = 'assistant' THEN d.model END,
            CASE WHEN m.role = 'assistant' THEN m.finished END, m.error_kind
        FROM restore_direct d, unnest(d.messages) AS u(m)
        """,
        """
        INSERT INTO conversation_ends SELECT conversation_id, now() FROM restore_direct
        """,
        # Restored events get negative sequence numbers, in their published order: they sort
        # before any new event, and the sequence (which starts at 1) never collides with them.
        """
        INSERT INTO feedback_events (id, seq, conversation_id, message_id, session_id, aspect,
            value, created_at)
        SELECT uuid()::VARCHAR,
            row_number() OVER (ORDER BY f.conversation_id, f.event_index)
                - (SELECT count(*) + 1 FROM restore_feedback),
            f.conversation_id, m.id, 'restored-' || d.judge, f.aspect, f.value,
            to_timestamp(f.tstamp)
        FROM restore_feedback f
        JOIN restore_direct d ON d.conversation_id = f.conversation_id
        JOIN messages m ON m.conversation_id = f.conversation_id AND m.turn = f.turn
            AND m.attempt = f.attempt AND m.role = 'assistant'
        """,
        f"""
        INSERT INTO export_rows
        SELECT $target, 'direct', conversation_id, {batch_of_file} FROM restore_direct
        """,
    ]
