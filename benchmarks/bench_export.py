"""Export and restore speed of the feedback dataset (`arena.export`), against a baseline.

Fills a store with N voted one-turn battles by SQL (every session shares, so every message is
scrubbed and published; prompts about 150 characters, replies about 600), then times:

- full export: the first push of all N votes to a local folder (all six configs, PII scrub);
- incremental export: a push of 1% more votes on top, which should cost about 1% of the full one;
- restore: an empty store rebuilt from the folder.

Baseline, in the same run: the straightforward export, ``Store.battles_frame()`` (the rating
engine's pandas frame) written with ``DataFrame.to_parquet``: one config, no scrub.

    .venv/bin/python benchmarks/bench_export.py               # 1,000,000 votes
    .venv/bin/python benchmarks/bench_export.py --votes 100000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arena.export import Exporter, LocalFolder, restore_store
from arena.pii import scrub
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


def fill(store: Store, start: int, count: int) -> None:
    """Add ``count`` shared, voted one-turn battles numbered from ``start``, by SQL."""
    statements = [
        f"""
            CREATE OR REPLACE TEMP TABLE n AS
            SELECT i, 's' || (i % 50000) AS session, 'b' || i AS battle,
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
            INSERT INTO battles SELECT battle, session, model_a, model_b, true,
            battle || 'a', battle || 'b', stamp FROM n
        """,
        """
            INSERT INTO conversations SELECT battle || side, session, 'battle',
            CASE side WHEN 'a' THEN model_a ELSE model_b END, battle, side, stamp
            FROM n, (VALUES ('a'), ('b')) s(side)
        """,
        """
            INSERT INTO messages (id, conversation_id, turn, attempt, role, content,
            created_at, model, finished)
            SELECT battle || side || role, battle || side, 0, 0, role,
            replace(CASE role WHEN 'user' THEN $prompt ELSE $reply END, '{i}', i::VARCHAR),
            stamp, CASE WHEN role = 'assistant' THEN
            CASE side WHEN 'a' THEN model_a ELSE model_b END END,
            CASE WHEN role = 'assistant' THEN true END
            FROM n, (VALUES ('a'), ('b')) s(side), (VALUES ('user'), ('assistant')) r(role)
        """,
        """
            INSERT INTO votes (id, battle_id, session_id, winner, created_at)
            SELECT 'v' || i, battle, session,
            ['model_a', 'model_b', 'tie', 'tie (bothbad)'][1 + (i * 7) % 4], stamp FROM n
        """,
    ]
    with store.cursor() as cursor:
        for sql in statements:
            parameters = {"prompt": PROMPT, "reply": REPLY} if "$prompt" in sql else None
            cursor.execute(sql, parameters).fetchall()


def scrub_share(store: Store) -> float:
    """Seconds the full export spends in `arena.pii.scrub`, from a sample of its messages."""
    with store.cursor() as cursor:
        sample = [
            r[0] for r in cursor.execute("SELECT content FROM messages LIMIT 100000").fetchall()
        ]
        [(total,)] = cursor.execute("SELECT count(*) FROM messages").fetchall()
    started = time.perf_counter()
    for text in sample:
        scrub(text)
    return (time.perf_counter() - started) * total / len(sample)


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
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with Store.open(root / "data") as store:
            timed(f"fill the store with {votes:,} votes", lambda: fill(store, 0, votes))
            exporter = Exporter(store, LocalFolder(root / "dataset"), license_id="cc-by-4.0")
            baseline = timed(
                "baseline: battles_frame() + to_parquet",
                lambda: store.battles_frame().to_parquet(root / "baseline.parquet"),
            )
            full = timed(f"full export ({votes:,} votes, 6 configs)", exporter.push)
            scrub_s = scrub_share(store)
            fill(store, votes, extra)
            incremental = timed(f"incremental export (+{extra:,} votes)", exporter.push)
        with Store.open(root / "restored") as empty:
            target = LocalFolder(root / "dataset")
            restore = timed(
                f"restore ({votes + extra:,} votes)", lambda: restore_store(empty, target)
            )
        files = [p for p in (root / "dataset").rglob("*.parquet")]
        size = sum(p.stat().st_size for p in files)
    print()
    print(f"dataset: {len(files)} Parquet files, {size / 1e6:,.1f} MB")
    print(f"full export / baseline:        {full / baseline:6.2f}x")
    print(f"incremental / full export:     {incremental / full:6.3f} (new rows: 1%)")
    print(f"restore:                       {restore:6.2f} s")
    print(f"PII scrub within the full export: {scrub_s:6.2f} s (one core; 100,000-message sample)")


if __name__ == "__main__":
    main()
