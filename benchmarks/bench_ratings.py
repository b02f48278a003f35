"""Rating-engine benchmark: figures printed, a naive baseline timed in the same run, no asserts.

    python benchmarks/bench_ratings.py            # full run (several minutes)
    python benchmarks/bench_ratings.py --quick    # CI smoke run, well under a minute
    /usr/bin/time -v python benchmarks/bench_ratings.py --section engine   # peak memory

Sections: "engine" (1M battles, 100 models, 1,000 rounds, against a one-fit-per-round
L-BFGS baseline like Chatbot Arena's), "style" (style control on 300k battles), "features"
(style counts from reply text), "scaling" (time against battles and against models).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arena.ratings import compute_leaderboard
from arena.ratings.aggregate import count_pairs, encode_battles
from arena.ratings.bradley_terry import (
    bootstrap_bradley_terry,
    fit_bradley_terry,
    to_rating,
)
from arena.ratings.schema import validate_battles
from arena.ratings.simulate import random_ratings, simulate_battles
from arena.ratings.style import reply_counts

LN10 = np.log(10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs for CI")
    parser.add_argument(
        "--section",
        action="append",
        choices=("engine", "style", "features", "scaling"),
        help="run only these sections (repeatable)",
    )
    parser.add_argument("--row", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        scaling_row(*args.row)
        return
    sections = args.section or ["engine", "style", "features", "scaling"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"numpy {np.__version__}, pandas {pd.__version__}, quick={args.quick}")
    print(f"{os.cpu_count()} CPUs, load average at start {load} (other work skews timings)")
    if "engine" in sections:
        engine(args.quick)
    if "style" in sections:
        style(args.quick)
    if "features" in sections:
        features(args.quick)
    if "scaling" in sections:
        scaling(args.quick)


def engine(quick: bool) -> None:
    n, m, rounds = 1_000_000, 100, 1_000
    baseline_rounds = 20 if quick else rounds
    battles = simulate_battles(random_ratings(m, seed=0), n, seed=1)
    print(f"\n== engine: {n:,} battles, {m} models, {rounds:,} bootstrap rounds ==")
    times = [_timed(lambda: compute_leaderboard(battles, bootstrap_rounds=rounds))[1]]
    times += [_timed(lambda: compute_leaderboard(battles, bootstrap_rounds=rounds))[1]]
    times += [_timed(lambda: compute_leaderboard(battles, bootstrap_rounds=rounds))[1]]
    print(f"compute_leaderboard: min {min(times):.2f} s, median {statistics.median(times):.2f} s")
    print(f"peak RSS so far (data + engine): {_peak_rss_mb():.0f} MB")
    pairs, fit_s = _timed(lambda: count_pairs(encode_battles(validate_battles(battles))))
    fit, fit_time = _timed(lambda: fit_bradley_terry(pairs))
    samples, boot_time = _timed(lambda: bootstrap_bradley_terry(pairs, fit, rounds, seed=0))
    print(
        f"  phases: validate+aggregate {fit_s:.2f} s, fit {fit_time:.3f} s, "
        f"bootstrap {boot_time:.2f} s ({1000 * boot_time / rounds:.2f} ms/round)"
    )
    base, prepare = _timed(lambda: _Baseline(battles))
    strengths, base_fit = _timed(base.fit)
    base_fit += prepare
    _, base_boot = _timed(lambda: base.bootstrap(baseline_rounds, seed=0))
    per_round = base_boot / baseline_rounds
    base_total = base_fit + per_round * rounds
    note = "" if baseline_rounds == rounds else f" (extrapolated from {baseline_rounds} rounds)"
    print(
        f"baseline (L-BFGS per round): aggregate+fit {base_fit:.2f} s, "
        f"{1000 * per_round:.1f} ms/round, "
        f"{base_total:.1f} s for {rounds:,} rounds{note}"
    )
    print(f"speed-up vs baseline: {base_total / min(times):.0f}x")
    gap = np.abs(to_rating(fit.strength) - to_rating(strengths)).max()
    print(f"max rating difference engine vs baseline fit: {gap:.4f} points")
    del samples


def style(quick: bool) -> None:
    n, m = 300_000, 100
    rounds = 100 if quick else 1_000
    battles = _style_battles(n, m)
    print(f"\n== style control: {n:,} battles, {m} models, {rounds:,} rounds ==")
    board, seconds = _timed(
        lambda: compute_leaderboard(battles, bootstrap_rounds=rounds, style_control=True)
    )
    _, plain = _timed(lambda: compute_leaderboard(battles, bootstrap_rounds=rounds))
    print(
        f"compute_leaderboard(style_control=True): {seconds:.1f} s "
        f"(of which plain ratings {plain:.1f} s); "
        f"{1000 * (seconds - plain) / rounds:.1f} ms per style round"
    )
    base, prepare = _timed(lambda: _StyleBaseline(battles))
    _, base_fit = _timed(base.fit)
    base_fit += prepare
    sample_rounds = 2 if quick else 5
    _, base_boot = _timed(lambda: base.bootstrap(sample_rounds, seed=0))
    per_round = base_boot / sample_rounds
    total = base_fit + per_round * rounds
    print(
        f"baseline (L-BFGS per round on resampled battles): fit {base_fit:.1f} s, "
        f"{per_round:.2f} s/round, {total:.0f} s for {rounds:,} rounds "
        f"(extrapolated from {sample_rounds})"
    )
    print(f"speed-up vs baseline: {total / seconds:.0f}x")
    print(board.style_coefficients.round(2).to_string(index=False))


def features(quick: bool) -> None:
    n = 30_000 if quick else 300_000
    rng = np.random.default_rng(0)
    parts = [
        "## Answer\n",
        "Some explanation with **bold** words and more text to read. " * 4,
        "\n- first point\n- second point\n1. step one\n2. step two\n",
        "```python\nprint('code')\n```\n",
        "A closing paragraph of ordinary prose that goes on for a while. " * 3,
    ]
    texts = ["".join(p for p in parts if rng.random() < 0.7) for _ in range(2 * n)]
    megabytes = sum(len(t) for t in texts) / 1e6
    _, seconds = _timed(lambda: reply_counts(texts))
    print(f"\n== style counts from text: {2 * n:,} replies, {megabytes:.0f} MB ==")
    rate = f"{n / seconds:,.0f} battles/s, {megabytes / seconds:.0f} MB/s"
    print(f"reply_counts: {seconds:.2f} s ({rate})")


def scaling(quick: bool) -> None:
    rounds = 200 if quick else 1_000
    battle_grid = [10_000, 100_000, 1_000_000] + ([] if quick else [10_000_000])
    model_grid = [10, 30, 100, 300] + ([] if quick else [1_000])
    print(f"\n== scaling: compute_leaderboard with {rounds:,} bootstrap rounds ==")
    print("(each row in a fresh process; peak RSS includes generating the battles)")
    print("   battles  models     cells  seconds  peak RSS MB")
    rows = [(n, 100) for n in battle_grid] + [(1_000_000, m) for m in model_grid if m != 100]
    for n, m in rows:
        # A fresh process per row, so its peak memory is its own.
        command = [sys.executable, __file__, "--row", str(n), str(m), str(rounds)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        seconds, peak, cells = result.stdout.split()
        print(f"{n:>10,}  {m:>6}  {int(cells):>8,}  {float(seconds):>7.2f}  {float(peak):>8.0f}")


def scaling_row(n: int, m: int, rounds: int) -> None:
    """Print seconds, peak RSS (MB) and aggregated cells for one scaling point."""
    battles = simulate_battles(random_ratings(m, seed=m), n, seed=n, categorical=True)
    cells = int(np.count_nonzero(count_pairs(encode_battles(battles)).counts))
    _, seconds = _timed(lambda: compute_leaderboard(battles, bootstrap_rounds=rounds))
    print(f"{seconds:.3f} {_peak_rss_mb():.0f} {cells}")


class _Baseline:
    """One L-BFGS fit per bootstrap round on aggregated (a, b, outcome) rows, as Chatbot
    Arena's ``compute_bootstrap_bt`` does (ratings in log10 units, gtol 1e-6)."""

    def __init__(self, battles: pd.DataFrame) -> None:
        models, codes = np.unique(
            np.concatenate([battles["model_a"], battles["model_b"]]), return_inverse=True
        )
        n = len(battles)
        outcome = battles["winner"].map({"model_a": 1.0, "model_b": 0.0}).fillna(0.5)
        rows = np.stack([codes[:n], codes[n:], (2 * outcome.to_numpy()).astype(int)], axis=1)
        unique, counts = np.unique(rows, axis=0, return_counts=True)
        self.n_models = models.size
        self.a, self.b, self.outcome = unique[:, 0], unique[:, 1], unique[:, 2] / 2
        self.counts = counts.astype(float)

    def fit(self, weights: np.ndarray | None = None) -> np.ndarray:
        weights = self.counts if weights is None else weights
        result = minimize(
            self._loss_and_grad,
            np.zeros(self.n_models),
            args=(weights,),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 100, "gtol": 1e-6},
        )
        ratings = result.x - result.x.mean()
        return ratings * LN10

    def bootstrap(self, rounds: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        total = self.counts.sum()
        draws = rng.multinomial(int(total), self.counts / total, size=rounds)
        return np.array([self.fit(w.astype(float)) for w in draws])

    def _loss_and_grad(self, ratings: np.ndarray, weights: np.ndarray):
        logits = LN10 * (ratings[self.a] - ratings[self.b])
        loss = np.sum(weights * (np.logaddexp(0, -logits) * self.outcome))
        loss += np.sum(weights * (np.logaddexp(0, logits) * (1 - self.outcome)))
        residual = -LN10 * weights * (self.outcome - 1 / (1 + np.exp(-logits)))
        grad = np.bincount(self.a, residual, self.n_models)
        grad -= np.bincount(self.b, residual, self.n_models)
        return loss, grad


class _StyleBaseline:
    """Chatbot Arena's style-control approach: L-BFGS on every battle, resampled by index."""

    def __init__(self, battles: pd.DataFrame) -> None:
        models, codes = np.unique(
            np.concatenate([battles["model_a"], battles["model_b"]]), return_inverse=True
        )
        n = len(battles)
        self.n_models = models.size
        self.a, self.b = codes[:n], codes[n:]
        self.y = battles["winner"].map({"model_a": 1.0, "model_b": 0.0}).fillna(0.5).to_numpy()
        diffs = []
        for name in ("length", "header_count", "list_count", "bold_count"):
            left, right = battles[f"{name}_a"].to_numpy(), battles[f"{name}_b"].to_numpy()
            diffs.append((left - right) / (left + right + 1.0))
        x = np.stack(diffs, axis=1)
        self.x = (x - x.mean(axis=0)) / x.std(axis=0)

    def fit(self, index: np.ndarray | None = None) -> np.ndarray:
        index = np.arange(self.y.size) if index is None else index
        a, b, y, x = self.a[index], self.b[index], self.y[index], self.x[index]

        def loss_and_grad(params):
            ratings, beta = params[: self.n_models], params[self.n_models :]
            logits = LN10 * (ratings[a] - ratings[b]) + x @ beta
            loss = np.sum(y * np.logaddexp(0, -logits) + (1 - y) * np.logaddexp(0, logits))
            residual = -(y - 1 / (1 + np.exp(-logits)))
            grad_r = LN10 * (
                np.bincount(a, residual, self.n_models) - np.bincount(b, residual, self.n_models)
            )
            grad = np.concatenate([grad_r, x.T @ residual]) + 0.5 * params
            return loss + 0.25 * np.sum(params**2), grad

        result = minimize(
            loss_and_grad,
            np.zeros(self.n_models + self.x.shape[1]),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 100, "gtol": 1e-6},
        )
        return result.x

    def bootstrap(self, rounds: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        n = self.y.size
        return np.array([self.fit(rng.integers(0, n, n)) for _ in range(rounds)])


def _style_battles(n: int, m: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    battles = simulate_battles(random_ratings(m, seed=3), n, seed=4)
    verbosity = rng.lognormal(6.5, 0.5, m)
    codes = {name: k for k, name in enumerate(random_ratings(m, seed=3).index)}
    for side in "ab":
        mean = verbosity[battles[f"model_{side}"].map(codes).to_numpy()]
        battles[f"length_{side}"] = rng.gamma(4.0, mean / 4.0).round()
        battles[f"header_count_{side}"] = rng.poisson(1.0, n)
        battles[f"list_count_{side}"] = rng.poisson(3.0, n)
        battles[f"bold_count_{side}"] = rng.poisson(2.0, n)
    return battles


def _timed(work: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def _peak_rss_mb() -> float:
    """Peak resident memory of this process. Linux's ru_maxrss survives exec (a child would
    report its parent's peak), so prefer VmHWM."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
