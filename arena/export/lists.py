"""The battle configs of a batch (battles, conversations, preference, unpaired), built in Arrow.

DuckDB's ``list()`` aggregate copies every message's text into its hash table, and its Parquet
writer spends about three times pyarrow's CPU on the same text (1M votes: 11 s for the lists,
8 s of CPU for the conversations file). So the batch's messages are read once, in no order,
and sorted here by conversation: DuckDB's ORDER BY copies every text into its sort and out
again, where one gather of the text suffices (1M votes: the full export went from 29.9-30.4 s
to 24.7-26.0 s). Each conversation's list is then a range of those rows (offsets, no copy);
the battles' lists of latest messages and the first-turn rows of preference and unpaired are
gathers of the same rows; pyarrow writes the files, several at once. The schemas are spelled
out: they are what DuckDB wrote for these configs (names, types and nullability), so the shards
of every release read as one table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_ROW_GROUP = 122_880
"""Rows per Parquet row group: DuckDB's default, which the earlier shards have."""

# Text may exceed 2 GB in one batch: large_string (64-bit offsets) in memory. Parquet stores it
# as the same UTF-8 byte array as string, and no Arrow schema is stored in the file, so readers
# see the types DuckDB wrote.
_TEXT = pa.large_string()
_MESSAGE = pa.struct([("role", pa.string()), ("content", _TEXT)])
_ATTEMPT = pa.struct(
    [
        ("turn", pa.int32()),
        ("attempt", pa.int32()),
        ("role", pa.string()),
        ("content", _TEXT),
        ("finished", pa.bool_()),
        ("error_kind", pa.string()),
        ("latest", pa.bool_()),
        ("tstamp", pa.float64()),
    ]
)
_MESSAGES = pa.list_(_MESSAGE)


def _schema(*fields: tuple[str, pa.DataType, bool]) -> pa.Schema:
    return pa.schema([pa.field(name, kind, nullable=nullable) for name, kind, nullable in fields])


_S, _NULL, _REQUIRED = pa.string(), True, False
SCHEMAS = {
    "battles": _schema(
        ("question_id", _S, _REQUIRED),
        ("model_a", _S, _REQUIRED),
        ("model_b", _S, _REQUIRED),
        ("winner", _S, _REQUIRED),
        ("judge", _S, _REQUIRED),
        ("conversation_a", _MESSAGES, _REQUIRED),
        ("conversation_b", _MESSAGES, _REQUIRED),
        ("turn", pa.int32(), _REQUIRED),
        ("anony", pa.bool_(), _REQUIRED),
        ("language", _S, _NULL),
        ("tstamp", pa.float64(), _REQUIRED),
        ("category_tags", pa.list_(_S), _REQUIRED),
        ("has_error", pa.bool_(), _REQUIRED),
        ("text_shared", pa.bool_(), _REQUIRED),
    ),
    "conversations": _schema(
        ("conversation_id", _S, _REQUIRED),
        ("question_id", _S, _REQUIRED),
        ("mode", _S, _REQUIRED),
        ("side", _S, _NULL),
        ("model", _S, _REQUIRED),
        ("judge", _S, _REQUIRED),
        ("battle_winner", _S, _NULL),
        ("language", _S, _NULL),
        ("tstamp", pa.float64(), _REQUIRED),
        ("messages", pa.list_(_ATTEMPT), _NULL),
    ),
    "preference": _schema(
        ("question_id", _S, _REQUIRED),
        ("prompt", _MESSAGES, _REQUIRED),
        ("chosen", _MESSAGES, _REQUIRED),
        ("rejected", _MESSAGES, _REQUIRED),
        ("chosen_model", _S, _REQUIRED),
        ("rejected_model", _S, _REQUIRED),
        ("language", _S, _NULL),
        ("tstamp", pa.float64(), _REQUIRED),
        ("source", _S, _REQUIRED),
    ),
    "unpaired": _schema(
        ("question_id", _S, _REQUIRED),
        ("prompt", _MESSAGES, _REQUIRED),
        ("completion", _MESSAGES, _REQUIRED),
        ("model", _S, _REQUIRED),
        ("label", pa.bool_(), _NULL),
        ("language", _S, _NULL),
        ("tstamp", pa.float64(), _REQUIRED),
    ),
}
"""The Parquet schema of each config this module writes."""

