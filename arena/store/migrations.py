"""The store's schema, as an ordered list of migrations, and the runner that applies them on open.

Each migration runs in one transaction together with the bump of ``settings.schema_version``, so a
file is always at exactly one known version. Migrations are frozen once released: a change to the
schema is a new migration at the end of the list, never an edit of an old one, because files
created by the old code already ran it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from duckdb import DuckDBPyConnection


class StoreError(Exception):
    """The store cannot be used as asked; the message says why."""


class StoreVersionError(StoreError):
    """The database file was written by newer code; it is left untouched."""


@dataclass(frozen=True)
class Migration:
    version: int
    """The schema version a file is at once this step has run."""
    description: str
    apply: Callable[[DuckDBPyConnection], None]
    """Runs inside the migration's transaction; must not commit."""


WINNERS_V1 = ("model_a", "model_b", "tie", "tie (bothbad)")
"""The vote outcomes the version-1 CHECK admits: `arena.votes.Winner` when it was written.

Spelled out rather than read from `Winner`, so that changing the enum cannot silently give new files
a different constraint than old ones; a test holds the two equal.
"""


def _create_tables(con: DuckDBPyConnection) -> None:
    winners = ", ".join(f"'{w}'" for w in WINNERS_V1)
    # No FOREIGN KEYs: DuckDB refuses ALTER TABLE on a table that other tables reference, which
    # would block later migrations. The store checks references itself, with clearer messages.
    con.execute(
        f"""
        CREATE TABLE settings (
            key VARCHAR PRIMARY KEY,
            value VARCHAR NOT NULL
        );
        CREATE TABLE sessions (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            ip_hash VARCHAR,
            username VARCHAR
        );
        CREATE TABLE battles (
            id VARCHAR PRIMARY KEY,
            session_id VARCHAR NOT NULL,
            model_a VARCHAR NOT NULL,
            model_b VARCHAR NOT NULL,
            anony BOOLEAN NOT NULL,
            conversation_a VARCHAR NOT NULL UNIQUE,
            conversation_b VARCHAR NOT NULL UNIQUE,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE conversations (
            id VARCHAR PRIMARY KEY,
            session_id VARCHAR NOT NULL,
            mode VARCHAR NOT NULL CHECK (mode IN ('battle', 'side_by_side', 'direct')),
            model VARCHAR NOT NULL,
            battle_id VARCHAR,
            side VARCHAR CHECK (side IN ('a', 'b')),
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            CHECK ((battle_id IS NULL) = (side IS NULL)),
            CHECK ((battle_id IS NULL) = (mode = 'direct'))
        );
        CREATE TABLE messages (
            id VARCHAR PRIMARY KEY,
            conversation_id VARCHAR NOT NULL,
            turn INTEGER NOT NULL CHECK (turn >= 0),
            attempt INTEGER NOT NULL CHECK (attempt >= 0),
            role VARCHAR NOT NULL CHECK (role IN ('user', 'assistant')),
            content VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            model VARCHAR,
            parameters JSON,
            ttft_ms DOUBLE,
            total_ms DOUBLE,
            tokens INTEGER,
            finish_reason VARCHAR,
            error_kind VARCHAR,
            error_message VARCHAR,
            error_status INTEGER,
            finished BOOLEAN,
            -- Append-only: a regenerated reply is a new attempt, never a rewrite of an old one.
            UNIQUE (conversation_id, turn, role, attempt),
            CHECK (role = 'assistant' OR attempt = 0),
            CHECK ((role = 'assistant') = (model IS NOT NULL AND finished IS NOT NULL))
        );
        CREATE TABLE votes (
            id VARCHAR PRIMARY KEY,
            battle_id VARCHAR NOT NULL UNIQUE,
            session_id VARCHAR NOT NULL,
            winner VARCHAR NOT NULL CHECK (winner IN ({winners})),
            username VARCHAR,
            ip_hash VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """
    )
    # Generated here, once, by the OS's CSPRNG: DuckDB's random() is not meant for secrets.
    con.execute("INSERT INTO settings VALUES ('ip_salt', ?)", [secrets.token_hex(32)])


def _create_latest_messages(con: DuckDBPyConnection) -> None:
    # One definition of "the conversation as the user last saw it", shared by every reader.
    con.execute(
        """
        CREATE VIEW latest_messages AS
        SELECT * FROM messages
        QUALIFY attempt = max(attempt) OVER (PARTITION BY conversation_id, turn, role)
        """
    )


