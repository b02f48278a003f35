"""Battle rules: pair drawing, prompt limits, and which actions each phase allows."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from arena.battles import (
    Battle,
    BattleError,
    Limits,
    Phase,
    Sampling,
    Side,
    draw_pair,
    max_new_tokens_cap,
    pick_pair,
    prompt_problem,
)
from arena.config import ModelEntry
from arena.replies import ErrorKind, Reply, ReplyError


def entry(name: str, weight: float = 1.0) -> ModelEntry:
    return ModelEntry(
        name=name, display_name=name, organization="org", endpoint="http://x", weight=weight
    )


def test_pairs_never_repeat_a_model_and_both_orders_occur():
    rng = random.Random(7)
    models = [entry("a"), entry("b"), entry("c")]
    pairs = [draw_pair(models, rng) for _ in range(600)]
    assert all(x.name != y.name for x, y in pairs)
    ordered = Counter((x.name, y.name) for x, y in pairs)
    assert len(ordered) == 6  # every ordered pair appears: left/right is randomised
    assert min(ordered.values()) > 60


def test_weights_shape_how_often_a_model_plays():
    rng = random.Random(1)
    models = [entry("heavy", 8.0), entry("light1"), entry("light2"), entry("off", 0.0)]
    plays = Counter()
    for _ in range(2000):
        for model in draw_pair(models, rng):
            plays[model.name] += 1
    assert plays["off"] == 0
    assert plays["heavy"] > 1.5 * plays["light1"]


@pytest.mark.parametrize("models", [[], [entry("solo")], [entry("a"), entry("b", 0.0)]])
def test_too_few_models_is_a_clear_error(models):
    with pytest.raises(BattleError, match="at least two enabled models"):
        draw_pair(models, random.Random(0))


def test_prompt_limits_explain_themselves():
    limits = Limits(max_prompt_chars=10, max_turns=2)
    assert prompt_problem("x" * 10, 0, limits) is None
    assert "11 characters long; the limit is 10" in prompt_problem("x" * 11, 0, limits)
    assert "limit of 2 turns" in prompt_problem("hi", 2, limits)


def ready_battle() -> Battle:
    battle = Battle(session_id="s")
    battle.sides = (Side(entry("a"), "ca"), Side(entry("b"), "cb"))
    battle.prompts.append("hello")
    battle.phase = Phase.STREAMING
    for side in battle.sides:
        side.reply = Reply(model=side.model.name, text="hi", finished=True)
    battle.settle()
    return battle


def test_settle_allows_votes_only_when_both_replies_succeeded():
    battle = ready_battle()
    assert battle.phase is Phase.READY
    battle.check_can_vote()

    battle.phase = Phase.STREAMING
    battle.sides[1].reply = Reply(
        model="b", finished=True, error=ReplyError(ErrorKind.STALL, "stalled")
    )
    battle.settle()
    assert battle.phase is Phase.FAILED
    with pytest.raises(BattleError, match="cannot be voted on"):
        battle.check_can_vote()
    battle.check_can_regenerate()


def test_unfinished_reply_is_not_votable():
    battle = ready_battle()
    battle.phase = Phase.STREAMING
    battle.sides[0].reply = Reply(model="a", text="partial")
    battle.settle()
    assert battle.phase is Phase.FAILED


@pytest.mark.parametrize(
    ("phase", "send", "vote", "regenerate"),
    [
        (Phase.NEW, None, "nothing to vote on", "Nothing to regenerate"),
        (Phase.STREAMING, "Wait for both", "Wait for both", "Wait for both"),
        (Phase.READY, None, None, None),
        (Phase.FAILED, "A reply failed", "cannot be voted on", None),
        (Phase.VOTED, "already voted", "already has your vote", "already voted"),
    ],
)
def test_each_phase_allows_exactly_its_actions(phase, send, vote, regenerate):
    battle = Battle(session_id="s", phase=phase)
    for action, expected in (
        (lambda: battle.check_can_send("hi", Limits()), send),
        (battle.check_can_vote, vote),
        (battle.check_can_regenerate, regenerate),
    ):
        if expected is None:
            action()
        else:
            with pytest.raises(BattleError, match=expected):
                action()


# -- named side-by-side battles -------------------------------------------------------------------


def capped(name: str, max_new_tokens: int, **fields) -> ModelEntry:
    return ModelEntry(
        name=name,
        display_name=name.title(),
        organization="org",
        endpoint="http://x",
        parameters={"max_new_tokens": max_new_tokens, "temperature": 0.3, "stop": ["###"]},
        **fields,
    )


def test_a_named_pair_is_two_different_models_offered_in_the_tab():
    models = [
        capped("a", 64),
        capped("b", 32),
        capped("hidden", 64, side_by_side=False),
        capped("off", 64, enabled=False),
    ]
    assert [m.name for m in pick_pair(models, "b", "a")] == ["b", "a"]
    for name in ("hidden", "off", "nowhere"):
        # The same answer for all three: a hidden model's existence is not given away.
        with pytest.raises(BattleError, match=f"no model '{name}' to pick"):
            pick_pair(models, "a", name)
    with pytest.raises(BattleError, match="two different models"):
        pick_pair(models, "a", "a")


def test_sampling_keeps_each_model_within_its_own_limits():
    sampling = Sampling(temperature=1.5, top_p=0.5, max_new_tokens=32)
    chosen = sampling.for_model(capped("a", 64))
    assert (chosen.temperature, chosen.top_p, chosen.max_new_tokens) == (1.5, 0.5, 32)
    assert chosen.stop == ["###"]  # what the user cannot choose stays the entry's
    assert sampling.for_model(capped("b", 32)).max_new_tokens == 32
    with pytest.raises(BattleError, match="from 1 to 16 for B"):
        sampling.for_model(capped("b", 16))
    # The tab starts from Model A's sampling and the most tokens both allow.
    assert Sampling.defaults(capped("a", 64), capped("b", 32)) == Sampling(0.3, 0.95, 32)
    assert max_new_tokens_cap(capped("a", 64), capped("b", 32)) == 32


@pytest.mark.parametrize(
    ("temperature", "top_p", "max_new_tokens", "problem"),
    [
        (-0.1, 0.9, 8, "Temperature"),
        (2.01, 0.9, 8, "Temperature"),
        (float("nan"), 0.9, 8, "Temperature"),
        (None, 0.9, 8, "Temperature"),
        (0.7, 0.0, 8, "Top-p"),
        (0.7, 1.01, 8, "Top-p"),
        (0.7, "0.5", 8, "Top-p"),
        (0.7, 0.9, 0, "Max new tokens"),
        (0.7, 0.9, 65, "Max new tokens"),
        (0.7, 0.9, 7.5, "Max new tokens"),
        (0.7, 0.9, True, "Max new tokens"),
    ],
)
def test_sampling_out_of_bounds_is_refused_with_the_bound(
    temperature, top_p, max_new_tokens, problem
):
    with pytest.raises(BattleError, match=problem):
        Sampling(temperature, top_p, max_new_tokens).for_model(capped("a", 64))


def test_edges_of_the_bounds_are_allowed():
    for sampling in (Sampling(0.0, 1.0, 1), Sampling(2.0, 0.01, 64), Sampling(1, 1, 64.0)):
        sampling.for_model(capped("a", 64))
