"""Bootstrap machinery: exact multinomial resampling of counts, intervals and Rank (UB)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import gammaln, xlogy

Progress = Callable[[int], None]
"""Called with the number of bootstrap rounds just finished."""

_POISSON_MIN_MEAN = 4.0
_MAX_TABLE_ENTRIES = 20_000_000
_TAIL_SDS = 10.0
_INFINITE = 1e300


class CountResampler:
    """Draws Multinomial(N, counts / N): the cell counts of N battles drawn with replacement.

    numpy's ``multinomial`` draws one binomial per cell, each with a new n (about 100 ns apiece),
    which would dominate a 1,000-round bootstrap of a big arena. When cells hold several battles
    on average we Poissonise instead: independent Poisson(c * count) draws, by table inversion,
    sum to S ~ Poisson(cN), and given S = s they are Multinomial(s, p). Rejecting S > N and adding
    Multinomial(N - s, p), drawn battle by battle, gives exactly Multinomial(N, p) (the tables
    drop tails below 1e-20). With c = 1 - 3/sqrt(N) the remainder is about 3 sqrt(N) battles.
    With small cells, drawing all N battles is as cheap and needs no tables.
    """

    def __init__(self, counts: np.ndarray) -> None:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 1 or (counts < 0).any():
            raise ValueError("counts must be a 1-d array of non-negative integers")
        self.n_cells = counts.size
        self.total = int(counts.sum())
        self._cell_of_battle = (
            None if (counts == 1).all() else np.repeat(np.arange(counts.size), counts)
        )
        mean = self.total / max(np.count_nonzero(counts), 1)
        thin = max(0.0, 1.0 - 3.0 / np.sqrt(max(self.total, 1)))
        lam = thin * counts
        dense = mean >= _POISSON_MIN_MEAN and thin > 0.5
        layout = _table_layout(lam) if dense else None
        small = layout is not None and layout[2].sum() <= _MAX_TABLE_ENTRIES
        self._poisson = _PoissonTables(lam, *layout) if small else None

    def draw(
        self, rngs: Sequence[np.random.Generator], out: np.ndarray | None = None
    ) -> np.ndarray:
        """One resampled count vector per generator, as the float64 columns of a (cells,
        rounds) array (``out`` if given); each column sums to N and depends only on its own
        generator."""
        if out is None:
            out = np.empty((self.n_cells, len(rngs)))
        if self._poisson is None:
            for col, rng in enumerate(rngs):
                out[:, col] = self._battles(rng, self.total)
            return out
        uniform = np.stack([rng.random(self.n_cells) for rng in rngs], axis=1)
        counts = self._poisson.invert(uniform)
        totals = counts.sum(axis=0)
        for col in np.flatnonzero(totals > self.total):
            while totals[col] > self.total:
                counts[:, col] = self._poisson.invert(rngs[col].random((self.n_cells, 1)))[:, 0]
                totals[col] = counts[:, col].sum()
        for col, rng in enumerate(rngs):
            counts[:, col] += self._battles(rng, self.total - int(totals[col]))
        out[:] = counts
        return out

    def _battles(self, rng: np.random.Generator, n: int) -> np.ndarray:
        picks = rng.integers(0, self.total, size=n)
        if self._cell_of_battle is not None:
            picks = self._cell_of_battle[picks]
        return np.bincount(picks, minlength=self.n_cells)


class _PoissonTables:
    """Inversion tables (CDF plus guide table, Chen & Asau 1974) for independent Poisson draws.

    Each cell's table covers mean +/- 10 sd (+ slack for small means). Cells are grouped by
    padded table width so each group's CDFs are summed row-wise, exactly per cell, in one 2-d
    block; inverting a whole (cells x rounds) array at once keeps each table in cache.
    """

    def __init__(
        self, lam: np.ndarray, low: np.ndarray, size: np.ndarray, width: np.ndarray
    ) -> None:
        self.low, self.size = low, size
        high = low + size - 1
        order = np.argsort(width, kind="stable")
        ends = np.cumsum(width[order])
        self.start = np.empty(lam.size, dtype=np.int64)
        self.start[order] = ends - width[order]
        self._offset = self.start - self.low
        self.cdf = np.empty(int(ends[-1]) if lam.size else 0)
        self.guide = np.empty(self.cdf.size, dtype=np.int64)
        log_factorial = gammaln(np.arange(int(high.max(initial=0)) + 1) + 1.0)
        first = 0
        for w in np.unique(width):
            cells = order[width[order] == w]
            last = first + cells.size * int(w)
            self.cdf[first:last], self.guide[first:last] = _block(
                lam[cells], self.low[cells], self.size[cells], int(w), log_factorial
            )
            first = last
        # Store absolute positions, saving an addition per draw.
        self.guide += np.repeat(self.start[order], width[order])

    def invert(self, uniform: np.ndarray) -> np.ndarray:
        """Poisson counts from uniforms of shape (cells, rounds)."""
        size = self.size[:, None]
        bucket = (uniform * size).astype(np.int64)
        np.minimum(bucket, size - 1, out=bucket)
        bucket += self.start[:, None]
        at = self.guide[bucket].ravel()
        # The guide never overshoots, so finish with a short forward search.
        flat = uniform.ravel()
        active = np.flatnonzero(self.cdf[at] <= flat)
        while active.size:
            at[active] += 1
            active = active[self.cdf[at[active]] <= flat[active]]
        at = at.reshape(uniform.shape)
        at -= self._offset[:, None]
        return at


def _table_layout(lam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First value, length and padded width of each cell's table."""
    sd = np.sqrt(lam)
    low = np.maximum(0, np.floor(lam - _TAIL_SDS * sd - 10)).astype(np.int64)
    size = np.ceil(lam + _TAIL_SDS * sd + 20).astype(np.int64) - low + 1
    # Pad to at most 25% above the size, so there are few distinct widths.
    step = 2 ** np.maximum(0, np.floor(np.log2(size)).astype(np.int64) - 2)
    return low, size, -(-size // step) * step


def _block(
    lam: np.ndarray, low: np.ndarray, size: np.ndarray, width: int, log_factorial: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened CDF and guide rows for cells sharing one padded table width."""
    offsets = np.arange(width)
    inside = offsets < size[:, None]
    x = np.minimum(low[:, None] + offsets, log_factorial.size - 1)
    log_pmf = xlogy(x, lam[:, None]) - lam[:, None] - log_factorial[x]
    cdf = np.cumsum(np.where(inside, np.exp(log_pmf), 0.0), axis=1)
    cdf /= cdf[np.arange(lam.size), size - 1][:, None]
    cdf[offsets >= (size - 1)[:, None]] = 1.0
    # guide[j] counts the entries certainly <= j / size: a start that never passes the answer.
    first_bucket = np.floor(cdf * size[:, None] + 1e-6).astype(np.int64) + 1
    first_bucket[~inside] = width + 1
    row = np.arange(lam.size)[:, None] * (width + 2)
    per_bucket = np.bincount((first_bucket + row).ravel(), minlength=lam.size * (width + 2))
    guide = np.cumsum(per_bucket.reshape(lam.size, width + 2), axis=1)[:, :width]
    return cdf.ravel(), guide.ravel()


def round_generators(seed: int, rounds: int, stream: int) -> list[np.random.Generator]:
    """One generator per round, so results do not depend on how rounds are batched."""
    sequence = np.random.SeedSequence(seed, spawn_key=(stream,))
    return [np.random.default_rng(s) for s in sequence.spawn(rounds)]


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column of ``samples`` (rounds x models).

    Infinite samples (a model that won or lost every battle of a resample) give an infinite
    bound when the percentile falls on or beyond them; NaN samples (a model absent from a
    resample) are left out. Columns without any finite or infinite sample give NaN.
    """
    tail = (1.0 - level) / 2.0
    if 0 in samples.shape:
        nan = np.full(samples.shape[1], np.nan)
        return nan, nan.copy()
    clipped = np.clip(samples, -_INFINITE, _INFINITE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        lower, upper = np.nanquantile(clipped, [tail, 1.0 - tail], axis=0)
    return _unclip(lower), _unclip(upper)


def _unclip(values: np.ndarray) -> np.ndarray:
    out = values.copy()
    out[values >= _INFINITE / 10] = np.inf
    out[values <= -_INFINITE / 10] = -np.inf
    return out


def rank_upper_bound(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Rank (UB): 1 + the number of models whose lower bound is above this one's upper bound."""
    return 1 + (lower[None, :] > upper[:, None]).sum(axis=1)