def _create_leaderboard_snapshots(con: DuckDBPyConnection) -> None:
    # One row per computed leaderboard; its table as JSON records, so new rating columns need no
    # migration. The rating-over-time plot reads the history back.
    con.execute(
        """
        CREATE TABLE leaderboard_snapshots (
            id VARCHAR PRIMARY KEY,
            computed_at TIMESTAMPTZ NOT NULL,
            category VARCHAR,
            style_control BOOLEAN NOT NULL,
            battles_used INTEGER NOT NULL CHECK (battles_used >= 0),
            records JSON NOT NULL
        );
        CREATE INDEX leaderboard_snapshots_view ON leaderboard_snapshots (category, style_control);
        """
    )


def _create_battle_tags(con: DuckDBPyConnection) -> None:
    # Prompt categories and language of a voted battle, written once the conversation is final;
    # the battles frame turns them into the rating engine's is_<category> columns.
    con.execute(
        """
        CREATE TABLE battle_tags (
            battle_id VARCHAR PRIMARY KEY,
            language VARCHAR,
            tags VARCHAR[] NOT NULL
        )
        """
    )


def _create_consents_and_export(con: DuckDBPyConnection) -> None:
    # consents: each session's latest share / don't-share choice; no row means "don't share".
    # deletions: battles a visitor deleted (ids only), published so copies can drop them too.
    # export_rows assigns every exported vote, snapshot and deletion to one numbered batch per
    # target, and export_batches says which batches the target confirmed: the export watermark.
    con.execute(
        """
        CREATE TABLE consents (
            session_id VARCHAR PRIMARY KEY,
            share BOOLEAN NOT NULL,
            terms_version VARCHAR NOT NULL,
            decided_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE deletions (
            id VARCHAR PRIMARY KEY,
            deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE export_batches (
            target VARCHAR NOT NULL,
            batch INTEGER NOT NULL CHECK (batch >= 1),
            planned_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            counts JSON,
            published_at TIMESTAMPTZ,
            commit_id VARCHAR,
            PRIMARY KEY (target, batch)
        );
        CREATE TABLE export_rows (
            target VARCHAR NOT NULL,
            kind VARCHAR NOT NULL CHECK (kind IN ('vote', 'snapshot', 'deletion')),
            row_id VARCHAR NOT NULL,
            batch INTEGER NOT NULL,
            PRIMARY KEY (target, kind, row_id)
        );
        """
    )
    # The key of the published voter pseudonyms (judge): secret, so they cannot be recomputed
    # from a guessed username or IP hash.
    con.execute("INSERT INTO settings VALUES ('judge_salt', ?)", [secrets.token_hex(32)])


SIGNAL_SOURCES_V6 = ("rules", "judge")
"""Who may label a turn in the version-6 CHECK: the rules of `arena.signals`, or a judge model."""


def _create_message_signals(con: DuckDBPyConnection) -> None:
    # One reading per (user turn, source): the signal the user's turn gives the assistant message
    # before it (the latest attempt of the previous turn), or none (polarity NULL: read, nothing
    # found), so a labelling pass only ever reads turns it has not read. Rules and a judge each
    # keep their own rows; nothing mixes them. The category vocabulary is left to the code
    # (`arena.signals.Category`), so a new category needs no migration.
    sources = ", ".join(f"'{s}'" for s in SIGNAL_SOURCES_V6)
    con.execute(
        f"""
        CREATE TABLE message_signals (
            user_message_id VARCHAR NOT NULL,
            source VARCHAR NOT NULL CHECK (source IN ({sources})),
            message_id VARCHAR NOT NULL,
            conversation_id VARCHAR NOT NULL,
            polarity VARCHAR CHECK (polarity IN ('sat', 'dsat')),
            category VARCHAR,
            evidence VARCHAR,
            evidence_start INTEGER,
            evidence_end INTEGER,
            labeller VARCHAR NOT NULL,
            labelled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (user_message_id, source),
            CHECK ((polarity IS NULL) = (category IS NULL)),
            CHECK (polarity IS NOT NULL OR evidence IS NULL),
            CHECK (evidence_start IS NULL OR (0 <= evidence_start
                AND evidence_start <= evidence_end))
        );
        CREATE INDEX message_signals_message ON message_signals (message_id);
        """
    )


EXPORT_KINDS_V7 = ("vote", "snapshot", "deletion", "direct")
"""What `export_rows` may assign to a batch from version 7 on: direct chats join votes, snapshots
and deletions. Spelled out, like `WINNERS_V1`, so that new files get the same constraint as
migrated ones."""


