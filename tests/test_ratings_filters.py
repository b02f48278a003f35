"""Each filter removes what it should, reports it, and can be switched off."""

import numpy as np
import pandas as pd
import pytest

from arena.ratings import (
    Anchor,
    FilterConfig,
    RatingInputError,
    available_categories,
    category_ratings,
    compute_leaderboard,
)
from arena.ratings.filters import apply_filters, identity_pattern

NOTHING = FilterConfig(
    anonymous_only=False, drop_failed=False, identity_leak=False, dedup_prompts=False
)


def conversation(prompt: str, reply: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


def frame(n: int, **columns) -> pd.DataFrame:
    base = {"model_a": ["a"] * n, "model_b": ["b"] * n, "winner": ["model_a"] * n}
    return pd.DataFrame({**base, **columns})


def step(report, name):
    return next(s for s in report if s.name == name)


def test_anonymous_only():
    battles = frame(4, anony=[True, False, True, None])
    kept, report = apply_filters(battles, FilterConfig())
    assert len(kept) == 2
    assert step(report, "anonymous_only").removed == 2
    kept, report = apply_filters(battles, FilterConfig(anonymous_only=False))
    assert len(kept) == 4 and not step(report, "anonymous_only").enabled
    with pytest.raises(RatingInputError, match="row 1: anony must be true or false, got 'yes'"):
        apply_filters(frame(2, anony=[True, "yes"]), FilterConfig())


def test_failed_and_moderated_battles_are_dropped():
    battles = frame(4, has_error=[False, True, False, False], moderated=[0, 0, 1, 0])
    kept, report = apply_filters(battles, NOTHING)
    assert len(kept) == 4
    kept, report = apply_filters(battles, FilterConfig(drop_failed=True, dedup_prompts=False))
    assert kept.index.tolist() == [0, 3]
    assert step(report, "failed_or_moderated").removed == 2
    public = frame(2, openai_moderation=[{"flagged": True}, {"flagged": False}])
    kept, _ = apply_filters(public, FilterConfig(dedup_prompts=False))
    assert kept.index.tolist() == [1]


def test_missing_columns_remove_nothing_and_say_so():
    kept, report = apply_filters(frame(3), FilterConfig(daily_vote_cap=1, anomalous_users=True))
    assert len(kept) == 3
    notes = {s.name: s.note for s in report}
    assert "no anony column" in notes["anonymous_only"]
    assert "no conversation columns" in notes["identity_leak"]
    assert "no judge" in notes["daily_vote_cap"] and "no judge" in notes["anomalous_users"]


def test_identity_leak_matches_whole_words_in_the_models_own_replies():
    rows = [
        ("gpt-4", "claude-2", "Hi", "I am ChatGPT, made by OpenAI.", "Hello!"),  # leak
        ("claude-2", "gpt-4", "Hi", "OpenAI makes good models.", "Hello!"),  # other maker
        ("gpt-4", "claude-2", "Are you ChatGPT?", "I can't say.", "Nope."),  # prompt only
        ("palm-2", "claude-2", "History?", "Napalm was used in the war.", "Yes."),  # napalm
        ("claude-2", "palm-2", "Who are you?", "An assistant.", "I am PaLM."),  # leak, side B
        ("demo-x", "claude-2", "Who?", "Open Feedback Arena built me.", "Hi."),  # extra term
    ]
    battles = pd.DataFrame(
        {
            "model_a": [r[0] for r in rows],
            "model_b": [r[1] for r in rows],
            "winner": "tie",
            "conversation_a": [conversation(r[2], r[3]) for r in rows],
            "conversation_b": [conversation(r[2], r[4]) for r in rows],
        }
    )
    config = FilterConfig(dedup_prompts=False, identity_terms={"demo-x": ["Open Feedback Arena"]})
    kept, report = apply_filters(battles, config)
    assert kept.index.tolist() == [1, 2, 3]
    assert step(report, "identity_leak").removed == 3
    assert identity_pattern("gpt-4-0613").search("As GPT-4, I think")
    assert not identity_pattern("gpt-4-0613").search("chatgptish")


def test_repeated_prompts_are_subsampled_independently_of_row_order():
    prompts = ["hi"] * 30 + [f"question {k}" for k in range(30)]
    battles = pd.DataFrame(
        {
            "model_a": np.where(np.arange(60) % 2 == 0, "a", "b"),
            "model_b": np.where(np.arange(60) % 2 == 0, "b", "a"),
            "winner": "model_a",
            "tstamp": np.arange(60.0),
            "conversation_a": [conversation(p, "ok") for p in prompts],
            "conversation_b": [conversation(p, "ok") for p in prompts],
        }
    )
    config = FilterConfig(identity_leak=False, max_prompt_repeats=4)
    kept, report = apply_filters(battles, config)
    assert step(report, "repeated_prompts").removed == 26
    assert (kept.index >= 30).sum() == 30
    shuffled, _ = apply_filters(battles.sample(frac=1, random_state=1), config)
    assert sorted(shuffled.index) == sorted(kept.index)
    reseeded = FilterConfig(identity_leak=False, max_prompt_repeats=4, seed=9)
    other_seed, _ = apply_filters(battles, reseeded)
    assert sorted(other_seed.index) != sorted(kept.index)
    # Automatic cap: "hi" is above the 99.99th percentile of prompt counts.
    _, report = apply_filters(battles, FilterConfig(identity_leak=False))
    assert step(report, "repeated_prompts").removed > 0


def test_daily_vote_cap_keeps_the_earliest_votes_per_user_and_day():
    day = 86_400.0
    stamps = [10.0, 5.0, 20.0, 30.0, day + 1, day + 2, 3.0]
    battles = frame(7, judge=["u1"] * 6 + [None], tstamp=stamps)
    kept, report = apply_filters(battles, FilterConfig(dedup_prompts=False, daily_vote_cap=2))
    assert sorted(kept.index) == [0, 1, 4, 5, 6]
    assert step(report, "daily_vote_cap").removed == 2


def test_anomalous_users_are_flagged_against_the_pairs_history():
    rng = np.random.default_rng(0)
    rows = []
    for user in range(40):
        for _ in range(10):
            a_wins = rng.random() < 0.97
            rows.append(("a", "b", "model_a" if a_wins else "model_b", f"honest{user}"))
    rows += [("a", "b", "model_b", "troll")] * 12 + [("b", "a", "model_a", "troll")] * 3
    battles = pd.DataFrame(rows, columns=["model_a", "model_b", "winner", "judge"])
    config = FilterConfig(dedup_prompts=False, anomalous_users=True)
    kept, report = apply_filters(battles, config)
    assert "troll" not in set(kept["judge"])
    assert step(report, "anomalous_users").removed == 15
    assert step(report, "anomalous_users").note.startswith("1 of 41 users")


def test_category_selects_is_columns_and_is_reported():
    battles = frame(4, is_code=[True, False, True, True]).assign(
        winner=["model_a", "model_b", "model_b", "tie"]
    )
    board = compute_leaderboard(battles, bootstrap_rounds=0, category="code")
    assert step(board.filter_report, "category").removed == 1
    assert board.table["votes"].tolist() == [3, 3]
    with pytest.raises(RatingInputError, match=r"unknown category 'math'.*available: code"):
        compute_leaderboard(battles, category="math")


def test_category_ratings_give_one_column_per_category():
    rows = [("a", "b", "model_a", True), ("b", "a", "model_a", True), ("a", "b", "tie", False)]
    rows += [("b", "c", "model_a", False), ("c", "b", "tie", False), ("a", "c", "model_b", True)]
    rows += [("c", "a", "model_b", True)]
    battles = pd.DataFrame(rows, columns=["model_a", "model_b", "winner", "is_code"])
    battles["is_math"] = [True, True, True, False, False, False, False]  # a against b only
    assert available_categories(battles) == ["code", "math"]
    table = category_ratings(battles, filters=NOTHING)
    assert list(table.columns) == ["overall", "code", "math"]
    overall = compute_leaderboard(battles, bootstrap_rounds=0, filters=NOTHING).table
    np.testing.assert_allclose(table.loc[overall["model"], "overall"], overall["rating"])
    code = compute_leaderboard(battles, bootstrap_rounds=0, filters=NOTHING, category="code")
    np.testing.assert_allclose(table.loc[code.table["model"], "code"], code.table["rating"])
    assert table["math"].notna().sum() == 2 and np.isnan(table.loc["c", "math"])
    anchored = category_ratings(battles, filters=NOTHING, anchor=Anchor("b", 1100))
    assert anchored.loc["b", "overall"] == 1100
    assert anchored.loc["b", "code"] == 1100
    # With the anchor unrated in a category, that category cannot be placed on the scale.
    by_c = category_ratings(battles, filters=NOTHING, anchor=Anchor("c", 1100))
    assert by_c["math"].isna().all() and by_c.loc["c", "code"] == 1100
