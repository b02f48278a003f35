"""The arena's record: sessions, battles, conversations, messages and votes in one DuckDB file.

Every method is synchronous, safe to call from any thread, and has committed its write when it
returns. DuckDB 2 refuses a connection that is busy in another thread, so the store keeps one
connection to the file and runs each call on a fresh cursor of it (cursors share the database and
see each other's commits). Ids are UUID strings generated here, except the session and battle ids,
which the caller owns. Timestamps are UTC (``TIMESTAMPTZ``) and come back as aware datetimes.
Client addresses never reach the store: only their salted hash (see `arena.privacy`).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypedDict

import duckdb
import pandas as pd

from arena import pii
from arena.categories import TAGS
from arena.replies import Reply
from arena.store import bulk
from arena.store.bulk import DuplicateKeys
from arena.store.migrations import (
    LATEST_VERSION,
    StoreError,
    StoreVersionError,
    migrate,
    read_version,
    refuse_newer,
)
from arena.votes import Winner

__all__ = [
    "LATEST_VERSION",
    "BattleOpening",
    "Consent",
    "DuplicateKeys",
    "LeaderboardSnapshot",
    "RecordRejected",
    "ReplyRecord",
    "Store",
    "StoreError",
    "StoreVersionError",
    "VoteRecord",
    "VoteRejected",
]

FILE_NAME = "arena.duckdb"
_DIRECT_MODES = ("direct",)
"""Modes of conversations outside a battle; battle conversations come from `Store.start_battle`."""


class RecordRejected(StoreError, ValueError):
    """A write the store refused: an unknown id, an out-of-order turn, a duplicate."""


class VoteRejected(RecordRejected):
    """A vote the store refused: unknown battle, another session's battle, or a second vote."""


@dataclass(frozen=True)
class BattleOpening:
    """A battle's first turn as `Store.open_battles` records it: the session and its choice, the
    battle, and the prompt both sides were sent."""

    battle_id: str
    session_id: str
    model_a: str
    model_b: str
    prompt: str
    anony: bool = True
    ip_hash: str | None = None
    username: str | None = None
    share: bool | None = None
    """The session's data-sharing choice made before this message (None: none), recorded under
    ``terms_version`` only if the session has none by then: a choice made later is recorded at
    once, and must win whichever of the two writes lands first."""
    terms_version: str | None = None


@dataclass(frozen=True)
class ReplyRecord:
    """A reply as `Store.add_replies` records it, with what `Store.add_reply` takes."""

    conversation_id: str
    turn: int
    attempt: int
    reply: Reply
    parameters: dict[str, Any]


class VoteRecord(TypedDict):
    id: str
    battle_id: str
    session_id: str
    winner: Winner
    username: str | None
    ip_hash: str | None
    created_at: datetime


class LeaderboardSnapshot(TypedDict):
    computed_at: datetime
    category: str | None
    style_control: bool
    battles_used: int
    records: list[dict[str, Any]]
    """The leaderboard table, one dict per model (model, rating, ci_lower, ci_upper, ...)."""


class Consent(TypedDict):
    share: bool
    """True: the session's text may be published; False: never (its votes still count)."""
    terms_version: str
    decided_at: datetime