def _create_feedback_events(con: DuckDBPyConnection) -> None:
    # Per-message feedback of direct chats, as an append-only log: every like, dislike, edit and
    # comment, and every change or withdrawal of one (value NULL), is a row; the current state of
    # a message is the latest row of each aspect (`arena.chat_rules.fold`). ``seq`` orders events
    # strictly, even two within one clock tick. conversation_ends: chats their owner left (New
    # chat, another model), closed to changes and ready for export.
    kinds = ", ".join(f"'{kind}'" for kind in EXPORT_KINDS_V7)
    con.execute(
        f"""
        CREATE SEQUENCE feedback_events_seq;
        CREATE TABLE feedback_events (
            id VARCHAR PRIMARY KEY,
            seq BIGINT NOT NULL UNIQUE DEFAULT nextval('feedback_events_seq'),
            conversation_id VARCHAR NOT NULL,
            message_id VARCHAR NOT NULL,
            session_id VARCHAR NOT NULL,
            aspect VARCHAR NOT NULL CHECK (aspect IN ('rating', 'edit', 'comment')),
            value VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            CHECK (aspect <> 'rating' OR value IS NULL OR value IN ('like', 'dislike'))
        );
        CREATE INDEX feedback_events_conversation ON feedback_events (conversation_id);
        CREATE TABLE conversation_ends (
            conversation_id VARCHAR PRIMARY KEY,
            ended_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        -- A CHECK cannot be altered in DuckDB: export_rows is rebuilt with 'direct' allowed.
        CREATE TABLE export_rows_v7 (
            target VARCHAR NOT NULL,
            kind VARCHAR NOT NULL CHECK (kind IN ({kinds})),
            row_id VARCHAR NOT NULL,
            batch INTEGER NOT NULL,
            PRIMARY KEY (target, kind, row_id)
        );
        INSERT INTO export_rows_v7 SELECT target, kind, row_id, batch FROM export_rows;
        DROP TABLE export_rows;
        ALTER TABLE export_rows_v7 RENAME TO export_rows;
        """
    )


def _add_scrubbed_copies(con: DuckDBPyConnection) -> None:
    # Each message is scrubbed once, when it is stored (arena.pii, ~10 µs against seconds of model
    # latency), so that an export reads scrubbed text instead of scrubbing millions of messages.
    # content_scrubbed is NULL when scrubbing changed nothing (most messages: no second copy);
    # scrubbed_by is the arena.pii.VERSION that did it, NULL for rows never scrubbed (written
    # before this migration, or restored): the export scrubs those, and stale versions, itself.
    con.execute(
        """
        ALTER TABLE messages ADD COLUMN content_scrubbed VARCHAR;
        ALTER TABLE messages ADD COLUMN scrubbed_by VARCHAR;
        """
    )


def _index_messages_by_conversation(con: DuckDBPyConnection) -> None:
    # DuckDB serves point lookups from single-column ART indexes only, not from the compound
    # UNIQUE key: without this, every check of a new message (its turn, its attempt) scans the
    # whole table, 200 ms a reply at 2M messages; with it, 17 ms (measured).
    con.execute("CREATE INDEX messages_conversation ON messages (conversation_id)")


def _drop_battle_conversation_keys(con: DuckDBPyConnection) -> None:
    # battles.conversation_a/b were UNIQUE, but `Store.start_battle` writes both ids as new
    # conversations' primary keys in the same transaction, so no two battles can share one; the
    # two extra keys only cost time (a restore of 1M votes spent 1.5 s building them). DuckDB
    # cannot drop a constraint: the table is rebuilt, its rows and primary key kept.
    con.execute(
        """
        CREATE TABLE battles_v10 (
            id VARCHAR PRIMARY KEY,
            session_id VARCHAR NOT NULL,
            model_a VARCHAR NOT NULL,
            model_b VARCHAR NOT NULL,
            anony BOOLEAN NOT NULL,
            conversation_a VARCHAR NOT NULL,
            conversation_b VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        INSERT INTO battles_v10 SELECT id, session_id, model_a, model_b, anony, conversation_a,
            conversation_b, created_at FROM battles;
        DROP TABLE battles;
        ALTER TABLE battles_v10 RENAME TO battles;
        """
    )


