"""Storing implicit feedback: the signal each user turn gives the reply before it, in the store.

`label_pending(store)` reads every user turn that follows an assistant reply and has no reading
of the ``rules`` source yet, runs `arena.signals.detect` on it, and writes one row per turn to
``message_signals`` (migration 6): on the latest attempt of the previous turn of the same
conversation, the reply the user was looking at when they wrote. A turn without a signal gets a
row too (polarity NULL), so the next pass skips it: each pass reads only new turns, and a re-run
labels nothing twice (the table's key is the user turn and the source, and the insert skips keys
that exist). Conversations of every mode are read alike: battle, side-by-side and direct.

It works in bulk: one query reads a chunk of pending turns with their replies' ids, the rules
run in Python (once per distinct text: both sides of a battle share their user turns), and one
``INSERT ... SELECT`` writes the chunk. The `scheduler`'s ``signals`` job runs it, and so does
``push`` before it exports, so an exported battle always carries its signals.

A judge model would write rows of its own with ``source = 'judge'`` beside these; the two are
never mixed in one row or one preference pair.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import pyarrow as pa

from arena.signals import RULES, detect
from arena.store import Store

SOURCE = "rules"
RULES_VERSION = (
    "rules-"
    + hashlib.sha256(
        "\n".join(f"{r.category.value}\t{r.pattern.pattern}" for r in RULES).encode("utf-8")
    ).hexdigest()[:12]
)
"""The ``labeller`` of rows this module writes: changes whenever a rule does, so rows labelled
by older rules can be found (and deleted to be labelled again)."""

_LOCK = threading.Lock()
"""One pass at a time per process (the signals job and push both label): two passes reading the
same pending turns would collide on the table's key."""

CHUNK = 50_000
"""Turns read per query: bounds the memory of a large backfill (after a restore)."""

_PENDING = """
WITH pending AS (
    -- Unread user turns first: the join to the replies then runs on them only.
    SELECT u.id, u.conversation_id, u.turn, u.content
    FROM messages u
    ANTI JOIN (SELECT user_message_id FROM message_signals WHERE source = $source) s
        ON s.user_message_id = u.id
    WHERE u.role = 'user' AND u.turn > 0
)
SELECT p.id AS user_message_id, p.conversation_id, p.content,
    arg_max(r.id, r.attempt) AS message_id
FROM pending p
JOIN messages r ON r.conversation_id = p.conversation_id AND r.turn = p.turn - 1
    AND r.role = 'assistant'
GROUP BY ALL
ORDER BY p.id
LIMIT $limit
"""

# The join keeps out turns deleted (delete_contributions) between the read and the write.
_INSERT = """
INSERT INTO message_signals (user_message_id, source, message_id, conversation_id, polarity,
    category, evidence, evidence_start, evidence_end, labeller)
SELECT l.user_message_id, $source, l.message_id, l.conversation_id, l.polarity, l.category,
    l.evidence, l.evidence_start, l.evidence_end, $labeller
FROM new_labels l
JOIN messages m ON m.id = l.user_message_id
ON CONFLICT DO NOTHING
"""

_SCHEMA = pa.schema(
    [
        ("user_message_id", pa.string()),
        ("message_id", pa.string()),
        ("conversation_id", pa.string()),
        ("polarity", pa.string()),
        ("category", pa.string()),
        ("evidence", pa.string()),
        ("evidence_start", pa.int32()),
        ("evidence_end", pa.int32()),
    ]
)


@dataclass(frozen=True)
class LabelResult:
    turns: int = 0
    """User turns read (and stored, with or without a signal)."""
    sat: int = 0
    dsat: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        if self.turns == 0:
            return f"signals: nothing new to label ({self.seconds:.2f} s)"
        none = self.turns - self.sat - self.dsat
        return (
            f"signals: {self.turns} user turns labelled by {RULES_VERSION}: {self.sat} sat, "
            f"{self.dsat} dsat, {none} without a signal ({self.seconds:.2f} s)"
        )


def label_pending(store: Store, *, chunk: int = CHUNK) -> LabelResult:
    """Label every user turn that follows a reply and has no ``rules`` reading yet."""
    started = time.perf_counter()
    turns = sat = dsat = 0
    with _LOCK:
        while True:
            with store.cursor() as cursor:
                pending = cursor.sql(
                    _PENDING, params={"source": SOURCE, "limit": chunk}
                ).to_arrow_table()
            if pending.num_rows == 0:
                break
            labels = _label(pending)
            with store.cursor() as cursor:
                cursor.register("new_labels", labels)
                try:
                    cursor.execute(
                        _INSERT, {"source": SOURCE, "labeller": RULES_VERSION}
                    ).fetchall()
                finally:
                    cursor.unregister("new_labels")
            polarities = labels.column("polarity").to_pylist()
            turns += pending.num_rows
            sat += polarities.count("sat")
            dsat += polarities.count("dsat")
            if pending.num_rows < chunk:
                break
    return LabelResult(turns, sat, dsat, time.perf_counter() - started)


def _label(pending: pa.Table) -> pa.Table:
    """The rules' reading of each pending turn, as rows of ``_SCHEMA``."""
    texts = pending.column("content").to_pylist()
    readings = {text: detect(text) for text in set(texts)}
    signals = [readings[text] for text in texts]
    return pa.table(
        {
            "user_message_id": pending.column("user_message_id").cast(pa.string()),
            "message_id": pending.column("message_id").cast(pa.string()),
            "conversation_id": pending.column("conversation_id").cast(pa.string()),
            "polarity": [s and s.polarity.value for s in signals],
            "category": [s and s.category.value for s in signals],
            "evidence": [s and s.evidence for s in signals],
            "evidence_start": [s and s.start for s in signals],
            "evidence_end": [s and s.end for s in signals],
        },
        schema=_SCHEMA,
    )
