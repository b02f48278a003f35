"""The resampler draws exact multinomial counts, the batched solver matches the exact one, and
intervals handle infinite samples."""

import numpy as np
import pytest
from scipy import stats

from arena.ratings.aggregate import count_pairs, encode_battles
from arena.ratings.bootstrap import CountResampler, interval, round_generators
from arena.ratings.logistic import Design, chord, hessian, newton
from arena.ratings.simulate import random_ratings, simulate_battles


@pytest.mark.parametrize(
    "counts",
    [
        np.array([2, 9, 40, 200, 3]),  # dense enough for the Poisson tables
        np.array([1, 1, 3, 0, 2, 1, 1]),  # small cells: battle-by-battle draws
    ],
    ids=["poisson-tables", "battle-draws"],
)
def test_draws_are_multinomial(counts):
    resampler = CountResampler(counts)
    draws = resampler.draw(round_generators(seed=1, rounds=40_000, stream=0)).T.astype(np.int64)
    n, p = counts.sum(), counts / counts.sum()
    assert (draws.sum(axis=1) == n).all()
    assert (draws[:, counts == 0] == 0).all()
    se = np.sqrt(n * p * (1 - p) / len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - n * p) <= 4.5 * se + 1e-12)
    np.testing.assert_allclose(draws.var(axis=0), n * p * (1 - p), rtol=0.04, atol=1e-12)
    variance = n * p * (1 - p)
    cov_se = np.sqrt(variance[2] * variance[4] / len(draws))
    assert np.cov(draws[:, 2], draws[:, 4])[0, 1] == pytest.approx(-n * p[2] * p[4], abs=4 * cov_se)
    # The whole marginal of one cell, not only its moments.
    cell = int(np.argmax(counts))
    observed = np.bincount(draws[:, cell], minlength=n + 1)
    expected = stats.binom.pmf(np.arange(n + 1), n, p[cell]) * len(draws)
    enough = expected > 5
    chi = ((observed[enough] - expected[enough]) ** 2 / expected[enough]).sum()
    assert stats.chi2.sf(chi, enough.sum() - 1) > 1e-3


def test_uses_poisson_tables_only_for_dense_cells():
    assert CountResampler(np.full(50, 40))._poisson is not None
    assert CountResampler(np.ones(500, dtype=int))._poisson is None


def test_rounds_do_not_depend_on_batching():
    resampler = CountResampler(np.arange(1, 200) * 7)
    whole = resampler.draw(round_generators(4, 50, 0))
    generators = round_generators(4, 50, 0)
    parts = [resampler.draw(generators[k : k + 7]) for k in range(0, 50, 7)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)


def test_interval_with_infinite_and_missing_samples():
    samples = np.array(
        [[1.0, 5.0, np.nan], [2.0, np.inf, np.nan], [3.0, 6.0, np.nan], [4.0, np.inf, np.nan]]
    )
    lower, upper = interval(samples, level=0.5)
    assert lower[0] == pytest.approx(1.75) and upper[0] == pytest.approx(3.25)
    assert lower[1] == pytest.approx(5.75) and upper[1] == np.inf
    assert np.isnan(lower[2]) and np.isnan(upper[2])
    lower, upper = interval(np.array([[-np.inf], [-np.inf], [0.0]]), level=0.5)
    assert lower[0] == -np.inf and upper[0] == -np.inf


def test_chord_iterations_agree_with_newton_per_round():
    truth = random_ratings(12, seed=2)
    pairs = count_pairs(encode_battles(simulate_battles(truth, 5_000, seed=3)))
    design = Design(pairs.i, pairs.j, pairs.n_models)
    full, _ = newton(design, pairs.score_i, pairs.total.astype(float), np.zeros(12))
    inverse = np.linalg.inv(hessian(design, full, pairs.total.astype(float)))
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.8, 1.2, size=(pairs.i.size, 6))
    total, score = pairs.total[:, None] * scale, pairs.score_i[:, None] * scale
    fitted, converged = chord(design, score, total, full, inverse)
    assert converged.all()
    for col in range(6):
        exact, ok = newton(design, score[:, col], total[:, col], full)
        assert ok
        np.testing.assert_allclose(fitted[:, col], exact, atol=1e-7)
    _, converged = chord(design, score, total, full, inverse, max_iter=1)
    assert not converged.any()
