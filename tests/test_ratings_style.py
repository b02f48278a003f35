"""Style control: feature extraction, the joint fit, and what it reports."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from arena.ratings import STYLE_COLUMNS, RatingInputError, compute_leaderboard
from arena.ratings.bradley_terry import POINTS_PER_UNIT
from arena.ratings.simulate import random_ratings, simulate_battles
from arena.ratings.style import (
    PENALTY,
    fit_style,
    reply_counts,
    style_counts,
    style_design,
    style_features,
)

MARKDOWN = """# Title
Intro with **bold** and __also bold__ text.
## Section
- one
- two
  * nested
1. first
2. second
```python
# not a header
- not a list **nor bold**
```
Done."""


def test_reply_counts_follow_chatbot_arenas_markdown_rules():
    length, headers, lists, bold = reply_counts([MARKDOWN, "", "plain words"])[0]
    without_code = MARKDOWN.split("```")[0] + MARKDOWN.split("```")[2]
    assert (headers, lists, bold) == (2, 5, 2)
    assert length == len(without_code)
    np.testing.assert_array_equal(reply_counts(["", "plain words"]), [[0, 0, 0, 0], [11, 0, 0, 0]])


def style_battles(n: int, seed: int, effect: float) -> tuple[pd.DataFrame, pd.Series]:
    """Battles whose outcome also depends on relative length; model-000 writes long replies."""
    rng = np.random.default_rng(seed)
    truth = random_ratings(6, seed=seed, spread=80)
    verbosity = pd.Series(500.0, index=truth.index)
    verbosity["model-000"] = 2000.0
    base = simulate_battles(truth, n, seed=seed)
    length_a = rng.gamma(4.0, verbosity[base["model_a"]].to_numpy() / 4.0)
    length_b = rng.gamma(4.0, verbosity[base["model_b"]].to_numpy() / 4.0)
    offset = effect * (length_a - length_b) / (length_a + length_b + 1)
    battles = simulate_battles(truth, n, seed=seed, logit_offset=offset)
    counts = {"length_a": length_a.round(), "length_b": length_b.round()}
    for name in ("header_count", "list_count", "bold_count"):
        counts |= {f"{name}_a": rng.poisson(1.0, n), f"{name}_b": rng.poisson(1.0, n)}
    return battles.assign(**counts), truth


@pytest.fixture(scope="module")
def styled():
    return style_battles(20_000, seed=2, effect=1.5)


def test_style_control_separates_length_from_strength(styled):
    battles, truth = styled
    board = compute_leaderboard(battles, bootstrap_rounds=100, style_control=True)
    table = board.table.set_index("model")
    assert set(STYLE_COLUMNS) <= set(table.columns)
    verbose = "model-000"
    # Plain ratings credit the long replies; style-controlled ones recover the truth.
    assert table.loc[verbose, "rating"] - truth[verbose] > 40
    style_error = (table["style_rating"] - truth[table.index]).abs()
    half_width = (table["style_ci_upper"] - table["style_ci_lower"]) / 2
    assert (style_error < 2.5 * half_width).all(), style_error
    coefficients = board.style_coefficients.set_index("feature")
    length = coefficients.loc["length"]
    ratio = (battles["length_a"] - battles["length_b"]) / (
        battles["length_a"] + battles["length_b"] + 1
    )
    expected = 1.5 * math.sqrt((ratio**2).mean()) * POINTS_PER_UNIT
    half_width = (length["ci_upper"] - length["ci_lower"]) / 2
    assert abs(length["coefficient"] - expected) < 2 * half_width
    assert length["ci_lower"] > 0
    others = coefficients.drop(index="length")["coefficient"]
    assert (others.abs() < 0.1 * expected).all()


def test_style_fit_matches_an_independent_optimiser(styled):
    battles, _ = styled
    small = battles.iloc[:3000]
    names = sorted(set(small["model_a"]) | set(small["model_b"]))
    first = small["model_a"].map(names.index).to_numpy()
    second = small["model_b"].map(names.index).to_numpy()
    score = small["winner"].map({"model_a": 1.0, "model_b": 0.0}).fillna(0.5).to_numpy()
    features = style_features(style_counts(small))
    fit = fit_style(style_design(first, second, len(names), features), score)

    def objective(params):
        # Chatbot Arena's form: ratings in log10 units, logit = ln(10) * diff + features . beta.
        ratings, beta = params[: len(names)], params[len(names) :]
        eta = math.log(10) * (ratings[first] - ratings[second]) + features @ beta
        loss = np.sum(score * np.logaddexp(0, -eta) + (1 - score) * np.logaddexp(0, eta))
        return loss + PENALTY / 2 * np.sum(params**2)

    result = minimize(objective, np.zeros(len(names) + 4), method="BFGS", options={"gtol": 1e-8})
    # The penalty pins the mean only weakly, so BFGS stops short of it: compare centred, and
    # check ours sits at the exact optimum's zero mean.
    theirs = result.x[: len(names)] * math.log(10)
    assert abs(fit.strength.mean()) < 1e-12
    np.testing.assert_allclose(fit.strength, theirs - theirs.mean(), atol=1e-6)
    np.testing.assert_allclose(fit.coefficients, result.x[len(names) :], atol=1e-6)


def test_style_results_ignore_side_order_and_row_order(styled):
    battles, _ = styled
    small = battles.iloc[:4000]
    swap = np.random.default_rng(1).random(len(small)) < 0.5
    swapped = small.copy()
    for left, right in [("model_a", "model_b")] + [
        (f"{k}_a", f"{k}_b") for k in ("length", "header_count", "list_count", "bold_count")
    ]:
        swapped.loc[swap, [left, right]] = small.loc[swap, [right, left]].to_numpy()
    swapped.loc[swap, "winner"] = small.loc[swap, "winner"].replace(
        {"model_a": "model_b", "model_b": "model_a"}
    )
    swapped = swapped.sample(frac=1.0, random_state=2)
    columns = ["model", *STYLE_COLUMNS]
    base = compute_leaderboard(small, bootstrap_rounds=30, style_control=True)
    other = compute_leaderboard(swapped, bootstrap_rounds=30, style_control=True)
    pd.testing.assert_frame_equal(other.table[columns], base.table[columns], rtol=1e-9)
    pd.testing.assert_frame_equal(other.style_coefficients, base.style_coefficients, rtol=1e-9)


def test_counts_come_from_columns_metadata_or_conversations():
    replies = {"a": ["# Hi\n- x\n**b**", "short"], "b": ["plain", "1. one\n2. two"]}
    conversations = {
        f"conversation_{side}": [
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}]
            for text in texts
        ]
        for side, texts in replies.items()
    }
    from_text = style_counts(pd.DataFrame(conversations))
    metadata = [
        {
            f"sum_assistant_{s}_tokens": int(from_text[row, k, 0]),
            f"header_count_{s}": {"h1": int(from_text[row, k, 1]), "h2": 0},
            f"list_count_{s}": {"ordered": int(from_text[row, k, 2]), "unordered": 0},
            f"bold_count_{s}": {"**": int(from_text[row, k, 3]), "__": 0},
        }
        for row in range(2)
        for k, s in enumerate("ab")
    ]
    merged = [metadata[0] | metadata[1], metadata[2] | metadata[3]]
    np.testing.assert_array_equal(style_counts(pd.DataFrame({"conv_metadata": merged})), from_text)
    assert from_text[0, 0].tolist() == [len("# Hi\n- x\n**b**"), 1, 1, 1]
    with pytest.raises(RatingInputError, match="style control needs"):
        style_counts(pd.DataFrame({"model_a": ["x"]}))
    with pytest.raises(RatingInputError, match=r"row 0: length_a must be a non-negative number"):
        bad = {c: [1] for c in ("header_count", "list_count", "bold_count")}
        frame = pd.DataFrame({"length_a": [-1], "length_b": [1]})
        for name in bad:
            frame[f"{name}_a"] = frame[f"{name}_b"] = 1
        style_counts(frame)
