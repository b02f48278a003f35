"""CPU the store spends on a burst of battles: one call per row against the calls for many rows.

A battle's first turn is a session, its data-sharing choice, the battle, its two conversations
and each side's user message. Written one call per row (`record_consent`, `record_session`,
`start_battle`, two `add_user_message`), that is seven DuckDB statements a battle;
`Store.open_battles` writes a whole burst in five. Its
two replies are two `add_reply` calls, or one `Store.add_replies` for the burst (three
statements). Each way runs inside one `Store.batch()`, as the app's writer thread runs them, on
the same fresh store, in alternating rounds, and the script prints the CPU time of each (the
process's, so DuckDB's own threads count too) per battle.

    .venv/bin/python benchmarks/bench_store_writes.py                 # 100 battles, 5 rounds
    .venv/bin/python benchmarks/bench_store_writes.py --battles 250 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arena.export.terms import TERMS_VERSION
from arena.replies import Reply
from arena.store import BattleOpening, ReplyRecord, Store

PROMPT = "Explain how a hash table handles collisions, with an example in Python."
ANSWER = "A hash table maps each key to a bucket; keys that collide share it. " * 20
PARAMETERS = {"max_new_tokens": 512, "temperature": 0.7}


def openings(count: int) -> list[BattleOpening]:
    return [
        BattleOpening(
            battle_id=str(uuid.uuid4()),
            session_id=str(uuid.uuid4()),
            model_a="model-a",
            model_b="model-b",
            prompt=PROMPT,
            ip_hash="0" * 64,
            share=True,
            terms_version=TERMS_VERSION,
        )
        for _ in range(count)
    ]


def one_call_per_row(store: Store, burst: Sequence[BattleOpening]) -> None:
    for o in burst:
        assert o.share is not None and o.terms_version is not None
        store.record_consent(o.session_id, share=o.share, terms_version=o.terms_version)
        store.record_session(o.session_id, ip_hash=o.ip_hash, username=o.username)
        sides = store.start_battle(
            battle_id=o.battle_id, session_id=o.session_id, model_a=o.model_a, model_b=o.model_b
        )
        for conversation in sides:
            store.add_user_message(conversation, turn=0, content=o.prompt)


def add_reply_per_row(store: Store, records: Sequence[ReplyRecord]) -> None:
    for r in records:
        store.add_reply(
            r.conversation_id,
            turn=r.turn,
            attempt=r.attempt,
            reply=r.reply,
            parameters=r.parameters,
        )


def replies_to(store: Store, count: int) -> list[ReplyRecord]:
    """The two replies of each of ``count`` new battles."""
    pairs = store.open_battles(openings(count))
    return [
        ReplyRecord(conversation, 0, 0, Reply(model=model, text=ANSWER, tokens=100), PARAMETERS)
        for pair in pairs
        for conversation, model in zip(pair, ("model-a", "model-b"), strict=True)
    ]


def cpu_ms(store: Store, write: Callable[[Store, Any], object], rows: Any, count: int) -> float:
    start = time.process_time()
    with store.batch():
        write(store, rows)
    return (time.process_time() - start) * 1000 / count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=100, help="battles per burst (100)")
    parser.add_argument("--rounds", type=int, default=5, help="bursts of each kind (5)")
    args = parser.parse_args(argv)
    if args.battles < 1 or args.rounds < 1:
        parser.error("--battles and --rounds must be positive")
    ways: dict[str, tuple[Callable[[Store, Any], object], Callable[[Store, int], Any]]] = {
        "openings, one call per row": (one_call_per_row, lambda _, n: openings(n)),
        "Store.open_battles": (Store.open_battles, lambda _, n: openings(n)),
        "replies, add_reply per row": (add_reply_per_row, replies_to),
        "Store.add_replies": (Store.add_replies, replies_to),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder)) as store:
        store.open_battles(openings(10))  # the first statements pay one-off costs
        for _ in range(args.rounds):
            for name, (write, rows) in ways.items():
                burst = rows(store, args.battles)
                times[name].append(cpu_ms(store, write, burst, args.battles))
    print(f"A burst of {args.battles} battles, {args.rounds} rounds each, in one batch:")
    names = list(ways)
    for baseline_name, name in zip(names[::2], names[1::2], strict=True):
        baseline = statistics.median(times[baseline_name])
        for label in (baseline_name, name):
            median = statistics.median(times[label])
            versus = "" if label == baseline_name else f", {baseline / median:.1f}x less"
            values = times[label]
            print(
                f"  {label:28s} CPU per battle: median {median:6.2f} ms "
                f"(min {min(values):.2f}, max {max(values):.2f}){versus}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
