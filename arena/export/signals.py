"""The implicit-feedback part of an export batch: the ``signals`` config and signal-derived pairs.

Runs inside `arena.export.tables.write_batch`, after the batch's shared text is scrubbed
(``export_text``), and only reads that table for text: a signal or pair is published only when
its conversation's text is (its session shared), and only in scrubbed form.

* ``export_signals`` (the ``signals`` config): one row per stored signal (``message_signals``
  rows with a polarity) whose reply and user turn are published. The evidence is the span of
  the *scrubbed* user turn (a placeholder inside it stays one), with offsets into the text the
  ``conversations`` config publishes; where the span cannot be found there (the turn scrubbed in
  context differs from the pieces scrubbed alone) evidence and offsets are left empty rather
  than guessed.
* ``export_signal_pairs``: TRL preference rows built by `arena.signals.preference_pairs` from the
  stored readings of one source (``rules``): a reply the user complained about (DSAT) is
  rejected, the later reply to the same request they were satisfied with (SAT) is chosen, and
  the prompt is the conversation up to and including the original request. Both replies must
  have finished without error (a cut-off reply says nothing about the model), and they must
  differ. In a battle the user's next turn follows both sides' replies at once, so a complaint
  may be about either: when the vote has a winner, complaints are taken to be about the side that
  lost, and the winner's side gives no pair (a tie or "both bad" keeps both sides' readings).
  `arena.export.tables` appends them to ``preference`` with ``source = 'signals'``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby
from typing import Any

import duckdb
import pyarrow as pa

from arena.pii import scrub
from arena.signals import Polarity, preference_pairs

PAIR_SOURCE = "rules"
"""The labels signal pairs are built from; one source per pair, never a mix."""

TEMP_TABLES = ("export_signals", "export_signal_pairs")

_SIGNALS = """
SELECT coalesce(c.battle_id, c.id) AS question_id, c.id AS conversation_id, c.mode, c.model,
    c.side, r.turn, r.attempt, s.source, s.labeller, s.polarity, s.category,
    m.content AS raw_turn, u.content AS published_turn, s.evidence_start, s.evidence_end,
    u.tstamp, epoch(s.labelled_at) AS labelled_at
FROM message_signals s
JOIN export_text r ON r.id = s.message_id
JOIN export_text u ON u.id = s.user_message_id
JOIN messages m ON m.id = s.user_message_id
JOIN conversations c ON c.id = r.conversation_id
WHERE s.polarity IS NOT NULL
ORDER BY u.tstamp, question_id, c.id, s.source
"""

_PAIR_MESSAGES = """
SELECT t.conversation_id, coalesce(c.battle_id, c.id) AS question_id, c.model, v.language,
    c.side, v.winner, t.id, t.role, t.content, t.tstamp,
    t.role = 'assistant' AND coalesce(t.finished, false) AND t.error_kind IS NULL AS ok,
    s.message_id AS reacts_to, s.polarity
FROM export_text t
JOIN conversations c ON c.id = t.conversation_id
LEFT JOIN export_votes v ON v.battle_id = c.battle_id
LEFT JOIN message_signals s ON s.user_message_id = t.id AND s.source = $source
WHERE t.latest AND t.conversation_id IN (
    SELECT conversation_id FROM message_signals WHERE source = $source AND polarity = 'dsat'
)
ORDER BY t.conversation_id, t.turn, t.role DESC  -- the user message of a turn, then the reply
"""

_MESSAGE_LIST = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_SIGNAL_SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("conversation_id", pa.string()),
        ("mode", pa.string()),
        ("model", pa.string()),
        ("side", pa.string()),
        ("turn", pa.int32()),
        ("attempt", pa.int32()),
        ("source", pa.string()),
        ("labeller", pa.string()),
        ("polarity", pa.string()),
        ("category", pa.string()),
        ("evidence", pa.string()),
        ("evidence_start", pa.int32()),
        ("evidence_end", pa.int32()),
        ("tstamp", pa.float64()),
        ("labelled_at", pa.float64()),
    ]
)
_PAIR_SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("prompt", _MESSAGE_LIST),
        ("chosen", _MESSAGE_LIST),
        ("rejected", _MESSAGE_LIST),
        ("chosen_model", pa.string()),
        ("rejected_model", pa.string()),
        ("language", pa.string()),
        ("tstamp", pa.float64()),
    ]
)


def prepare(cursor: duckdb.DuckDBPyConnection) -> None:
    """Create ``export_signals`` and ``export_signal_pairs`` from the batch's temp tables."""
    signals = cursor.sql(_SIGNALS).to_arrow_table().to_pylist()
    rows = [published_signal(row) for row in signals]
    _create(cursor, "export_signals", pa.Table.from_pylist(rows, schema=_SIGNAL_SCHEMA))
    messages = cursor.sql(_PAIR_MESSAGES, params={"source": PAIR_SOURCE}).to_arrow_table()
    pairs = signal_pair_rows(messages.to_pylist())
    _create(cursor, "export_signal_pairs", pa.Table.from_pylist(pairs, schema=_PAIR_SCHEMA))


