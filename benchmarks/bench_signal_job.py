"""Speed of the signals job (`arena.signal_labels.label_pending`), against a per-turn baseline.

Fills a store by SQL with N voted three-turn battles (both sides, so 4 user turns per battle
react to a reply). The follow-up turns are drawn from the labelled turns of
tests/data/signal_turns.jsonl, each made unique with a number so that no two battles share a
text (the job reads each distinct text once; both sides of one battle still share theirs).
Then times:

- backfill: the first pass over every turn (as after a restore);
- re-run: a second pass, which finds nothing to label;
- incremental: a pass after 1% more battles.

Baseline, in the same run: the straightforward job, one query for the pending turns, then per
turn a query for the reply it follows and one INSERT, on a sample and extrapolated.

    .venv/bin/python benchmarks/bench_signal_job.py                  # 50,000 battles
    .venv/bin/python benchmarks/bench_signal_job.py --battles 5000   # quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arena.signal_labels import RULES_VERSION, label_pending
from arena.signals import detect
from arena.store import Store

TURNS = Path(__file__).resolve().parent.parent / "tests" / "data" / "signal_turns.jsonl"
PROMPT = "Could you explain how caching works in a web application, with one example ({i})?"
REPLY = (
    "Caching keeps the result of an expensive computation so that the next request can reuse "
    "it. Choose a key, choose how long the entry stays valid, and invalidate it on change ({i})."
)


def fill(store: Store, start: int, count: int, follow_ups: list[str]) -> None:
    """``count`` voted three-turn battles numbered from ``start``, by SQL."""
    with store.cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE TEMP TABLE follow_ups AS "
            "SELECT unnest($texts) AS text, generate_subscripts($texts, 1) - 1 AS k",
            {"texts": follow_ups},
        ).fetchall()
        for sql in (
            f"""
            CREATE OR REPLACE TEMP TABLE n AS
            SELECT i, 's' || (i % 5000) AS session, 'b' || i AS battle,
                TIMESTAMPTZ '2026-01-01' + to_seconds(i) AS stamp
            FROM range({start}, {start + count}) r(i)
            """,
            "INSERT OR IGNORE INTO sessions (id) SELECT DISTINCT session FROM n",
            """
            INSERT INTO battles (id, session_id, model_a, model_b, anony, conversation_a,
            conversation_b, created_at)
            SELECT battle, session, 'alpha', 'beta', true, battle || 'a', battle || 'b', stamp
            FROM n
            """,
            """
            INSERT INTO conversations (id, session_id, mode, model, battle_id, side, created_at)
            SELECT battle || side, session, 'battle',
                CASE side WHEN 'a' THEN 'alpha' ELSE 'beta' END, battle, side, stamp
            FROM n, (VALUES ('a'), ('b')) s(side)
            """,
            f"""
            INSERT INTO messages (id, conversation_id, turn, attempt, role, content,
                created_at, model, finished)
            SELECT battle || side || role || t, battle || side, t, 0, role,
                CASE WHEN role = 'assistant' THEN replace($reply, '{{i}}', i::VARCHAR)
                    WHEN t = 0 THEN replace($prompt, '{{i}}', i::VARCHAR)
                    ELSE (SELECT text FROM follow_ups
                        WHERE k = (i * 2 + t) % {len(follow_ups)}) || ' (' || i || ')' END,
                stamp, CASE WHEN role = 'assistant' THEN
                    CASE side WHEN 'a' THEN 'alpha' ELSE 'beta' END END,
                CASE WHEN role = 'assistant' THEN true END
            FROM n, (VALUES ('a'), ('b')) s(side), (VALUES ('user'), ('assistant')) r(role),
                range(3) tt(t)
            """,
            """
            INSERT INTO votes (id, battle_id, session_id, winner, created_at)
            SELECT 'v' || i, battle, session, 'model_a', stamp FROM n
            """,
        ):
            params = {"prompt": PROMPT, "reply": REPLY} if "$prompt" in sql else None
            cursor.execute(sql, params).fetchall()


def per_turn_baseline(store: Store, sample: int) -> tuple[float, int]:
    """Seconds for the per-turn job on ``sample`` pending turns, and how many are pending."""
    with store.cursor() as cursor:
        pending = cursor.execute(
            "SELECT u.id, u.conversation_id, u.turn, u.content FROM messages u "
            "WHERE u.role = 'user' AND u.turn > 0 AND u.id NOT IN "
            "(SELECT user_message_id FROM message_signals)"
        ).fetchall()
    started = time.perf_counter()
    for user_id, conversation, turn, content in pending[:sample]:
        with store.cursor() as cursor:
            row = cursor.execute(
                "SELECT id FROM messages WHERE conversation_id = ? AND turn = ? "
                "AND role = 'assistant' ORDER BY attempt DESC LIMIT 1",
                [conversation, turn - 1],
            ).fetchone()
            if row is None:
                continue
            signal = detect(content)
            cursor.execute(
                "INSERT INTO message_signals (user_message_id, source, message_id, "
                "conversation_id, polarity, category, evidence, evidence_start, evidence_end, "
                "labeller) VALUES (?, 'rules', ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    user_id, row[0], conversation, signal and signal.polarity.value,
                    signal and signal.category.value, signal and signal.evidence,
                    signal and signal.start, signal and signal.end, RULES_VERSION,
                ],
            )  # fmt: skip
    return time.perf_counter() - started, len(pending)


def timed(label: str, action) -> None:
    started = time.perf_counter()
    result = action()
    print(f"{label:<28} {time.perf_counter() - started:8.2f} s   {result.describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=50_000)
    parser.add_argument("--baseline-sample", type=int, default=2_000)
    args = parser.parse_args()
    follow_ups = [
        json.loads(line)["text"] for line in TURNS.read_text().splitlines() if line.strip()
    ]
    with tempfile.TemporaryDirectory() as scratch:
        with Store.open(Path(scratch) / "baseline") as store:
            fill(store, 0, args.baseline_sample, follow_ups)
            seconds, pending = per_turn_baseline(store, args.baseline_sample)
        per_turn = seconds / min(args.baseline_sample, pending)
        with Store.open(Path(scratch) / "data") as store:
            fill(store, 0, args.battles, follow_ups)
            turns = args.battles * 4
            print(f"{args.battles:,} battles, {turns:,} user turns that follow a reply")
            timed("backfill", lambda: label_pending(store))
            timed("re-run", lambda: label_pending(store))
            fill(store, args.battles, args.battles // 100, follow_ups)
            timed("incremental (+1% battles)", lambda: label_pending(store))
        print(
            f"{'per-turn baseline':<28} {per_turn * turns:8.2f} s   extrapolated to the "
            f"backfill from {min(args.baseline_sample, pending):,} turns "
            f"({per_turn * 1e6:.0f} µs a turn)"
        )


if __name__ == "__main__":
    main()
