"""Export and restore speed of the feedback dataset (`arena.export`), against a baseline.

Fills a store with N voted one-turn battles by SQL (every session shares, so every message is
scrubbed and published; prompts about 150 characters, replies about 600). The store scrubs each
message when it is written (`Store.add_user_message`, `Store.add_reply`), so the fill does the
same work: every message goes through `arena.pii.scrub` (on both cores, timed and reported as
the write path's cost, which the live app pays one message at a time), and its copy is stored
as the store would. Then it times:

- write path: what storing one message costs through the store's methods, and the scrub's part,
  on an empty store and again on the full one;
- full export: the first push of all N votes to a local folder (every config, no scrub left);
- full export of rows without a scrubbed copy (written before migration 6): a second store
  filled the old way, scrubbed by the export on both cores;
- incremental export: a push of 1% more votes on top, which should cost about 1% of the full one,
  and the same push on top of a store of N/10 votes, to show what of it grows with the votes
  already stored;
- restore: an empty store rebuilt from the folder.

Baseline, in the same run: the straightforward export, ``Store.battles_frame()`` (the rating
engine's pandas frame) written with ``DataFrame.to_parquet``: one config, no scrub.

    .venv/bin/python benchmarks/bench_export.py               # 1,000,000 votes
    .venv/bin/python benchmarks/bench_export.py --votes 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arena import pii
from arena.export import Exporter, LocalFolder, restore_store
from arena.replies import Reply
from arena.store import Store

PROMPT = (
    "Could you explain, step by step, how {i} relates to the question of caching in a web "
    "application, and give one short example?"
)
REPLY = (
    "Sure. Caching keeps the result of an expensive computation so that the next request can "
    "reuse it. For item {i}: first decide what is expensive, then choose a key, then choose how "
    "long the entry stays valid. Example: store the rendered page for {i} for sixty seconds, and "
    "invalidate it when the underlying record changes. Pitfalls: stale data, memory growth and "
    "cache stampedes when many requests miss at once; a lock or an early refresh avoids the "
    "last one. Write to contact@example.org for more."
)


def fill(store: Store, start: int, count: int, *, scrubbed: bool = True) -> float:
    """Add ``count`` shared, voted one-turn battles numbered from ``start``, by SQL.

    With ``scrubbed``, every message is scrubbed and its copy stored, as the store's write path
    does; returns the seconds spent scrubbing (0 without).
    """
    statements = [
        # Ids shaped as the store's (uuid4 strings): key and sort costs depend on their length.
        """
            CREATE OR REPLACE TEMP MACRO uuid_of(text) AS md5(text)::UUID::VARCHAR
        """,
        f"""
            CREATE OR REPLACE TEMP TABLE n AS
            SELECT i, 's' || (i % 50000) AS session, uuid_of('b' || i) AS battle,
            uuid_of('b' || i || 'a') AS conversation_a, uuid_of('b' || i || 'b') AS conversation_b,
            ['alpha', 'beta', 'gamma', 'delta'][1 + i % 4] AS model_a,
            ['beta', 'gamma', 'delta', 'alpha'][1 + i % 4] AS model_b,
            TIMESTAMPTZ '2026-01-01' + to_seconds(i) AS stamp
            FROM range({start}, {start + count}) r(i)
        """,
        """
            INSERT OR IGNORE INTO sessions (id) SELECT DISTINCT session FROM n
        """,
        """
            INSERT OR IGNORE INTO consents SELECT DISTINCT session, true, 'bench', now() FROM n
        """,
        """
            INSERT INTO battles (id, session_id, model_a, model_b, anony, conversation_a,
            conversation_b, created_at) SELECT battle, session, model_a, model_b, true,
            conversation_a, conversation_b, stamp FROM n
        """,
        """
            INSERT INTO conversations (id, session_id, mode, model, battle_id, side, created_at)
            SELECT
            CASE side WHEN 'a' THEN conversation_a ELSE conversation_b END, session, 'battle',
            CASE side WHEN 'a' THEN model_a ELSE model_b END, battle, side, stamp
            FROM n, (VALUES ('a'), ('b')) s(side)
        """,
        """
            CREATE OR REPLACE TEMP TABLE new_messages AS
            SELECT uuid_of('m' || i || side || role) AS id,
            CASE side WHEN 'a' THEN conversation_a ELSE conversation_b END AS conversation_id, role,
            replace(CASE role WHEN 'user' THEN $prompt ELSE $reply END, '{i}', i::VARCHAR)
                AS content,
            stamp, CASE WHEN role = 'assistant' THEN
            CASE side WHEN 'a' THEN model_a ELSE model_b END END AS model
            FROM n, (VALUES ('a'), ('b')) s(side), (VALUES ('user'), ('assistant')) r(role)
        """,
        "SCRUB",
        """
            INSERT INTO messages (id, conversation_id, turn, attempt, role, content,
            created_at, model, finished, content_scrubbed, scrubbed_by)
            SELECT m.id, m.conversation_id, 0, 0, m.role, m.content, m.stamp, m.model,
            CASE WHEN m.role = 'assistant' THEN true END,
            nullif(s.content, m.content), CASE WHEN s.id IS NOT NULL THEN $version END
            FROM new_messages m LEFT JOIN scrubbed s ON s.id = m.id
        """,
        """
            INSERT INTO votes (id, battle_id, session_id, winner, created_at, battle_seq)
            SELECT uuid_of('v' || i), battle, session,
            ['model_a', 'model_b', 'tie', 'tie (bothbad)'][1 + (i * 7) % 4], stamp, b.seq
            FROM n JOIN battles b ON b.id = n.battle
        """,
    ]
    scrub_s = 0.0
    with store.cursor() as cursor:
        for sql in statements:
            if sql == "SCRUB":
                texts = cursor.sql("SELECT id, content FROM new_messages").to_arrow_table()
                if not scrubbed:
                    texts = texts.slice(0, 0)
                started = time.perf_counter()
                copies = pii.scrub_all(texts.column("content").to_pylist())
                scrub_s = time.perf_counter() - started
                copy = pa.array(copies, pa.string())
                cursor.register("scrubbed", pa.table({"id": texts.column("id"), "content": copy}))
                continue
            parameters = {
                name: value
                for name, value in (
                    ("prompt", PROMPT),
                    ("reply", REPLY),
                    ("version", pii.VERSION),
                )
                if f"${name}" in sql
            }
            cursor.execute(sql, parameters or None).fetchall()
        cursor.unregister("scrubbed")
    return scrub_s


def write_path(store: Store, battles: int = 500) -> float:
    """Microseconds per message through the store's own methods: ``battles`` new one-turn
    battles, a prompt and a reply on each side (the direct chat writes its messages this way)."""
    store.record_session("write-path", ip_hash=None, username=None)
    started = time.perf_counter()
    for index in range(battles):
        sides = store.start_battle(
            battle_id=f"write-path-{index}",
            session_id="write-path",
            model_a="alpha",
            model_b="beta",
        )
        for conversation, model in zip(sides, ("alpha", "beta"), strict=True):
            store.add_user_message(conversation, turn=0, content=PROMPT.format(i=index))
            reply = Reply(model=model, text=REPLY.format(i=index), finished=True)
            store.add_reply(conversation, turn=0, attempt=0, reply=reply, parameters={})
    return (time.perf_counter() - started) / (4 * battles) * 1e6


def scrub_us(battles: int = 500) -> float:
    """Microseconds of `arena.pii.scrub` per message of the write path's battles."""
    texts = [t.format(i=i) for i in range(battles) for t in (PROMPT, REPLY)]
    started = time.perf_counter()
    for text in texts:
        pii.scrub(text)
    return (time.perf_counter() - started) / len(texts) * 1e6


