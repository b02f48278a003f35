"""CPU the store spends on a burst of new battles: one call per row against `Store.open_battles`.

A battle's first turn is a session, the battle, its two conversations and each side's user
message. Written one call per row (`record_session`, `start_battle`, two `add_user_message`),
that is six DuckDB statements a battle; `open_battles` writes a whole burst in four. Both run
inside one `Store.batch()`, as the app's writer thread runs them, on the same fresh store, in
alternating rounds, and the script prints the CPU time of each (the process's, so DuckDB's own
threads count too) per battle.

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arena.store import BattleOpening, Store

PROMPT = "Explain how a hash table handles collisions, with an example in Python."


def openings(count: int) -> list[BattleOpening]:
    return [
        BattleOpening(
            battle_id=str(uuid.uuid4()),
            session_id=str(uuid.uuid4()),
            model_a="model-a",
            model_b="model-b",
            prompt=PROMPT,
            ip_hash="0" * 64,
        )
        for _ in range(count)
    ]


def one_call_per_row(store: Store, burst: Sequence[BattleOpening]) -> None:
    for o in burst:
        store.record_session(o.session_id, ip_hash=o.ip_hash, username=o.username)
        sides = store.start_battle(
            battle_id=o.battle_id, session_id=o.session_id, model_a=o.model_a, model_b=o.model_b
        )
        for conversation in sides:
            store.add_user_message(conversation, turn=0, content=o.prompt)


def cpu_ms_per_battle(
    store: Store, write: Callable[[Store, Sequence[BattleOpening]], object], count: int
) -> float:
    burst = openings(count)
    start = time.process_time()
    with store.batch():
        write(store, burst)
    return (time.process_time() - start) * 1000 / count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=100, help="battles per burst (100)")
    parser.add_argument("--rounds", type=int, default=5, help="bursts of each kind (5)")
    args = parser.parse_args(argv)
    if args.battles < 1 or args.rounds < 1:
        parser.error("--battles and --rounds must be positive")
    ways: dict[str, Callable[[Store, Sequence[BattleOpening]], object]] = {
        "one call per row (baseline)": one_call_per_row,
        "Store.open_battles": Store.open_battles,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder)) as store:
        cpu_ms_per_battle(store, Store.open_battles, 10)  # the first statements pay one-off costs
        for _ in range(args.rounds):
            for name, write in ways.items():
                times[name].append(cpu_ms_per_battle(store, write, args.battles))
    print(f"A burst of {args.battles} new battles, {args.rounds} rounds each, in one batch:")
    baseline = statistics.median(times["one call per row (baseline)"])
    for name, values in times.items():
        median = statistics.median(values)
        versus = "" if median == baseline else f", {baseline / median:.1f}x less than the baseline"
        print(
            f"  {name:28s} CPU per battle: median {median:6.2f} ms "
            f"(min {min(values):.2f}, max {max(values):.2f}){versus}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