ORDER = {
    "battles": ("tstamp", "question_id"),
    "conversations": ("tstamp", "conversation_id"),
    "preference": ("tstamp", "question_id"),
    "unpaired": ("tstamp", "question_id"),
}
"""The row order of each config's file."""


class BattleLists:
    """The batch's battle conversations and their messages, one flat row per message.

    ``sides``: one row per conversation, in the conversations config's order (row i is the
    conversation at position i); ``messages``: every message of them, in any order (one row
    per position, turn, role and attempt). Turns and failures count every conversation; text
    (``content``) is null where the session did not share.
    """

    def __init__(self, sides: pa.Table, messages: pa.Table) -> None:
        self._sides = sides
        self._conversations = sides.num_rows
        position, turn, reply, attempt = (
            _numpy(_array(messages, name)) for name in ("position", "turn", "reply", "attempt")
        )
        # By position, turn, user before reply, attempt (lexsort's last key leads): the rows are
        # unique on these, so the order is the same whatever order DuckDB read them in.
        order = np.lexsort((attempt, reply, turn, position))
        position, turn, reply = position[order], turn[order], reply[order]
        rows = pa.array(order)
        self._turn = pa.array(turn)
        self._attempt = pa.array(attempt[order])
        # Gathered across DuckDB's chunks (one per thread): concatenating them first copied
        # every text once more (1M votes: 0.2-0.7 s).
        self._role = _gathered(messages.column("role"), rows)
        self._content = _gathered(messages.column("content").cast(_TEXT), rows)
        self._finished = _gathered(messages.column("finished"), rows)
        self._error_kind = _gathered(messages.column("error_kind"), rows)
        self._tstamp = _gathered(messages.column("tstamp"), rows)
        # An attempt is the latest of its turn and role when the next row is of another one.
        latest = np.ones(len(position), dtype=bool)
        latest[:-1] = (
            (position[1:] != position[:-1]) | (turn[1:] != turn[:-1]) | (reply[1:] != reply[:-1])
        )
        self._latest = latest
        # One slot more than there are conversations: where a battle has no conversation row.
        slots = self._conversations + 1
        self._counts = np.bincount(position, minlength=slots)
        self._offsets = _offsets(self._counts)
        self._turns = np.bincount(position[~reply], minlength=slots)
        ok = latest & reply & _numpy(self._finished.fill_null(False))
        ok &= _numpy(pc.is_null(self._error_kind))
        # Some turn has no reply, or its latest reply failed or was cut short.
        self._unanswered = self._turns > np.bincount(position[ok], minlength=slots)
        self._latest_rows = np.flatnonzero(latest)
        self._latest_counts = np.bincount(position[latest], minlength=slots)
        self._latest_offsets = _offsets(self._latest_counts)

    def conversations(self) -> pa.Table:
        """The conversations config's battle rows: each shared side with every attempt."""
        attempts = pa.StructArray.from_arrays(
            [
                self._turn,
                self._attempt,
                self._role,
                self._content,
                self._finished,
                self._error_kind,
                pa.array(self._latest),
                self._tstamp,
            ],
            fields=list(_ATTEMPT),
        )
        offsets = pa.array(self._offsets[: self._conversations + 1].astype(np.int32))
        lists = pa.ListArray.from_arrays(offsets, attempts)
        names = SCHEMAS["conversations"].names
        columns = {name: self._sides.column(name) for name in names if name != "messages"}
        columns["messages"] = lists
        table = pa.table(columns).cast(SCHEMAS["conversations"])
        shown = _numpy(self._sides.column("text_shared").combine_chunks())
        shown &= self._counts[: self._conversations] > 0
        return table if shown.all() else table.filter(pa.array(shown))

    def battles(self, votes: pa.Table) -> Battles:
        """The battles config from its rows (``votes``: in order, with the positions of their
        sides, ``position_a`` and ``position_b``)."""
        return Battles(self, votes)

    def latest_lists(self, positions: np.ndarray, shown: np.ndarray) -> pa.ListArray:
        """Per position, the latest messages as {role, content}; empty where not ``shown``."""
        lengths = np.where(shown, self._latest_counts[positions], 0)
        offsets = _offsets(lengths)
        starts = self._latest_offsets[positions]
        rows = self._latest_rows[
            np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        ]
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), self.messages(rows))

    def latest_element(self, positions: np.ndarray, index: int) -> np.ndarray:
        """The message row of each position's ``index``-th latest message, -1 if it has none."""
        found = self._latest_counts[positions] > index
        starts = np.where(found, self._latest_offsets[positions] + index, 0)
        rows = self._latest_rows[starts] if len(self._latest_rows) else starts
        return np.where(found, rows, -1)

    def messages(self, rows: np.ndarray) -> pa.StructArray:
        """{role, content} of message ``rows``; null where a row is -1 (as DuckDB's list
        element past the end)."""
        missing = rows < 0
        index = pa.array(rows, mask=missing)
        return pa.StructArray.from_arrays(
            [self._role.take(index), self._content.take(index)],
            fields=list(_MESSAGE),
            mask=pa.array(missing),
        )

    def side_stats(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per position: message count, user turns, and whether a turn went unanswered."""
        return self._counts[positions], self._turns[positions], self._unanswered[positions]

    @property
    def missing(self) -> int:
        """The position that stands for a conversation row a battle does not have."""
        return self._conversations


class Battles:
    """The batch's battles, and the preference and unpaired rows read from their first turn."""

    def __init__(self, lists: BattleLists, votes: pa.Table) -> None:
        self._lists = lists
        self._votes = votes
        self._a = _numpy(votes.column("position_a").fill_null(lists.missing).combine_chunks())
        self._b = _numpy(votes.column("position_b").fill_null(lists.missing).combine_chunks())
        self._shared = _numpy(votes.column("text_shared").combine_chunks())
        self._winner = _numpy(votes.column("winner").combine_chunks())
        count_a, turns_a, unanswered_a = lists.side_stats(self._a)
        count_b, turns_b, unanswered_b = lists.side_stats(self._b)
        self._turns = turns_a
        self._error = (
            ((count_a == 0) & (count_b == 0)) | (turns_a != turns_b) | unanswered_a | unanswered_b
        )

    def table(self) -> pa.Table:
        votes = self._votes
        columns = {
            "question_id": votes.column("question_id"),
            "model_a": votes.column("model_a"),
            "model_b": votes.column("model_b"),
            "winner": votes.column("winner"),
            "judge": votes.column("judge"),
            "conversation_a": self._lists.latest_lists(self._a, self._shared),
            "conversation_b": self._lists.latest_lists(self._b, self._shared),
            "turn": pa.array(self._turns.astype(np.int32)),
            "anony": votes.column("anony"),
            "language": votes.column("language"),
            "tstamp": votes.column("tstamp"),
            "category_tags": votes.column("category_tags"),
            "has_error": pa.array(self._error),
            "text_shared": votes.column("text_shared"),
        }
        return pa.table(columns).cast(SCHEMAS["battles"])

    def preference(self) -> pa.Table:
        """TRL preference rows: the first-turn prompt, the winner's reply chosen, the loser's
        rejected; battles with a clear winner whose text is shared and that have no error."""
        keep = np.flatnonzero(
            self._shared & ~self._error & np.isin(self._winner, ("model_a", "model_b"))
        )
        a, b = self._a[keep], self._b[keep]
        reply_a = self._lists.latest_element(a, 1)
        reply_b = self._lists.latest_element(b, 1)
        won_a = self._winner[keep] == "model_a"
        votes = self._votes.take(pa.array(keep))
        model_a, model_b = votes.column("model_a"), votes.column("model_b")
        won = pa.array(won_a)
        columns = {
            "question_id": votes.column("question_id"),
            "prompt": self._single(self._lists.latest_element(a, 0)),
            "chosen": self._single(np.where(won_a, reply_a, reply_b)),
            "rejected": self._single(np.where(won_a, reply_b, reply_a)),
            "chosen_model": pc.if_else(won, model_a, model_b),
            "rejected_model": pc.if_else(won, model_b, model_a),
            "language": votes.column("language"),
            "tstamp": votes.column("tstamp"),
            "source": pa.array(["vote"] * len(keep), pa.string()),
        }
        return pa.table(columns).cast(SCHEMAS["preference"])

    def unpaired(self) -> pa.Table:
        """TRL unpaired (KTO) rows: each first-turn reply of a decided battle (or "both bad")
        whose text is shared and that has no error, side a then side b; good if it won."""
        keep = np.flatnonzero(
            self._shared
            & ~self._error
            & np.isin(self._winner, ("model_a", "model_b", "tie (bothbad)"))
        )
        rows = np.repeat(keep, 2)
        side_a = np.tile(np.array([True, False]), len(keep))
        positions = np.where(side_a, self._a[rows], self._b[rows])
        votes = self._votes.take(pa.array(rows))
        is_a = pa.array(side_a)
        columns = {
            "question_id": votes.column("question_id"),
            "prompt": self._single(self._lists.latest_element(self._a[rows], 0)),
            "completion": self._single(self._lists.latest_element(positions, 1)),
            "model": pc.if_else(is_a, votes.column("model_a"), votes.column("model_b")),
            "label": pa.array(self._winner[rows] == np.where(side_a, "model_a", "model_b")),
            "language": votes.column("language"),
            "tstamp": votes.column("tstamp"),
        }
        return pa.table(columns).cast(SCHEMAS["unpaired"])

    def _single(self, rows: np.ndarray) -> pa.ListArray:
        """One-message lists, ``[message]``, of message ``rows``."""
        offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, self._lists.messages(rows))


