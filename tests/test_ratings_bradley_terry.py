"""Correctness of the Bradley-Terry ratings, intervals and ranks on simulated and edge-case data."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from arena.ratings import (
    TABLE_COLUMNS,
    Anchor,
    FilterConfig,
    RatingInputError,
    Standing,
    compute_leaderboard,
)
from arena.ratings.bootstrap import rank_upper_bound
from arena.ratings.bradley_terry import POINTS_PER_UNIT
from arena.ratings.simulate import random_ratings, simulate_battles

NO_FILTERS = FilterConfig(anonymous_only=False, identity_leak=False, dedup_prompts=False)


def battles(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def by_model(board) -> pd.DataFrame:
    return board.table.set_index("model")


@pytest.fixture(scope="module")
def truth() -> pd.Series:
    return random_ratings(8, seed=11, spread=120)


@pytest.fixture(scope="module")
def sample(truth) -> pd.DataFrame:
    return simulate_battles(truth, 30_000, seed=5)


def test_recovers_known_ratings(truth, sample):
    board = compute_leaderboard(sample, bootstrap_rounds=200, seed=1)
    table = by_model(board)
    assert list(table.index) == list(truth.sort_values(ascending=False).index)
    error = (table["rating"] - truth[table.index]).abs()
    half_width = (table["ci_upper"] - table["ci_lower"]) / 2
    assert (error < 2 * half_width).all(), error
    assert error.max() < 15
    assert table["rating"].mean() == pytest.approx(1000.0, abs=1e-9)


def test_matches_an_independent_fit_of_the_plain_likelihood(sample):
    names = sorted(set(sample["model_a"]) | set(sample["model_b"]))
    a = sample["model_a"].map(names.index).to_numpy()
    b = sample["model_b"].map(names.index).to_numpy()
    score = sample["winner"].map({"model_a": 1.0, "model_b": 0.0}).fillna(0.5).to_numpy()

    def negative_log_likelihood(free):
        theta = np.concatenate([[0.0], free])
        d = theta[a] - theta[b]
        value = np.sum(score * np.logaddexp(0, -d) + (1 - score) * np.logaddexp(0, d))
        residual = score - 1 / (1 + np.exp(-d))
        grad = np.bincount(a, -residual, len(names)) - np.bincount(b, -residual, len(names))
        return value, grad[1:]

    result = minimize(
        negative_log_likelihood,
        np.zeros(len(names) - 1),
        jac=True,
        method="BFGS",
        options={"gtol": 1e-9},
    )
    theta = np.concatenate([[0.0], result.x])
    expected = pd.Series(1000 + POINTS_PER_UNIT * (theta - theta.mean()), index=names)
    table = by_model(compute_leaderboard(sample, bootstrap_rounds=0))
    np.testing.assert_allclose(table["rating"], expected[table.index], atol=1e-4)


def test_intervals_cover_the_truth_at_about_the_nominal_rate():
    truth = random_ratings(6, seed=3, spread=100)
    covered = []
    for sim in range(40):
        sample = simulate_battles(truth, 2_000, seed=100 + sim)
        table = by_model(compute_leaderboard(sample, bootstrap_rounds=200, seed=sim))
        true = truth[table.index]
        covered.extend((table["ci_lower"] <= true) & (true <= table["ci_upper"]))
    assert 0.89 <= np.mean(covered) <= 0.99


def test_ties_and_both_bad_count_as_halves(sample):
    base = compute_leaderboard(sample, bootstrap_rounds=50)
    relabelled = sample.assign(
        winner=sample["winner"].replace({"tie": "tie (bothbad)", "tie (bothbad)": "tie"})
    )
    pd.testing.assert_frame_equal(
        compute_leaderboard(relabelled, bootstrap_rounds=50).table, base.table
    )
    # Two ties between the same sides weigh exactly as one win each way.
    ties = sample.index[sample["winner"].str.startswith("tie")]
    first_pair = sample.loc[ties, ["model_a", "model_b"]].apply(tuple, axis=1)
    twins = first_pair[first_pair == first_pair.iloc[0]].index[:2]
    split = sample.copy()
    split.loc[twins, "winner"] = ["model_a", "model_b"]
    np.testing.assert_allclose(
        by_model(compute_leaderboard(split, bootstrap_rounds=0))["rating"],
        by_model(compute_leaderboard(sample, bootstrap_rounds=0))["rating"],
        atol=1e-9,
    )


def test_swapping_sides_with_the_winner_changes_nothing(sample):
    rng = np.random.default_rng(0)
    swap = rng.random(len(sample)) < 0.5
    swapped = sample.copy()
    swapped.loc[swap, ["model_a", "model_b"]] = sample.loc[swap, ["model_b", "model_a"]].values
    swapped.loc[swap, "winner"] = sample.loc[swap, "winner"].replace(
        {"model_a": "model_b", "model_b": "model_a"}
    )
    base = compute_leaderboard(sample, bootstrap_rounds=100, seed=4).table
    other = compute_leaderboard(swapped, bootstrap_rounds=100, seed=4).table
    exact = ["model", "rating", "ci_lower", "ci_upper", "rank", "votes", "wins", "ties"]
    pd.testing.assert_frame_equal(other[exact], base[exact])
    np.testing.assert_allclose(other["elo"], base["elo"], rtol=1e-12)


def test_shuffled_input_gives_the_same_table(sample):
    shuffled = sample.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(
        compute_leaderboard(shuffled, bootstrap_rounds=100, seed=2).table,
        compute_leaderboard(sample, bootstrap_rounds=100, seed=2).table,
    )


def test_seed_makes_the_bootstrap_reproducible(sample):
    first = compute_leaderboard(sample, bootstrap_rounds=60, seed=7).table
    again = compute_leaderboard(sample, bootstrap_rounds=60, seed=7).table
    pd.testing.assert_frame_equal(again, first)
    other = compute_leaderboard(sample, bootstrap_rounds=60, seed=8).table
    assert not np.allclose(other["ci_lower"], first["ci_lower"])
    assert (other["rating"] == first["rating"]).all()


def test_anchor_holds_one_model_and_keeps_differences(sample):
    plain = by_model(compute_leaderboard(sample, bootstrap_rounds=50))
    board = compute_leaderboard(sample, bootstrap_rounds=50, anchor=Anchor("model-003", 1250.0))
    anchored = by_model(board)
    assert anchored.loc["model-003", ["rating", "ci_lower", "ci_upper"]].tolist() == [1250.0] * 3
    np.testing.assert_allclose(
        anchored["rating"] - plain["rating"][anchored.index],
        1250.0 - plain.loc["model-003", "rating"],
    )
    assert board.anchor == Anchor("model-003", 1250.0)
    with pytest.raises(RatingInputError, match="anchor model 'nope' is not among the rated"):
        compute_leaderboard(sample, bootstrap_rounds=0, anchor=Anchor("nope", 1000))


def test_anchor_parsing():
    assert Anchor.parse("gpt-4=1200") == Anchor("gpt-4", 1200.0)
    assert Anchor.parse("a=b=1100.5") == Anchor("a=b", 1100.5)
    for bad in ("gpt-4", "=1200", "gpt-4=high", "gpt-4=nan"):
        with pytest.raises(RatingInputError, match="MODEL=SCORE"):
            Anchor.parse(bad)


def test_rank_upper_bound_counts_models_clearly_above():
    lower = np.array([1100.0, 1090.0, 1000.0, 995.0])
    upper = np.array([1120.0, 1105.0, 1080.0, 1010.0])
    # Model 3's upper bound (1010) is below the lower bounds of models 0 and 1 only.
    assert rank_upper_bound(lower, upper).tolist() == [1, 1, 3, 3]


def test_table_columns_votes_and_matrices():
    board = compute_leaderboard(
        battles(
            ("a", "b", "model_a"),
            ("a", "b", "model_b"),
            ("b", "a", "tie"),
            ("a", "c", "model_a"),
            ("c", "a", "model_a"),
            ("b", "c", "tie (bothbad)"),
            ("c", "b", "model_b"),
        ),
        bootstrap_rounds=20,
    )
    assert tuple(board.table.columns) == TABLE_COLUMNS
    a = by_model(board).loc["a"]
    assert (a["votes"], a["wins"], a["losses"], a["ties"]) == (5, 2, 2, 1)
    assert a["win_rate"] == pytest.approx(2.5 / 5)
    assert board.battle_count.loc["a", "b"] == board.battle_count.loc["b", "a"] == 3
    assert board.win_fraction.loc["a", "b"] == pytest.approx(0.5)
    assert board.win_fraction.loc["b", "c"] == pytest.approx(0.75)
    assert board.win_fraction.loc["c", "b"] == pytest.approx(0.25)
    assert np.isnan(board.win_fraction.loc["a", "a"])
    assert board.battles_used == 7
    json.dumps(board.to_records(), allow_nan=False)


def test_models_that_never_lost_or_never_won_are_listed_as_unrated():
    rows = [("a", "b", "model_a"), ("b", "a", "model_a"), ("a", "c", "tie"), ("b", "c", "model_b")]
    rows += [("c", "a", "model_a"), ("top", "a", "model_a"), ("b", "top", "model_b")]
    rows += [("bottom", "c", "model_b"), ("a", "bottom", "model_a"), ("z", "top", "model_b")]
    board = compute_leaderboard(battles(*rows), bootstrap_rounds=20)
    assert set(board.table["model"]) == {"a", "b", "c"}
    unrated = board.unrated.set_index("model")
    assert unrated.loc["top", "reason"] == Standing.UNBOUNDED_ABOVE
    assert unrated.loc["bottom", "reason"] == Standing.UNBOUNDED_BELOW
    # z only lost to top, which is itself outside the rated group.
    assert unrated.loc["z", "reason"] == Standing.NOT_COMPARABLE
    assert unrated.loc["top", "votes"] == 3
    assert board.battles_used == 5
    # The rated models' fit is the fit without the unrated models' battles.
    alone = compute_leaderboard(battles(*rows[:5]), bootstrap_rounds=0)
    np.testing.assert_allclose(by_model(board)["rating"], by_model(alone)["rating"])


def test_models_connected_to_nobody_rated_and_self_play():
    rows = [("a", "b", "model_a"), ("b", "a", "model_a"), ("a", "b", "tie")]
    rows += [("x", "y", "model_a"), ("y", "x", "model_a"), ("solo", "solo", "model_a")]
    board = compute_leaderboard(battles(*rows), bootstrap_rounds=10)
    assert list(board.table["model"]) == ["a", "b"] or list(board.table["model"]) == ["b", "a"]
    reasons = board.unrated.set_index("model")["reason"]
    assert reasons["x"] == reasons["y"] == Standing.NOT_CONNECTED
    assert reasons["solo"] == Standing.NO_BATTLES
    self_play = next(s for s in board.filter_report if s.name == "self_play")
    assert self_play.removed == 1
    assert any("not rated" in note for note in board.notes)


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([("a", "a", "model_a"), ("a", "a", "tie")], Standing.NO_BATTLES),
        ([("a", "b", "model_a"), ("a", "b", "model_a")], Standing.NO_GROUP),
    ],
    ids=["one-model-only", "one-sided-pair"],
)
def test_nothing_rateable_gives_an_empty_table_and_a_note(rows, reason):
    board = compute_leaderboard(battles(*rows), bootstrap_rounds=10)
    assert board.table.empty
    assert set(board.unrated["reason"]) == {reason}
    assert board.notes
    assert board.to_records() == []


def test_empty_input_gives_an_empty_leaderboard():
    board = compute_leaderboard(battles(), bootstrap_rounds=10)
    assert board.table.empty and board.unrated.empty
    assert board.battles_in == 0
    assert board.notes == ("no battles between two different models left to rate",)


def test_resamples_where_a_model_wins_everything_give_infinite_bounds():
    rows = [("a", "b", "model_a"), ("b", "a", "model_a"), ("a", "c", "model_b")] * 20
    rows += [("c", "b", "tie")] * 10 + [("d", "a", "model_a")] * 6 + [("d", "b", "model_b")]
    board = compute_leaderboard(battles(*rows), bootstrap_rounds=300, seed=0)
    d = by_model(board).loc["d"]
    assert np.isinf(d["ci_upper"]) and np.isfinite(d["ci_lower"])
    assert d["rank"] == 1
    record = next(r for r in board.to_records() if r["model"] == "d")
    assert record["ci_upper"] is None


def test_two_models_get_mirrored_intervals_even_when_resamples_are_one_sided():
    rows = [("a", "b", "model_a")] * 3 + [("a", "b", "model_b")] * 2
    table = by_model(compute_leaderboard(battles(*rows), bootstrap_rounds=300, seed=1))
    a, b = table.loc["a"], table.loc["b"]
    assert a["rating"] + b["rating"] == pytest.approx(2000.0)
    # a swept about 8% of the resamples, b about 1%.
    assert a["ci_upper"] == np.inf and np.isfinite(a["ci_lower"])
    assert b["ci_lower"] == -np.inf
    assert a["ci_lower"] == pytest.approx(2000.0 - b["ci_upper"])


def test_unknown_winner_and_missing_column_are_named():
    frame = battles(("a", "b", "model_a"), ("a", "b", "draw"))
    with pytest.raises(RatingInputError) as err:
        compute_leaderboard(frame)
    allowed = "model_a, model_b, tie, tie (bothbad)"
    assert str(err.value) == f"row 1: winner 'draw' is not one of {allowed}"
    with pytest.raises(RatingInputError, match="missing column 'winner'"):
        compute_leaderboard(frame.drop(columns="winner"))
    with pytest.raises(RatingInputError, match="row 0: model_b is missing"):
        compute_leaderboard(battles(("a", None, "tie")))
    with pytest.raises(RatingInputError, match="row 0: model_a is empty"):
        compute_leaderboard(battles(("  ", "b", "tie")))
    with pytest.raises(RatingInputError, match="row 0: tstamp must be epoch seconds"):
        compute_leaderboard(battles(("a", "b", "tie")).assign(tstamp=["yesterday"]))


def test_progress_reports_every_round(sample):
    seen = []
    compute_leaderboard(sample, bootstrap_rounds=130, progress=seen.append)
    assert sum(seen) == 130


def test_categorical_names_give_the_same_result(truth):
    plain = simulate_battles(truth, 5_000, seed=9)
    compact = simulate_battles(truth, 5_000, seed=9, categorical=True)
    pd.testing.assert_frame_equal(
        compute_leaderboard(compact, bootstrap_rounds=30).table,
        compute_leaderboard(plain, bootstrap_rounds=30).table,
    )