def published_signal(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of the ``signals`` config: the stored signal with its evidence re-located in the
    published (scrubbed) user turn, or without evidence if it cannot be."""
    span = scrubbed_span(
        row["raw_turn"], row["published_turn"], row["evidence_start"], row["evidence_end"]
    )
    published = {k: v for k, v in row.items() if k not in ("raw_turn", "published_turn")}
    evidence, start, end = span if span else (None, None, None)
    return published | {"evidence": evidence, "evidence_start": start, "evidence_end": end}


def scrubbed_span(
    raw: str, scrubbed: str, start: int | None, end: int | None
) -> tuple[str, int, int] | None:
    """Where ``raw[start:end]`` is in ``scrubbed`` (``raw`` after `arena.pii.scrub`), or None.

    The scrubber replaces findings with placeholders, so offsets after one move. The span is
    located by scrubbing the text before it and the span itself; it is accepted only if the
    scrubbed turn holds exactly that text there, so what is published is always a slice of the
    published turn, never more than it shows.
    """
    if start is None or end is None or not 0 <= start <= end <= len(raw):
        return None
    evidence = scrub(raw[start:end])
    new_start = len(scrub(raw[:start]))
    new_end = new_start + len(evidence)
    if not evidence or scrubbed[new_start:new_end] != evidence:
        return None
    return evidence, new_start, new_end


def signal_pair_rows(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Preference rows from the latest messages of conversations, in conversation order.

    Each message: conversation_id, question_id, model, language, side and winner (of a battle's
    conversation and its vote; None elsewhere), id, role, content, tstamp, ok (a finished reply
    without error), and for a user turn its stored reading: ``reacts_to`` (the reply it was read
    against) and ``polarity`` ('sat', 'dsat' or None). A reading counts only if it refers to the
    reply right before the turn, and a complaint not on the winning side of a vote. A failed
    reply is never chosen nor rejected, but a complaint about it still keeps the request open.
    """
    rows: list[dict[str, Any]] = []
    for _, group in groupby(messages, key=lambda m: m["conversation_id"]):
        conversation = list(group)
        reactions = _reactions(conversation)
        first = conversation[0]
        for pair in preference_pairs(conversation, reactions):
            chosen, rejected = conversation[pair.chosen_index], conversation[pair.rejected_index]
            if not rejected["ok"] or chosen["content"] == rejected["content"]:
                continue
            rows.append(
                {
                    "question_id": first["question_id"],
                    "prompt": pair.prompt,
                    "chosen": pair.chosen,
                    "rejected": pair.rejected,
                    "chosen_model": first["model"],
                    "rejected_model": first["model"],
                    "language": first["language"],
                    "tstamp": chosen["tstamp"],
                }
            )
    return rows


def _reactions(conversation: Sequence[Mapping[str, Any]]) -> dict[int, Polarity | None]:
    side, winner = conversation[0].get("side"), conversation[0].get("winner")
    won = side is not None and winner == f"model_{side}"
    reactions: dict[int, Polarity | None] = {}
    for i, message in enumerate(conversation):
        if i == 0 or message["role"] != "user" or message.get("polarity") is None:
            continue
        reply = conversation[i - 1]
        if reply["role"] != "assistant" or message.get("reacts_to") != reply["id"]:
            continue
        polarity = Polarity(message["polarity"])
        if polarity is Polarity.SAT and not reply["ok"]:
            continue  # it cannot be chosen: the request closes without a pair
        if polarity is Polarity.DSAT and won:
            continue  # the user preferred this side: the complaint was about the other one
        reactions[i] = polarity
    return reactions


def _create(cursor: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    view = f"{name}_arrow"
    cursor.register(view, table)
    try:
        cursor.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {view}").fetchall()
    finally:
        cursor.unregister(view)
