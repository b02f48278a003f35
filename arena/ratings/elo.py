"""Online Elo, Chatbot Arena's historical reference column.

Unlike Bradley-Terry it depends on the order of the battles, so it is only shown for reference.
"""

from __future__ import annotations

import math

import numpy as np

K_FACTOR = 4.0
SCALE = 400.0
BASE = 10.0
INITIAL = 1000.0
_SLICE = 1 << 20


def online_elo(a: np.ndarray, b: np.ndarray, score_a: np.ndarray, n_models: int) -> np.ndarray:
    """Ratings after replaying battles in the given order (K=4, base 10, scale 400, from 1000).

    ``a`` and ``b`` are model codes, ``score_a`` model A's score (1, 0 or 0.5 for ties).
    """
    ratings = [INITIAL] * n_models
    slope = math.log(BASE) / SCALE
    exp = math.exp
    # A plain loop over Python lists: the recurrence is sequential, and this is several times
    # faster than indexing numpy arrays element by element. Slices bound the lists' memory.
    for start in range(0, a.size, _SLICE):
        part = slice(start, start + _SLICE)
        rows = zip(a[part].tolist(), b[part].tolist(), score_a[part].tolist(), strict=True)
        for i, j, s in rows:
            ri, rj = ratings[i], ratings[j]
            delta = K_FACTOR * (s - 1.0 / (1.0 + exp(slope * (rj - ri))))
            ratings[i] = ri + delta
            ratings[j] = rj - delta
    return np.array(ratings)