def _number_conversations_and_messages(con: DuckDBPyConnection) -> None:
    # A number from one sequence for every conversation and message, in the order they are
    # written. A message is written after its conversation is visible, so it always has a
    # higher number than its conversation, clock or no clock: an export reads a batch's messages
    # from the batch's lowest conversation number on, and DuckDB skips the row groups below it
    # (their min-max index) instead of scanning every message ever stored. Rows from before
    # this migration are 0: a batch with one of them scans everything, as before.
    con.execute(
        """
        CREATE SEQUENCE write_order START 1;
        ALTER TABLE conversations ADD COLUMN seq BIGINT DEFAULT 0;
        ALTER TABLE conversations ALTER COLUMN seq SET DEFAULT nextval('write_order');
        ALTER TABLE conversations ALTER COLUMN seq SET NOT NULL;
        ALTER TABLE messages ADD COLUMN seq BIGINT DEFAULT 0;
        ALTER TABLE messages ALTER COLUMN seq SET DEFAULT nextval('write_order');
        -- DuckDB refuses SET NOT NULL on a table with an index: the index is built again.
        DROP INDEX messages_conversation;
        ALTER TABLE messages ALTER COLUMN seq SET NOT NULL;
        CREATE INDEX messages_conversation ON messages (conversation_id);
        """
    )


def _number_votes(con: DuckDBPyConnection) -> None:
    # Votes and battles get numbers from write_order too; each export batch keeps the highest
    # vote number its plan could see. `Store.record_vote` numbers and commits a vote under a lock
    # the plan's snapshot also takes (`Store.vote_snapshot`), so every vote a plan cannot see gets
    # a higher number than its watermark: the next plan reads only the votes above it instead of
    # matching every vote ever stored against export_rows. A vote also keeps its battle's
    # number, and a battle is written before its conversations and tags: the export reads a
    # batch's battles, conversations and tags from the lowest of those on (min-max index, as for
    # messages).
    # Old and restored rows are 0 (votes' battle number NULL: unknown) and old batches have no
    # watermark: they are matched or scanned whole, as before.
    con.execute(
        """
        ALTER TABLE votes ADD COLUMN seq BIGINT DEFAULT 0;
        ALTER TABLE votes ALTER COLUMN seq SET DEFAULT nextval('write_order');
        ALTER TABLE votes ADD COLUMN battle_seq BIGINT;
        ALTER TABLE battles ADD COLUMN seq BIGINT DEFAULT 0;
        ALTER TABLE battles ALTER COLUMN seq SET DEFAULT nextval('write_order');
        ALTER TABLE battle_tags ADD COLUMN seq BIGINT DEFAULT 0;
        ALTER TABLE battle_tags ALTER COLUMN seq SET DEFAULT nextval('write_order');
        ALTER TABLE export_batches ADD COLUMN votes_through BIGINT;
        """
    )


def _drop_export_rows_key(con: DuckDBPyConnection) -> None:
    # export_rows' primary key never fires: a plan assigns only rows no batch of its target
    # holds (votes above the last watermark, or not matched yet; snapshots, deletions and direct
    # chats not matched yet), one job at a time (arena.export.push.EXPORT_LOCK), and a restore
    # writes each published row once. Its index cost a first batch of 1M votes 2 s of its plan
    # (0.4 s without), and a restore of 1M 0.6-2.2 s of key building. DuckDB cannot drop a
    # constraint: the table is rebuilt.
    kinds = ", ".join(f"'{kind}'" for kind in EXPORT_KINDS_V7)
    con.execute(
        f"""
        CREATE TABLE export_rows_v13 (
            target VARCHAR NOT NULL,
            kind VARCHAR NOT NULL CHECK (kind IN ({kinds})),
            row_id VARCHAR NOT NULL,
            batch INTEGER NOT NULL
        );
        INSERT INTO export_rows_v13 SELECT target, kind, row_id, batch FROM export_rows;
        DROP TABLE export_rows;
        ALTER TABLE export_rows_v13 RENAME TO export_rows;
        """
    )