class Store:
    """The arena's DuckDB file. Open with `Store.open(data_dir)`; close, or use as a context."""

    @classmethod
    def open(cls, data_dir: Path) -> Store:
        """The store in ``data_dir`` (created if missing), in the file ``arena.duckdb``."""
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / FILE_NAME)

    def __init__(self, path: Path) -> None:
        """Open (or create) the file at ``path`` and migrate it to the latest schema.

        Raises `StoreVersionError` for a file written by newer code, without touching it.
        """
        self.path = Path(path)
        if self.path.exists():
            # A read-only look first: a file we must refuse is then never opened for writing
            # (a read-write open may replay and checkpoint its write-ahead log).
            try:
                probe = duckdb.connect(str(self.path), read_only=True)
            except duckdb.ConnectionException as exc:
                raise StoreError(
                    f"{self.path} is already open in this process: share that Store"
                ) from exc
            with probe:
                refuse_newer(self.path, read_version(probe, self.path))
        self._lock = threading.Lock()
        self._batch = threading.local()
        # Held for the whole of a vote's transaction (its INSERT numbers it), and while
        # `vote_snapshot` takes its snapshot: see there.
        self._vote_commit = threading.Lock()
        con = duckdb.connect(str(self.path))
        try:
            # Aware datetimes come back in the session time zone: make that UTC for every cursor.
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            # Keys of a bulk load cut short by a crash, before any migration changes the tables.
            bulk.add_keys(con)
            self._schema_version = migrate(con, self.path)
            row = con.execute("SELECT value FROM settings WHERE key = 'ip_salt'").fetchone()
        except BaseException:
            con.close()
            raise
        assert row is not None, "migration 1 writes the salt"
        self._ip_salt: str = row[0]
        self._con: duckdb.DuckDBPyConnection | None = con

    @property
    def ip_salt(self) -> str:
        """The secret for `arena.privacy.hash_ip`, made when the file was created."""
        return self._ip_salt

    @property
    def schema_version(self) -> int:
        return self._schema_version

    @property
    def judge_salt(self) -> str:
        """The secret key of the voter pseudonyms published in exports (`arena.export`)."""
        with self._cursor() as cursor:
            return _fetch_one(cursor, "SELECT value FROM settings WHERE key = 'judge_salt'", [])[0]

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own, for bulk SQL readers and writers (`arena.export`)."""
        with self._new_cursor() as cursor:
            yield cursor

    @contextmanager
    def vote_snapshot(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor in a begun transaction that sees every vote numbered so far (``votes.seq``).

        `record_vote` holds a lock from before the INSERT that numbers a vote to its COMMIT; this
        transaction takes its snapshot under the same lock, so a vote it cannot see is numbered
        above every vote it can, whatever order Gradio's threads commit in: the export finds the
        votes it has not taken yet as those above its last watermark (`arena.export.push`).
        The caller commits or rolls back; what it leaves open is rolled back.
        """
        with self._new_cursor() as cursor:
            with self._vote_commit:
                cursor.begin()
                # DuckDB takes the snapshot at the transaction's first read of the file.
                cursor.execute("SELECT count(*) FROM settings").fetchall()
            yield cursor

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run this thread's store calls inside one transaction, committed when the block ends.

        For a writer with many small writes queued (`arena.store.writer`): a DuckDB commit costs
        milliseconds, a statement inside an open transaction a fraction of one. Everything in
        the block is rolled back if anything in it raises (the error propagates). A statement
        that failed inside the block, even if the error was caught, leaves DuckDB's transaction
        aborted, and DuckDB then takes a commit as a rollback without a word: the batch checks
        first and raises `StoreError` instead, so no write is lost unnoticed. Other threads'
        calls are not part of it. Batches do not nest.
        """
        if self._batch_cursor() is not None:
            raise StoreError("a store batch is already open in this thread")
        with self._new_cursor() as cursor:
            cursor.begin()
            self._batch.cursor = cursor
            try:
                yield
            except BaseException:
                cursor.rollback()
                raise
            finally:
                self._batch.cursor = None
            try:
                cursor.execute("SELECT 1")
            except duckdb.TransactionException as exc:
                cursor.rollback()
                raise StoreError(
                    "a statement failed inside this batch: nothing of it was written"
                ) from exc
            cursor.commit()

    @contextmanager
    def bulk_load(
        self, tables: Sequence[str], *, unique_columns: Collection[str] = ()
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A transaction to fill ``tables`` with millions of rows: their keys are built after it.

        Inside the block the tables have no primary keys, UNIQUE constraints or indexes (their
        other constraints hold); at its end, rows that would break a key raise `DuplicateKeys`
        and nothing of the block is written. Otherwise it commits, and the keys and indexes are
        added back before this returns (see `arena.store.bulk` for why and what it saves). Only
        while nothing else writes to these tables. ``unique_columns`` (``table.column``): those
        the block fills only with values that cannot repeat; a key on one alone goes unchecked.
        """
        with self._new_cursor() as cursor:
            cursor.begin()
            try:
                bulk.drop_keys(cursor, tables)
                yield cursor
                bulk.check_keys(cursor, unique_columns)
            except BaseException:
                cursor.rollback()
                raise
            cursor.commit()
            bulk.add_keys(cursor)

    def close(self) -> None:
        """Close the file; further calls raise `StoreError`. Closing twice is harmless."""
        with self._lock:
            con, self._con = self._con, None
        if con is not None:
            con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The cursor for one call: the thread's open `batch`, or else a cursor of its own, on
        which each statement commits on its own."""
        batch = self._batch_cursor()
        if batch is not None:
            yield batch
            return
        with self._new_cursor() as cursor:
            yield cursor

    def _batch_cursor(self) -> duckdb.DuckDBPyConnection | None:
        """The cursor of this thread's open `batch`, if there is one."""
        return getattr(self._batch, "cursor", None)

    @contextmanager
    def _new_cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            if self._con is None:
                raise StoreError(f"the store {self.path} is closed")
            cursor = self._con.cursor()
        with cursor:
            yield cursor

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside a transaction, committed on exit, rolled back on an exception; inside
        a `batch`, the batch's transaction."""
        batch = self._batch_cursor()
        if batch is not None:
            yield batch
            return
        with self._new_cursor() as cursor:
            cursor.begin()
            try:
                yield cursor
            except BaseException:
                cursor.rollback()
                raise
            cursor.commit()

    def record_session(self, session_id: str, *, ip_hash: str | None, username: str | None) -> None:
        """Note a browser session. Idempotent: the first record of a session id is kept."""
        _require_id("session_id", session_id)
        # The same session recorded at the same moment by another thread trips the key.
        with (
            self._cursor() as cursor,
            suppress(duckdb.ConstraintException, duckdb.TransactionException),
        ):
            cursor.execute(
                "INSERT INTO sessions (id, ip_hash, username) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                [session_id, ip_hash, username],
            )

    def start_battle(
        self, *, battle_id: str, session_id: str, model_a: str, model_b: str, anony: bool = True
    ) -> tuple[str, str]:
        """Create a battle and its two conversations; returns (conversation_a, conversation_b).

        An anonymous battle's conversations have mode ``battle``, a named one's ``side_by_side``.
        """
        _require_id("battle_id", battle_id)
        _require_id("model_a", model_a)
        _require_id("model_b", model_b)
        conversation_a, conversation_b = str(uuid.uuid4()), str(uuid.uuid4())
        mode = "battle" if anony else "side_by_side"
        try:
            with self._transaction() as cursor:
                self._require_session(cursor, session_id)
                # Before the conversations, so they are numbered above it (migration 12).
                cursor.execute(
                    "INSERT INTO battles (id, session_id, model_a, model_b, anony, "
                    "conversation_a, conversation_b) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        battle_id,
                        session_id,
                        model_a,
                        model_b,
                        anony,
                        conversation_a,
                        conversation_b,
                    ],
                )
                cursor.executemany(
                    "INSERT INTO conversations (id, session_id, mode, model, battle_id, side) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        [conversation_a, session_id, mode, model_a, battle_id, "a"],
                        [conversation_b, session_id, mode, model_b, battle_id, "b"],
                    ],
                )
        except (duckdb.ConstraintException, duckdb.TransactionException) as exc:
            raise RecordRejected(f"battle {battle_id!r} already exists") from exc
        return conversation_a, conversation_b

    def open_battles(self, openings: Sequence[BattleOpening]) -> list[tuple[str, str]]:
        """Record the first turn of many battles at once; returns each one's (conversation_a,
        conversation_b), in order.

        The same rows as `record_session`, `start_battle` and each side's `add_user_message` of
        turn 0, and the sessions' choices (see `BattleOpening.share`), in at most five
        statements whatever the number of battles: a DuckDB statement costs
        about half a millisecond of CPU here, and a burst of new battles would otherwise spend
        a core on them while their replies start. All or nothing: a battle id already stored
        is `RecordRejected`, and nothing is written. Outside a batch, a write that fails on a
        row another thread committed meanwhile is tried once more.
        """
        if not openings:
            return []
        sessions: dict[str, list[object]] = {}
        consents: dict[str, list[object]] = {}
        battles, conversations, messages = [], [], []
        ids = []
        for o in openings:
            for name in ("battle_id", "session_id", "model_a", "model_b"):
                _require_id(name, getattr(o, name))
            # The first record of a session is kept, as by record_session.
            sessions.setdefault(o.session_id, [o.session_id, o.ip_hash, o.username])
            if o.share is not None:
                _require_id("terms_version", o.terms_version)
                consents.setdefault(o.session_id, [o.session_id, o.share, o.terms_version])
            pair = (str(uuid.uuid4()), str(uuid.uuid4()))
            ids.append(pair)
            mode = "battle" if o.anony else "side_by_side"
            battles.append([o.battle_id, o.session_id, o.model_a, o.model_b, o.anony, *pair])
            scrubbed = _scrubbed(o.prompt)
            for conversation, model, side in zip(pair, (o.model_a, o.model_b), "ab", strict=True):
                conversations.append([conversation, o.session_id, mode, model, o.battle_id, side])
                messages.append([str(uuid.uuid4()), conversation, o.prompt, *scrubbed.values()])

        def write() -> None:
            with self._transaction() as cursor:
                _insert_rows(
                    cursor,
                    "INSERT INTO sessions (id, ip_hash, username) VALUES {} "
                    "ON CONFLICT (id) DO NOTHING",
                    list(sessions.values()),
                )
                if consents:
                    _insert_rows(
                        cursor,
                        "INSERT INTO consents (session_id, share, terms_version) VALUES {} "
                        "ON CONFLICT (session_id) DO NOTHING",
                        list(consents.values()),
                    )
                # Battles before their conversations, so they are numbered below them
                # (migration 12), as by start_battle.
                _insert_rows(
                    cursor,
                    "INSERT INTO battles (id, session_id, model_a, model_b, anony, "
                    "conversation_a, conversation_b) VALUES {}",
                    battles,
                )
                _insert_rows(
                    cursor,
                    "INSERT INTO conversations (id, session_id, mode, model, battle_id, side) "
                    "VALUES {}",
                    conversations,
                )
                _insert_rows(
                    cursor,
                    "INSERT INTO messages (id, conversation_id, content, content_scrubbed, "
                    "scrubbed_by, turn, attempt, role) SELECT *, 0, 0, 'user' FROM (VALUES {})",
                    messages,
                )

        errors = (duckdb.ConstraintException, duckdb.TransactionException)
        try:
            try:
                write()
            except errors:
                if self._batch_cursor() is not None:
                    raise  # the writer replays the batch's writes one by one
                # A session's choice clicked meanwhile commits first and fails this write on its
                # key: once more, and ON CONFLICT then sees it.
                write()
        except errors as exc:
            ids_given = [o.battle_id for o in openings]
            raise RecordRejected(f"battles {ids_given!r} were not recorded: {exc}") from exc
        return ids

    def start_conversation(self, *, session_id: str, mode: str, model: str) -> str:
        """Create a conversation outside any battle (direct chat); returns its id."""
        if mode not in _DIRECT_MODES:
            raise RecordRejected(
                f"mode {mode!r} cannot start a conversation on its own: use one of "
                f"{', '.join(_DIRECT_MODES)} (battle conversations come from start_battle)"
            )
        _require_id("model", model)
        conversation_id = str(uuid.uuid4())
        with self._transaction() as cursor:
            self._require_session(cursor, session_id)
            cursor.execute(
                "INSERT INTO conversations (id, session_id, mode, model) VALUES (?, ?, ?, ?)",
                [conversation_id, session_id, mode, model],
            )
        return conversation_id

    def add_user_message(self, conversation_id: str, *, turn: int, content: str) -> str:
        """Append the user message of ``turn`` (the next turn: 0, 1, ...); returns its id."""
        message_id = str(uuid.uuid4())
        with self._cursor() as cursor:
            row = _insert_checked(
                cursor,
                f"""
                INSERT INTO messages (id, conversation_id, turn, attempt, role, content,
                    content_scrubbed, scrubbed_by)
                SELECT $id, c.id, $turn, 0, 'user', $content, $scrubbed, $scrubbed_by
                FROM conversations c
                WHERE c.id = $conversation AND $turn = (
                    SELECT count(*) FILTER (m.role = 'user') FROM messages m
                    WHERE {_BY_CONVERSATION}
                )
                RETURNING id
                """,
                {
                    "id": message_id,
                    "conversation": conversation_id,
                    "turn": turn,
                    "content": content,
                    **_scrubbed(content),
                },
                f"conversation {conversation_id!r} already has a user message for turn {turn}",
            )
            if row is None:
                self._require_conversation(cursor, conversation_id)
                (turns,) = _fetch_one(
                    cursor,
                    "SELECT count(*) FILTER (m.role = 'user') FROM messages m "
                    f"WHERE {_BY_CONVERSATION}",
                    {"conversation": conversation_id},
                )
                raise RecordRejected(
                    f"conversation {conversation_id!r} has {turns} user turn(s), so its next user "
                    f"message is turn {turns}, not {turn}"
                )
        return message_id

    def add_reply(
        self,
        conversation_id: str,
        *,
        turn: int,
        attempt: int,
        reply: Reply,
        parameters: dict[str, Any],
    ) -> str:
        """Append a model's reply to ``turn``, finished or not; returns its id.

        ``attempt`` is 0 for the first reply to a turn and one more for each regeneration; the
        earlier attempts stay. ``reply.model`` must be the conversation's model.
        """
        values = _reply_values(reply, parameters)
        message_id = str(uuid.uuid4())
        with self._cursor() as cursor:
            row = _insert_checked(
                cursor,
                f"""
                INSERT INTO messages (id, conversation_id, turn, attempt, role, {_REPLY_COLUMNS})
                SELECT $id, $conversation, $turn, $attempt, 'assistant', $content, $model,
                    $parameters, $ttft_ms, $total_ms, $tokens, $finish_reason, $error_kind,
                    $error_message, $error_status, $finished, $scrubbed, $scrubbed_by
                -- The conversation looked up by its id alone: with c.model = $model beside it,
                -- the scan would read every conversation (see _BY_CONVERSATION).
                WHERE $model = (SELECT c.model FROM conversations c WHERE c.id = $conversation)
                    AND (
                        SELECT count(*) FILTER (m.turn = $turn AND m.role = 'user')
                        FROM messages m WHERE {_BY_CONVERSATION}
                    ) > 0
                    AND $attempt = (
                        SELECT count(*) FILTER (m.turn = $turn AND m.role = 'assistant')
                        FROM messages m WHERE {_BY_CONVERSATION}
                    )
                RETURNING id
                """,
                {
                    "id": message_id,
                    "conversation": conversation_id,
                    "turn": turn,
                    "attempt": attempt,
                    **values,
                },
                f"conversation {conversation_id!r} already has attempt {attempt} of turn {turn}",
            )
            if row is None:
                self._explain_rejected_reply(cursor, conversation_id, turn, attempt, reply.model)
        return message_id

    def add_replies(self, records: Sequence[ReplyRecord]) -> list[str]:
        """Append many replies at once; returns their ids, in order.

        Each is checked as by `add_reply`, counting the attempts of the records before it, and
        all are written in one statement, all or nothing: the replies of a burst of battles end
        together, and one statement each would cost the writer a core for a while (see
        `open_battles`).
        """
        if not records:
            return []
        rows = [
            [
                str(uuid.uuid4()),
                r.conversation_id,
                r.turn,
                r.attempt,
                *_reply_values(r.reply, r.parameters).values(),
            ]
            for r in records
        ]
        conversations = sorted({r.conversation_id for r in records})
        marks = ", ".join("?" * len(conversations))
        with self._transaction() as cursor:
            # IN lists of constants: DuckDB looks them up in the keys (migration 9).
            models = dict(
                cursor.execute(
                    f"SELECT id, model FROM conversations WHERE id IN ({marks})", conversations
                ).fetchall()
            )
            counts = {
                (conversation, turn, role): count
                for conversation, turn, role, count in cursor.execute(
                    "SELECT conversation_id, turn, role, count(*) FROM messages "
                    f"WHERE conversation_id IN ({marks}) GROUP BY ALL",
                    conversations,
                ).fetchall()
            }
            for r in records:
                key = (r.conversation_id, r.turn)
                if models.get(r.conversation_id) != r.reply.model or not counts.get((*key, "user")):
                    self._explain_rejected_reply(
                        cursor, r.conversation_id, r.turn, r.attempt, r.reply.model
                    )
                attempts = counts.get((*key, "assistant"), 0)
                if r.attempt != attempts:
                    raise _out_of_order(r.conversation_id, r.turn, attempts, r.attempt)
                counts[(*key, "assistant")] = attempts + 1
            try:
                _insert_rows(
                    cursor,
                    f"INSERT INTO messages (id, conversation_id, turn, attempt, "
                    f"{_REPLY_COLUMNS}, role) SELECT *, 'assistant' FROM (VALUES {{}})",
                    rows,
                )
            except (duckdb.ConstraintException, duckdb.TransactionException) as exc:
                raise RecordRejected(f"the replies were not recorded: {exc}") from exc
        return [row[0] for row in rows]

    def record_vote(
        self,
        *,
        battle_id: str,
        session_id: str,
        winner: Winner,
        username: str | None,
        ip_hash: str | None,
    ) -> str:
        """Record the one vote of a battle; returns its id.

        Raises `VoteRejected` if the battle is unknown, belongs to another session or already
        has a vote: checked in the database, behind the service's own checks. The vote is
        committed when this returns, so it cannot run inside a `batch` (`StoreError`).
        """
        try:
            winner = Winner(winner)
        except ValueError:
            raise VoteRejected(
                f"{winner!r} is not a vote; use one of {', '.join(w.value for w in Winner)}"
            ) from None
        if self._batch_cursor() is not None:
            raise StoreError("record_vote commits the vote itself: call it outside a store batch")
        vote_id = str(uuid.uuid4())
        try:
            with self._vote_commit, self._transaction() as cursor:
                row = cursor.execute(
                    "SELECT b.session_id, v.id IS NOT NULL, b.seq FROM battles b "
                    "LEFT JOIN votes v ON v.battle_id = b.id WHERE b.id = ?",
                    [battle_id],
                ).fetchone()
                if row is None:
                    raise VoteRejected(f"no battle {battle_id!r} to vote on")
                owner, voted, battle_seq = row
                if owner != session_id:
                    raise VoteRejected(f"battle {battle_id!r} belongs to another session")
                if voted:
                    raise VoteRejected(f"battle {battle_id!r} already has a vote")
                cursor.execute(
                    "INSERT INTO votes (id, battle_id, session_id, winner, username, ip_hash, "
                    "battle_seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [vote_id, battle_id, session_id, winner.value, username, ip_hash, battle_seq],
                )
        except (duckdb.ConstraintException, duckdb.TransactionException) as exc:
            # Another thread's vote on the same battle got in between the check and the insert.
            raise VoteRejected(f"battle {battle_id!r} already has a vote") from exc
        return vote_id

    def vote_for(self, battle_id: str) -> VoteRecord | None:
        """The vote on a battle, or None if it has none (or there is no such battle)."""
        with self._cursor() as cursor:
            row = cursor.execute(
                "SELECT id, battle_id, session_id, winner, username, ip_hash, created_at "
                "FROM votes WHERE battle_id = ?",
                [battle_id],
            ).fetchone()
        if row is None:
            return None
        vote_id, battle_id, session_id, winner, username, ip_hash, created_at = row
        return VoteRecord(
            id=vote_id,
            battle_id=battle_id,
            session_id=session_id,
            winner=Winner(winner),
            username=username,
            ip_hash=ip_hash,
            created_at=created_at,
        )

    def battles_frame(self) -> pd.DataFrame:
        """Every voted battle, in vote order, in the lmsys arena format the rating engine reads.

        Columns: question_id (the battle id), model_a, model_b, winner, judge, anony, tstamp
        (vote time, epoch seconds), turn (user turns), conversation_a and conversation_b (lists
        of {"role", "content"}, the latest attempt of each turn), language (of the user turns,
        once tagged), has_error (a latest reply failed or did not finish, or a turn has no
        reply), and one
        ``is_<category>`` boolean per category (`arena.categories.TAGS`) that some battle has.

        judge is a pseudonymous voter key: the username of a logged-in voter, else ``ip:`` and
        the salted IP hash (stable across sessions from one address, so per-voter caps and
        anomaly tests work), else ``session:`` and the session id. Whoever publishes the frame
        decides whether usernames may appear.
        """
        with self._cursor() as cursor:
            frame = cursor.execute(_BATTLES_FRAME_SQL).df()
        # DuckDB hands lists over as numpy arrays; the lmsys format has plain lists.
        for column in ("conversation_a", "conversation_b"):
            frame[column] = [list(messages) for messages in frame[column]]
        # A category no battle has would offer the leaderboard an empty view.
        unused = [c for c in frame.columns if c.startswith("is_") and not frame[c].any()]
        return frame.drop(columns=unused)

    def record_consent(self, session_id: str, *, share: bool, terms_version: str) -> None:
        """Record a session's choice to share its text or not; a later choice replaces it."""
        _require_id("session_id", session_id)
        with self._cursor() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO consents VALUES (?, ?, ?, now())",
                [session_id, share, terms_version],
            )

    def consent_of(self, session_id: str) -> Consent | None:
        """The session's recorded choice, or None if it never chose (which means: not shared)."""
        with self._cursor() as cursor:
            row = cursor.execute(
                "SELECT share, terms_version, decided_at FROM consents WHERE session_id = ?",
                [session_id],
            ).fetchone()
        if row is None:
            return None
        share, terms_version, decided_at = row
        return Consent(share=share, terms_version=terms_version, decided_at=decided_at)

    def delete_contributions(self, *, session_id: str, username: str | None) -> int:
        """Delete what a visitor contributed; returns how many battles went.

        Everything of the session and, for a logged-in visitor, of every session of that
        username: battles, their votes, tags, conversations (direct chats too, with their
        feedback), messages and their signals. The ids of the battles, and of the direct chats
        that were exported, are kept in ``deletions``, so the export can tell copies of the
        dataset to drop them.
        """
        _require_id("session_id", session_id)
        with self._transaction() as cursor:
            sessions = [session_id]
            if username:
                sessions += [
                    row[0]
                    for row in cursor.execute(
                        "SELECT id FROM sessions WHERE username = ?", [username]
                    ).fetchall()
                ]
            battles = [
                row[0]
                for row in cursor.execute(
                    "SELECT id FROM battles WHERE session_id IN (SELECT unnest($sessions))",
                    {"sessions": sessions},
                ).fetchall()
            ]
            owned = {"sessions": sessions, "battles": battles}
            for sql in (
                # Direct chats that reached the dataset are listed for deletion like battles.
                "INSERT OR IGNORE INTO deletions (id) SELECT id FROM conversations "
                "WHERE mode = 'direct' AND session_id IN (SELECT unnest($sessions)) "
                "AND id IN (SELECT row_id FROM export_rows WHERE kind = 'direct')",
                "DELETE FROM feedback_events WHERE session_id IN (SELECT unnest($sessions))",
                # Signals quote the user's words (their evidence span): they go with the turns.
                "DELETE FROM message_signals WHERE conversation_id IN (SELECT id FROM "
                "conversations WHERE session_id IN (SELECT unnest($sessions)))",
                "DELETE FROM conversation_ends WHERE conversation_id IN (SELECT id FROM "
                "conversations WHERE session_id IN (SELECT unnest($sessions)))",
                "DELETE FROM messages WHERE conversation_id IN (SELECT id FROM conversations "
                "WHERE session_id IN (SELECT unnest($sessions)))",
                "DELETE FROM conversations WHERE session_id IN (SELECT unnest($sessions))",
                "DELETE FROM votes WHERE battle_id IN (SELECT unnest($battles))",
                "DELETE FROM battle_tags WHERE battle_id IN (SELECT unnest($battles))",
                "DELETE FROM battles WHERE id IN (SELECT unnest($battles))",
                "INSERT OR IGNORE INTO deletions (id) SELECT unnest($battles)",
            ):
                names = {name: owned[name] for name in owned if f"${name}" in sql}
                cursor.execute(sql, names)
        return len(battles)

    def tag_battle(self, battle_id: str, *, tags: Collection[str], language: str | None) -> None:
        """Record a battle's prompt categories and language (replacing earlier ones)."""
        _require_id("battle_id", battle_id)
        with self._cursor() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO battle_tags (battle_id, language, tags) VALUES (?, ?, ?)",
                [battle_id, language, sorted(tags)],
            )

    def vote_count(self) -> int:
        """How many votes are stored: a cheap test of whether a leaderboard is stale."""
        with self._cursor() as cursor:
            return _fetch_one(cursor, "SELECT count(*) FROM votes", [])[0]

    def save_leaderboard(self, snapshot: LeaderboardSnapshot) -> str:
        """Keep one computed leaderboard; returns the snapshot's id."""
        snapshot_id = str(uuid.uuid4())
        with self._cursor() as cursor:
            cursor.execute(
                "INSERT INTO leaderboard_snapshots VALUES (?, ?, ?, ?, ?, ?)",
                [
                    snapshot_id,
                    snapshot["computed_at"],
                    snapshot["category"],
                    snapshot["style_control"],
                    snapshot["battles_used"],
                    json.dumps(snapshot["records"]),
                ],
            )
        return snapshot_id

    def leaderboard_history(
        self, *, category: str | None, style_control: bool
    ) -> list[LeaderboardSnapshot]:
        """Every stored leaderboard of one view (category and style control), oldest first."""
        with self._cursor() as cursor:
            rows = cursor.execute(
                "SELECT computed_at, category, style_control, battles_used, records "
                "FROM leaderboard_snapshots "
                "WHERE category IS NOT DISTINCT FROM ? AND style_control = ? "
                "ORDER BY computed_at",
                [category, style_control],
            ).fetchall()
        return [
            LeaderboardSnapshot(
                computed_at=computed_at,
                category=row_category,
                style_control=row_style,
                battles_used=battles_used,
                records=json.loads(records),
            )
            for computed_at, row_category, row_style, battles_used, records in rows
        ]

    # -- direct chat: per-message feedback, ends, the read-only view ------------------------------

    def add_feedback(
        self,
        conversation_id: str,
        *,
        session_id: str,
        message_id: str,
        aspect: str,
        value: str | None,
    ) -> str:
        """Append one feedback event on an assistant message of a direct chat; returns its id.

        ``value`` None withdraws the aspect (rating, edit or comment). Refused unless the message
        is an assistant message of this conversation, a direct chat of ``session_id`` that is
        neither ended nor exported: checked in the same statement as the insert.
        """
        event_id = str(uuid.uuid4())
        with self._cursor() as cursor:
            try:
                row = cursor.execute(
                    f"""
                    INSERT INTO feedback_events (id, conversation_id, message_id, session_id,
                        aspect, value)
                    SELECT $id, $conversation, $message, $session, $aspect, $value
                    -- Each row looked up by its id alone, its checks in FILTER clauses (see
                    -- _BY_CONVERSATION).
                    WHERE (
                            SELECT count(*) FILTER (c.session_id = $session AND c.mode = 'direct')
                            FROM conversations c WHERE c.id = $conversation
                        ) = 1
                        AND (
                            SELECT count(*) FILTER (m.id = $message AND m.role = 'assistant')
                            FROM messages m WHERE {_BY_CONVERSATION}
                        ) = 1
                        AND NOT EXISTS (
                            SELECT 1 FROM conversation_ends e
                            WHERE e.conversation_id = $conversation
                        )
                        AND NOT EXISTS (
                            SELECT 1 FROM export_rows r
                            WHERE r.kind = 'direct' AND r.row_id = $conversation
                        )
                    RETURNING id
                    """,
                    {
                        "id": event_id,
                        "conversation": conversation_id,
                        "session": session_id,
                        "message": message_id,
                        "aspect": aspect,
                        "value": value,
                    },
                ).fetchone()
            except duckdb.ConstraintException as exc:
                raise RecordRejected(f"feedback refused: {exc}") from exc
            if row is None:
                raise RecordRejected(
                    self._direct_lock(cursor, conversation_id, session_id)
                    or f"message {message_id!r} is not a reply of conversation {conversation_id!r}"
                )
        return event_id

    def end_conversation(self, conversation_id: str, *, session_id: str) -> None:
        """Close a direct chat its owner left: no more messages or feedback; it may be exported."""
        with self._cursor() as cursor:
            cursor.execute(
                "INSERT INTO conversation_ends (conversation_id) SELECT id FROM conversations "
                "WHERE id = ? AND session_id = ? AND mode = 'direct' ON CONFLICT DO NOTHING",
                [conversation_id, session_id],
            )

    def direct_lock(self, conversation_id: str, session_id: str) -> str | None:
        """Why a direct chat takes no more messages or feedback (ended, exported, not this
        session's), or None if it takes them."""
        with self._cursor() as cursor:
            return self._direct_lock(cursor, conversation_id, session_id)

    def feedback_events(self, conversation_id: str) -> list[dict[str, Any]]:
        """The feedback log of a conversation, oldest first: message_id, aspect, value, time."""
        with self._cursor() as cursor:
            rows = cursor.execute(
                "SELECT message_id, aspect, value, created_at FROM feedback_events "
                "WHERE conversation_id = ? ORDER BY seq",
                [conversation_id],
            ).fetchall()
        return [{"message_id": m, "aspect": a, "value": v, "created_at": t} for m, a, v, t in rows]

    def shared_direct_chat(self, conversation_id: str) -> dict[str, Any] | None:
        """A direct chat whose owner chose to share, for its read-only view: model and latest
        messages (id, turn, role, content, finish_reason, error), or None (no such chat, not a
        direct chat, or not shared: the caller cannot tell which)."""
        with self._cursor() as cursor:
            head = cursor.execute(
                "SELECT c.model FROM conversations c "
                "JOIN consents k ON k.session_id = c.session_id "
                "WHERE c.id = ? AND c.mode = 'direct' AND k.share",
                [conversation_id],
            ).fetchone()
            if head is None:
                return None
            messages = cursor.execute(
                "SELECT id, turn, role, content, finish_reason, error_message "
                "FROM latest_messages WHERE conversation_id = ? "
                "ORDER BY turn, role = 'assistant'",
                [conversation_id],
            ).fetchall()
        return {
            "model": head[0],
            "messages": [
                {
                    "id": i,
                    "turn": turn,
                    "role": role,
                    "content": content,
                    "finish_reason": finish,
                    "error": error,
                }
                for i, turn, role, content, finish, error in messages
            ],
        }

    @staticmethod
    def _direct_lock(
        cursor: duckdb.DuckDBPyConnection, conversation_id: str, session_id: str
    ) -> str | None:
        row = cursor.execute(
            "SELECT c.session_id, c.mode, "
            "EXISTS (SELECT 1 FROM conversation_ends e WHERE e.conversation_id = c.id), "
            "EXISTS (SELECT 1 FROM export_rows r WHERE r.kind = 'direct' AND r.row_id = c.id) "
            "FROM conversations c WHERE c.id = ?",
            [conversation_id],
        ).fetchone()
        if row is None or row[0] != session_id or row[1] != "direct":
            return f"no direct chat {conversation_id!r} in this session"
        if row[3]:
            return f"direct chat {conversation_id!r} was published and takes no more changes"
        if row[2]:
            return f"direct chat {conversation_id!r} was ended and takes no more changes"
        return None

    @staticmethod
    def _require_session(cursor: duckdb.DuckDBPyConnection, session_id: str) -> None:
        if cursor.execute("SELECT 1 FROM sessions WHERE id = ?", [session_id]).fetchone() is None:
            raise RecordRejected(f"unknown session {session_id!r}: record_session it first")

    @staticmethod
    def _require_conversation(cursor: duckdb.DuckDBPyConnection, conversation_id: str) -> str:
        """The conversation's model; raises `RecordRejected` if there is no such conversation."""
        row = cursor.execute(
            "SELECT model FROM conversations WHERE id = ?", [conversation_id]
        ).fetchone()
        if row is None:
            raise RecordRejected(f"unknown conversation {conversation_id!r}")
        return row[0]

    def _explain_rejected_reply(
        self,
        cursor: duckdb.DuckDBPyConnection,
        conversation_id: str,
        turn: int,
        attempt: int,
        model: str,
    ) -> None:
        """Raise `RecordRejected` saying which of add_reply's conditions failed."""
        expected_model = self._require_conversation(cursor, conversation_id)
        if model != expected_model:
            raise RecordRejected(
                f"a reply from {model!r} cannot join conversation {conversation_id!r}, "
                f"which is with {expected_model!r}"
            )
        has_prompt, attempts = _fetch_one(
            cursor,
            "SELECT count(*) FILTER (role = 'user') > 0, count(*) FILTER (role = 'assistant') "
            "FROM messages WHERE conversation_id = ? AND turn = ?",
            [conversation_id, turn],
        )
        if not has_prompt:
            raise RecordRejected(
                f"conversation {conversation_id!r} has no user message for turn {turn} to reply to"
            )
        raise _out_of_order(conversation_id, turn, attempts, attempt)