def merged(config: str, parts: Sequence[pa.Table]) -> pa.Table:
    """The rows of ``parts`` (each cast to the config's schema) in the config's order.

    Parts already in order are cut into runs and put together without copying a row: a battle
    batch is one sorted part, plus a few rows of direct chats or signal pairs at most."""
    schema = SCHEMAS[config]
    tables = [part.cast(schema) for part in parts if part.num_rows]
    if not tables:
        return schema.empty_table()
    if len(tables) == 1:
        return tables[0]
    combined = pa.concat_tables(tables)
    keys = [(key, "ascending") for key in ORDER[config]]
    order = _numpy(pc.sort_indices(combined.select(list(ORDER[config])), sort_keys=keys))
    cuts = np.flatnonzero(np.diff(order) != 1) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(order)]])
    return pa.concat_tables(
        combined.slice(int(order[s]), int(e - s)) for s, e in zip(starts, ends, strict=True)
    )


def write(table: pa.Table, path: Path) -> None:
    """One config's file, zstd-compressed as DuckDB's files are. An empty table gets no row
    group at all, as from DuckDB: `datasets` takes its batch size from the first row group, and
    refuses one of zero rows."""
    # No dictionaries: pyarrow's start on the text and judges, whose values rarely repeat, and
    # made the files 1.6x bigger than DuckDB's (1M votes: 90.7 MB against 55.3 MB; 63 MB
    # without), and slower to write.
    with pq.ParquetWriter(
        path, table.schema, compression="zstd", use_dictionary=False, store_schema=False
    ) as writer:
        if table.num_rows:
            writer.write_table(table, row_group_size=_ROW_GROUP)


def _array(table: pa.Table, name: str) -> pa.Array:
    """A column as one array."""
    column = table.column(name)
    if column.num_chunks == 0:
        return pa.array([], column.type)
    return pa.concat_arrays(column.chunks)


def _gathered(column: pa.ChunkedArray, rows: pa.Array) -> pa.Array:
    """``column``'s values at ``rows``, as one array."""
    return column.take(rows).combine_chunks()


def _numpy(array: pa.Array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets
