"""Battles as integer codes, and aggregated into per-pair outcome counts.

Bradley-Terry only needs, for each unordered pair, how often each side won or tied, so the fit
and the bootstrap work on at most three counts per pair instead of one row per battle. Pairs are
stored with the lower model index first, so swapping sides (with the winner) or shuffling rows
gives bit-identical counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from arena.votes import Winner

A_WON, B_WON, TIE = 0, 1, 2
"""Outcome codes; both kinds of tie share one code because every rating counts them the same."""

OUTCOME_CODES = MappingProxyType(
    {w.value: {1.0: A_WON, 0.0: B_WON, 0.5: TIE}[w.score_a] for w in Winner}
)
SCORE_OF_OUTCOME = np.array([1.0, 0.0, 0.5])
"""Model A's score for each outcome code: ties are half a win."""
SCORE_OF_OUTCOME.flags.writeable = False


@dataclass(frozen=True)
class EncodedBattles:
    """Battles as codes into ``models`` (sorted names, so codes do not depend on row order)."""

    models: tuple[str, ...]
    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray

    @property
    def self_play(self) -> np.ndarray:
        """Rows where a model met itself: they say nothing about relative strength."""
        return self.a == self.b


@dataclass(frozen=True)
class PairCounts:
    """Outcome counts per unordered pair ``i < j``: ``counts[:, 0]`` i won, ``[:, 1]`` j won,
    ``[:, 2]`` ties."""

    n_models: int
    i: np.ndarray
    j: np.ndarray
    counts: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.counts.sum(axis=1)

    @property
    def score_i(self) -> np.ndarray:
        """Model i's score per pair: wins plus half the ties."""
        return self.counts[:, A_WON] + 0.5 * self.counts[:, TIE]

    def tallies(self) -> np.ndarray:
        """Per model: (wins, losses, ties), shape (n_models, 3)."""
        out = np.zeros((self.n_models, 3), dtype=np.int64)
        for col, (for_i, for_j) in enumerate(((A_WON, B_WON), (B_WON, A_WON), (TIE, TIE))):
            out[:, col] += np.bincount(self.i, self.counts[:, for_i], self.n_models).astype(int)
            out[:, col] += np.bincount(self.j, self.counts[:, for_j], self.n_models).astype(int)
        return out

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(battle count, win fraction) as dense (n_models, n_models) arrays.

        Win fraction is row's score against column (ties as halves); NaN where they never met.
        """
        m = self.n_models
        count = np.zeros((m, m), dtype=np.int64)
        score = np.zeros((m, m))
        total, s = self.total, self.score_i
        count[self.i, self.j] = total
        count[self.j, self.i] = total
        score[self.i, self.j] = s
        score[self.j, self.i] = total - s
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.where(count > 0, score / count, np.nan)
        return count, fraction

    def restrict(self, keep: np.ndarray) -> tuple[PairCounts, np.ndarray]:
        """Pairs whose models both satisfy the boolean mask ``keep``, re-indexed, and the original
        model index of each new index."""
        old = np.flatnonzero(keep)
        new_of_old = np.full(self.n_models, -1, dtype=np.int64)
        new_of_old[old] = np.arange(old.size)
        rows = keep[self.i] & keep[self.j]
        sub = PairCounts(
            n_models=old.size,
            i=new_of_old[self.i[rows]],
            j=new_of_old[self.j[rows]],
            counts=self.counts[rows],
        )
        return sub, old


def encode_battles(battles: pd.DataFrame) -> EncodedBattles:
    """Codes for a validated battles frame (see ``schema.validate_battles``)."""
    # Factorising each column and merging the few distinct names avoids a 2N-row concat.
    codes_a, names_a = _factorize(battles["model_a"])
    codes_b, names_b = _factorize(battles["model_b"])
    models = np.array(sorted(set(names_a) | set(names_b)), dtype=object)
    outcome_codes, winners = _factorize(battles["winner"])
    outcome_of = np.array([OUTCOME_CODES[w] for w in winners], dtype=np.int8)
    return EncodedBattles(
        models=tuple(models),
        a=np.searchsorted(models, names_a)[codes_a],
        b=np.searchsorted(models, names_b)[codes_b],
        outcome=outcome_of[outcome_codes],
    )


def _factorize(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    codes, uniques = pd.factorize(values)
    return codes, [str(u) for u in uniques]


def count_pairs(battles: EncodedBattles) -> PairCounts:
    """Aggregate non-self-play battles into per-pair outcome counts."""
    keep = ~battles.self_play
    a, b, outcome = battles.a[keep], battles.b[keep], battles.outcome[keep].astype(np.int64)
    flip = a > b
    i, j = np.where(flip, b, a), np.where(flip, a, b)
    # Seen from the lower index, A's win is a loss when the sides were swapped.
    outcome = np.where(flip & (outcome != TIE), 1 - outcome, outcome)
    m = max(len(battles.models), 1)
    keys, counts = np.unique((i * m + j) * 3 + outcome, return_counts=True)
    pair_keys, pair_of_key = np.unique(keys // 3, return_inverse=True)
    table = np.zeros((pair_keys.size, 3), dtype=np.int64)
    table[pair_of_key, keys % 3] = counts
    return PairCounts(n_models=len(battles.models), i=pair_keys // m, j=pair_keys % m, counts=table)