def _require_id(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise RecordRejected(f"{name} must be a non-empty string, not {value!r}")


def _out_of_order(conversation_id: str, turn: int, attempts: int, attempt: int) -> RecordRejected:
    return RecordRejected(
        f"turn {turn} of conversation {conversation_id!r} has {attempts} reply attempt(s), "
        f"so the next is attempt {attempts}, not {attempt}"
    )


def _scrubbed(content: str) -> dict[str, str | None]:
    """The scrubbed copy stored with a message (see migration 8): NULL when nothing changed."""
    scrubbed = pii.scrub(content)
    return {"scrubbed": None if scrubbed == content else scrubbed, "scrubbed_by": pii.VERSION}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _fetch_one(
    cursor: duckdb.DuckDBPyConnection, sql: str, parameters: list[object] | dict[str, object]
) -> tuple[Any, ...]:
    row = cursor.execute(sql, parameters).fetchone()
    assert row is not None, "an aggregate query returns one row"
    return row


_BY_CONVERSATION = "m.conversation_id = $conversation"
"""SQL: the only filter of a scan of ``messages m`` that checks one conversation's messages; the
checks themselves go in the aggregates' FILTER clauses. DuckDB 2.0 looks the rows up in
messages_conversation (migration 9) only when the scan has no other filter on a text column:
with ``AND m.role = 'user'`` beside it, it scanned every message (4M messages: 76-152 ms a
check, against 1 ms)."""

_REPLY_COLUMNS = (
    "content, model, parameters, ttft_ms, total_ms, tokens, finish_reason, error_kind, "
    "error_message, error_status, finished, content_scrubbed, scrubbed_by"
)
"""The columns a reply fills beyond its place, in the order of `_reply_values`."""


def _reply_values(reply: Reply, parameters: dict[str, Any]) -> dict[str, object]:
    """A reply's values for `_REPLY_COLUMNS`, in order; `RecordRejected` if the parameters
    are not JSON."""
    try:
        parameters_json = json.dumps(parameters, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RecordRejected(f"reply parameters are not JSON: {exc}") from exc
    error = reply.error
    return {
        "content": reply.text,
        "model": reply.model,
        "parameters": parameters_json,
        "ttft_ms": _ms(reply.ttft_s),
        "total_ms": _ms(reply.total_s),
        "tokens": reply.tokens,
        "finish_reason": reply.finish_reason,
        "error_kind": error.kind.value if error else None,
        "error_message": error.message if error else None,
        "error_status": error.status if error else None,
        "finished": reply.finished,
        **_scrubbed(reply.text),
    }


def _insert_rows(cursor: duckdb.DuckDBPyConnection, sql: str, rows: list[list[object]]) -> None:
    """Run ``sql`` with its ``{}`` replaced by a VALUES list of ``rows``: one statement for all."""
    row = f"({', '.join('?' * len(rows[0]))})"
    cursor.execute(sql.format(", ".join([row] * len(rows))), [v for r in rows for v in r])


def _insert_checked(
    cursor: duckdb.DuckDBPyConnection, sql: str, parameters: dict[str, object], duplicate: str
) -> tuple[Any, ...] | None:
    """Run an ``INSERT ... SELECT ... RETURNING``: the row, or None if its conditions failed.

    The conditions and the insert are one statement, so they hold at the moment of writing; a
    concurrent insert of the same (conversation, turn, role, attempt) trips the UNIQUE key.
    """
    try:
        return cursor.execute(sql, parameters).fetchone()
    except (duckdb.ConstraintException, duckdb.TransactionException) as exc:
        raise RecordRejected(duplicate) from exc


_BATTLES_FRAME_SQL = """
WITH latest AS (
    SELECT c.battle_id, c.side, m.turn, m.role, m.content,
        m.role = 'assistant' AND m.finished AND m.error_kind IS NULL AS ok
    FROM latest_messages m JOIN conversations c ON c.id = m.conversation_id
    WHERE c.battle_id IN (SELECT battle_id FROM votes)
),
transcripts AS (
    -- One pass per battle for both sides: grouping per conversation and joining twice copies
    -- every list once more. Lists are sorted afterwards; an ordered list() is slower.
    SELECT battle_id,
        list({'turn': turn, 'reply': role <> 'user', 'role': role, 'content': content})
            FILTER (side = 'a') AS a,
        list({'turn': turn, 'reply': role <> 'user', 'role': role, 'content': content})
            FILTER (side = 'b') AS b,
        count(*) FILTER (side = 'a' AND role = 'user') AS turns_a,
        count(*) FILTER (side = 'b' AND role = 'user') AS turns_b,
        -- Some turn has no reply, or its latest reply failed or was cut short.
        count(*) FILTER (role = 'user') > count(*) FILTER (ok) AS unanswered
    FROM latest
    GROUP BY battle_id
)
SELECT v.battle_id AS question_id, b.model_a, b.model_b, v.winner,
    coalesce(v.username, 'ip:' || v.ip_hash, 'session:' || v.session_id) AS judge,
    b.anony, epoch(v.created_at) AS tstamp, coalesce(t.turns_a, 0)::INTEGER AS turn,
    list_transform(list_sort(coalesce(t.a, [])), lambda m: {'role': m.role, 'content': m.content})
        AS conversation_a,
    list_transform(list_sort(coalesce(t.b, [])), lambda m: {'role': m.role, 'content': m.content})
        AS conversation_b,
    bt.language,
    coalesce(t.unanswered OR t.turns_a <> t.turns_b, true) AS has_error,
    /* category columns */
FROM votes v
JOIN battles b ON b.id = v.battle_id
LEFT JOIN transcripts t ON t.battle_id = v.battle_id
LEFT JOIN battle_tags bt ON bt.battle_id = v.battle_id
ORDER BY tstamp, question_id
""".replace(
    "/* category columns */",
    ",\n    ".join(f"coalesce(list_contains(bt.tags, '{tag}'), false) AS is_{tag}" for tag in TAGS),
)