def _drop_message_id_key(con: DuckDBPyConnection) -> None:
    # Nothing looks a message up by its id (the store reads messages by conversation, through
    # messages_conversation; other tables join on ids in bulk), and every id is a uuid4 or, in
    # a restore, a number from a sequence: the primary key only cost time. Building it was a
    # restore's third messages key (2.0-2.5 s at 4M messages), on the critical path, and every
    # message written paid an ART insert. The slot key (conversation, turn, role, attempt), the
    # guard against two writers, stays. DuckDB cannot drop a constraint: the table is rebuilt,
    # its rows, CHECKs, UNIQUE and index kept.
    con.execute(
        """
        CREATE TABLE messages_v14 (
            id VARCHAR NOT NULL,
            conversation_id VARCHAR NOT NULL,
            turn INTEGER NOT NULL CHECK (turn >= 0),
            attempt INTEGER NOT NULL CHECK (attempt >= 0),
            role VARCHAR NOT NULL CHECK (role IN ('user', 'assistant')),
            content VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            model VARCHAR,
            parameters JSON,
            ttft_ms DOUBLE,
            total_ms DOUBLE,
            tokens INTEGER,
            finish_reason VARCHAR,
            error_kind VARCHAR,
            error_message VARCHAR,
            error_status INTEGER,
            finished BOOLEAN,
            content_scrubbed VARCHAR,
            scrubbed_by VARCHAR,
            seq BIGINT NOT NULL DEFAULT nextval('write_order'),
            UNIQUE (conversation_id, turn, role, attempt),
            CHECK (role = 'assistant' OR attempt = 0),
            CHECK ((role = 'assistant') = (model IS NOT NULL AND finished IS NOT NULL))
        );
        INSERT INTO messages_v14 SELECT id, conversation_id, turn, attempt, role, content,
            created_at, model, parameters, ttft_ms, total_ms, tokens, finish_reason, error_kind,
            error_message, error_status, finished, content_scrubbed, scrubbed_by, seq
        FROM messages;
        DROP TABLE messages;
        ALTER TABLE messages_v14 RENAME TO messages;
        CREATE INDEX messages_conversation ON messages (conversation_id);
        """
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "settings, sessions, battles, conversations, messages and votes", _create_tables),
    Migration(2, "latest_messages: the latest attempt of every turn", _create_latest_messages),
    Migration(3, "leaderboard_snapshots: computed leaderboards", _create_leaderboard_snapshots),
    Migration(4, "battle_tags: categories and language of voted battles", _create_battle_tags),
    Migration(
        5, "consents, deletions, export batches and the judge salt", _create_consents_and_export
    ),
    Migration(6, "message_signals: SAT/DSAT read from the next user turn", _create_message_signals),
    Migration(
        7,
        "feedback_events and conversation_ends (direct chat); export_rows takes direct chats",
        _create_feedback_events,
    ),
    Migration(8, "messages: scrubbed copy of the text, written with it", _add_scrubbed_copies),
    Migration(9, "messages: index by conversation", _index_messages_by_conversation),
    Migration(
        10,
        "battles: no UNIQUE on conversation_a/b (the conversations' keys)",
        _drop_battle_conversation_keys,
    ),
    Migration(
        11,
        "conversations and messages: numbered in write order",
        _number_conversations_and_messages,
    ),
    Migration(
        12,
        "votes, battles and tags: numbered in write order; export batches keep a watermark",
        _number_votes,
    ),
    Migration(
        13, "export_rows: no primary key (a plan assigns each row once)", _drop_export_rows_key
    ),
    Migration(14, "messages: no primary key on their ids (never looked up)", _drop_message_id_key),
)
LATEST_VERSION = MIGRATIONS[-1].version


def read_version(con: DuckDBPyConnection, path: Path) -> int:
    """The schema version of an open file: 0 for an empty one. Reads only."""
    tables = {
        name
        for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() AND schema_name = 'main'"
        ).fetchall()
    }
    if not tables:
        return 0
    row = (
        con.execute("SELECT value FROM settings WHERE key = 'schema_version'").fetchone()
        if "settings" in tables
        else None
    )
    if row is None:
        raise StoreError(
            f"{path} is a DuckDB file but not an arena store (it has no schema version); "
            "point the arena at another data folder"
        )
    return int(row[0])


def refuse_newer(path: Path, version: int, latest: int = LATEST_VERSION) -> None:
    """Raise `StoreVersionError` if the file is at a version this code does not know."""
    if version > latest:
        raise StoreVersionError(
            f"{path} is at schema version {version}, but this code knows versions up to {latest}: "
            "it was written by a newer release of the arena. Run that release (or newer), or "
            "point this one at another data folder. The file was not modified."
        )


def migrate(
    con: DuckDBPyConnection, path: Path, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Bring the file up to the last of ``migrations``; returns the version it ends at."""
    version = read_version(con, path)
    refuse_newer(path, version, migrations[-1].version)
    for migration in migrations:
        if migration.version <= version:
            continue
        con.begin()
        try:
            migration.apply(con)
            con.execute(
                "INSERT OR REPLACE INTO settings VALUES ('schema_version', ?)",
                [str(migration.version)],
            )
        except BaseException:
            con.rollback()
            raise
        con.commit()
        version = migration.version
    return version