def timed(label: str, action) -> float:
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    print(f"{label:<48} {seconds:8.2f} s   {getattr(result, 'describe', lambda: '')()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    args = parser.parse_args()
    votes, extra = args.votes, max(1, args.votes // 100)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with Store.open(root / "write-path") as empty:
            stored_us = write_path(empty)
        scrubbed_us = scrub_us()
        print(
            f"{'write path: one message through the store':<48} {stored_us:8.0f} µs   "
            f"of which arena.pii.scrub {scrubbed_us:.1f} µs (one core)"
        )
        with Store.open(root / "data") as store:
            fill_scrub = [0.0]
            fill_s = timed(
                f"fill the store with {votes:,} votes",
                lambda: fill_scrub.__setitem__(0, fill(store, 0, votes)),
            )
            exporter = Exporter(store, LocalFolder(root / "dataset"), license_id="cc-by-4.0")
            baseline = timed(
                "baseline: battles_frame() + to_parquet",
                lambda: store.battles_frame().to_parquet(root / "baseline.parquet"),
            )
            full = timed(f"full export ({votes:,} votes, every config)", exporter.push)
            fill(store, votes, extra)
            incremental = timed(f"incremental export (+{extra:,} votes)", exporter.push)
            # What a message costs to store grows with the store only where a check scans it.
            stored_full_us = write_path(store, battles=100)
            print(
                f"{f'write path on the store of {votes + extra:,} votes':<48} "
                f"{stored_full_us:8.0f} µs   one message ({stored_us:.0f} µs on an empty store)"
            )
        small_votes = max(extra, votes // 10)
        with Store.open(root / "small") as small:
            fill(small, 0, small_votes)
            small_exporter = Exporter(
                small, LocalFolder(root / "small-dataset"), license_id="cc-by-4.0"
            )
            small_exporter.push()
            fill(small, small_votes, extra)
            incremental_small = timed(
                f"incremental export (+{extra:,} on {small_votes:,})", small_exporter.push
            )
        with Store.open(root / "restored") as empty:
            target = LocalFolder(root / "dataset")
            restore = timed(
                f"restore ({votes + extra:,} votes)", lambda: restore_store(empty, target)
            )
        files = [p for p in (root / "dataset").rglob("*.parquet")]
        size = sum(p.stat().st_size for p in files)
        with Store.open(root / "old") as old:
            timed("fill a store without copies", lambda: fill(old, 0, votes, scrubbed=False))
            legacy = Exporter(old, LocalFolder(root / "legacy"), license_id="cc-by-4.0")
            unscrubbed = timed("full export, scrubbed at export (older rows)", legacy.push)
    print()
    print(f"dataset: {len(files)} Parquet files, {size / 1e6:,.1f} MB")
    print(f"full export / baseline:        {full / baseline:6.2f}x")
    print(f"incremental / full export:     {incremental / full:6.3f} (new rows: 1%)")
    print(
        f"incremental on {votes:,} / on {small_votes:,}: {incremental / incremental_small:6.2f}x "
        "(1.00x if it costs what the new rows cost)"
    )
    print(f"restore:                       {restore:6.2f} s")
    print(
        f"write-path scrub of the {4 * votes:,} messages: {fill_scrub[0]:.2f} s on both cores "
        f"(within the fill's {fill_s:.2f} s; the app pays it per message, "
        f"{scrubbed_us:.1f} µs each)"
    )
    print(f"full export of rows without scrubbed copies: {unscrubbed:.2f} s")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
