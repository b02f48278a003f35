"""Precision and recall of the implicit-feedback rules (arena.signals) on the labelled turns.

Reads tests/data/signal_turns.jsonl and prints, for the rules and for a naive keyword baseline,
precision and recall per polarity, a confusion table, how often the category agrees when the
polarity does, and the time per turn. Each turn has a ``round``: round 1 was written before any
rule, each later round after the rules of the time were frozen. Splits, from most to least
optimistic:

* dev: turns the rules were tuned on (round 1 outside the held-out third, and later rounds but
  the last).
* held-out: the third of round 1 picked by a hash of the text, fixed before any rule existed and
  never inspected while writing rules. Their author wrote the rules right after, though, so they
  are not independent of the rules.
* fresh: the last round, written after the rules were frozen and never used to change them: the
  honest estimate. To tune rules on it, first write a new round and let that be the fresh one.

    .venv/bin/python benchmarks/bench_signals.py            # timing: fastest of 20 passes
    .venv/bin/python benchmarks/bench_signals.py --quick    # one timing pass
    .venv/bin/python benchmarks/bench_signals.py --errors   # list development-split mistakes only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arena.signals import detect

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "signal_turns.jsonl"
LABELS = ("sat", "dsat", "none")
_BASELINE_DSAT = re.compile(r"\b(?:wrong|no|not|bad)\b", re.IGNORECASE)
_BASELINE_SAT = re.compile(r"\b(?:thank\w*|great|perfect|good)\b", re.IGNORECASE)

Row = dict[str, Any]


def held_out(text: str) -> bool:
    """The held-out third: a hash of the text, so the split never depends on file order."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) % 3 == 0


def splits(rows: Sequence[Row]) -> list[str]:
    """dev, held-out or fresh for each row (see the module docstring)."""
    fresh = max(r["round"] for r in rows)
    return [
        "fresh"
        if r["round"] == fresh
        else "held-out"
        if r["round"] == 1 and held_out(r["text"])
        else "dev"
        for r in rows
    ]


def rules(text: str) -> tuple[str, str | None]:
    signal = detect(text)
    return ("none", None) if signal is None else (signal.polarity.value, signal.category.value)


def baseline(text: str) -> tuple[str, str | None]:
    """Keywords without context: what the rules have to beat."""
    if _BASELINE_DSAT.search(text):
        return "dsat", None
    return ("sat", None) if _BASELINE_SAT.search(text) else ("none", None)


def scores(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, tuple[float, float]]:
    """(precision, recall) for each polarity; 0 when nothing was predicted or expected."""
    result = {}
    for label in ("sat", "dsat"):
        hits = sum(g == p == label for g, p in zip(gold, predicted, strict=True))
        said = sum(p == label for p in predicted)
        real = sum(g == label for g in gold)
        result[label] = (hits / said if said else 0.0, hits / real if real else 0.0)
    return result


def load(path: Path = DATA) -> list[Row]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _report(
    title: str,
    rows: list[Row],
    names: list[str],
    predict: Callable[[str], tuple[str, str | None]],
) -> None:
    predictions = [predict(r["text"]) for r in rows]
    print(f"\n{title}")
    print(f"  {'split':<10}{'turns':>6}{'P sat':>8}{'R sat':>8}{'P dsat':>8}{'R dsat':>8}")
    for name in ("all", "dev", "held-out", "fresh"):
        pairs = [
            (r["label"], p[0])
            for r, p, n in zip(rows, predictions, names, strict=True)
            if name in ("all", n)
        ]
        s = scores([g for g, _ in pairs], [p for _, p in pairs])
        print(
            f"  {name:<10}{len(pairs):>6}{s['sat'][0]:>8.3f}{s['sat'][1]:>8.3f}"
            f"{s['dsat'][0]:>8.3f}{s['dsat'][1]:>8.3f}"
        )
    confusion = Counter((r["label"], p[0]) for r, p in zip(rows, predictions, strict=True))
    print("  confusion (rows gold, columns predicted, all turns):")
    print("  " + " " * 8 + "".join(f"{label:>7}" for label in LABELS))
    for gold in LABELS:
        print(f"  {gold:<8}" + "".join(f"{confusion[(gold, p)]:>7}" for p in LABELS))
    agreed = [
        (r["category"], p[1])
        for r, p in zip(rows, predictions, strict=True)
        if r["label"] == p[0] != "none" and p[1] is not None
    ]
    if agreed:
        same = sum(g == p for g, p in agreed)
        print(f"  category agrees on {same}/{len(agreed)} turns whose polarity is right")


def _time_per_turn(rows: list[Row], passes: int) -> float:
    """Mean CPU µs per turn in the fastest pass. CPU time, not wall time, so other work on a busy
    machine does not count; the fastest pass is the least disturbed one."""
    texts = [r["text"] for r in rows]
    best = math.inf
    for _ in range(passes):
        start = time.process_time()
        for text in texts:
            detect(text)
        best = min(best, time.process_time() - start)
    return best / len(texts) * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timing pass instead of 20")
    parser.add_argument("--errors", action="store_true", help="list development-split mistakes")
    args = parser.parse_args(argv)
    rows = load()
    counts = Counter(str(r["label"]) for r in rows)
    names = splits(rows)
    print(f"{len(rows)} labelled user turns {dict(counts)}; splits {dict(Counter(names))}")
    _report("rules (arena.signals.detect)", rows, names, rules)
    _report(
        "baseline (keywords: wrong|no|not|bad -> dsat, thank|great|perfect|good -> sat)",
        rows,
        names,
        baseline,
    )
    mean_us = _time_per_turn(rows, 1 if args.quick else 20)
    print(
        f"\ntime per turn: {mean_us:.0f} µs (CPU time, mean over {len(rows)} turns, fastest pass)"
    )
    if args.errors:
        print("\ndevelopment-split mistakes (gold -> predicted):")
        for r, name in zip(rows, names, strict=True):
            predicted = rules(r["text"])
            if name == "dev" and predicted[0] != r["label"]:
                label, category = predicted[0], predicted[1] or ""
                print(f"  {r['label']:>4} -> {label:<4} {category:<20} {r['text']!r}")


if __name__ == "__main__":
    main()
