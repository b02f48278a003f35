"""Synthetic battles from known ratings, for tests and benchmarks.

Outcomes follow the model the engine fits: model A's expected score is
sigmoid(theta_a - theta_b) (ties as half), with a share of ties drawn so that this holds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from arena.ratings.bradley_terry import BASE_RATING, POINTS_PER_UNIT
from arena.ratings.schema import WINNER_VALUES


def random_ratings(n_models: int, *, seed: int = 0, spread: float = 150.0) -> pd.Series:
    """Ratings (mean 1000, normal with sd ``spread``) for models named model-000, model-001..."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, spread, n_models)
    width = max(3, len(str(n_models - 1)))
    names = [f"model-{k:0{width}d}" for k in range(n_models)]
    return pd.Series(BASE_RATING + values - values.mean(), index=names, name="rating")


def simulate_battles(
    ratings: pd.Series,
    n_battles: int,
    *,
    seed: int = 0,
    tie_rate: float = 0.15,
    both_bad_share: float = 0.3,
    logit_offset: np.ndarray | None = None,
    categorical: bool = False,
) -> pd.DataFrame:
    """Battles between random distinct pairs, sides at random, with ``tstamp`` increasing.

    ``logit_offset`` (one value per battle) is added to A's logit, e.g. a style effect.
    ``categorical`` stores model names as a pandas Categorical (far less memory for big runs).
    """
    rng = np.random.default_rng(seed)
    names = np.asarray(ratings.index, dtype=object)
    theta = (ratings.to_numpy(dtype=float) - BASE_RATING) / POINTS_PER_UNIT
    m = names.size
    a = rng.integers(0, m, n_battles)
    b = (a + rng.integers(1, m, n_battles)) % m
    logit = theta[a] - theta[b]
    if logit_offset is not None:
        logit = logit + logit_offset
    p = 1.0 / (1.0 + np.exp(-logit))
    tie_p = np.minimum(tie_rate, 2.0 * np.minimum(p, 1.0 - p))
    tie = rng.random(n_battles) < tie_p
    a_wins = rng.random(n_battles) < (p - tie_p / 2) / (1.0 - tie_p)
    both_bad = rng.random(n_battles) < both_bad_share
    # Codes into WINNERS: model_a, model_b, tie, tie (bothbad).
    outcome = np.where(tie, np.where(both_bad, 3, 2), np.where(a_wins, 0, 1))
    columns = {
        "model_a": pd.Categorical.from_codes(a, categories=names),
        "model_b": pd.Categorical.from_codes(b, categories=names),
        "winner": pd.Categorical.from_codes(outcome, categories=list(WINNER_VALUES)),
    }
    if not categorical:
        columns = {key: np.asarray(value).astype(str) for key, value in columns.items()}
    return pd.DataFrame({**columns, "tstamp": 1.7e9 + np.arange(n_battles, dtype=float)})
