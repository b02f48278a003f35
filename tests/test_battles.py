"""Battle rules: pair drawing, prompt limits, and which actions each phase allows."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from arena.battles import Battle, BattleError, Limits, Phase, Side, draw_pair, prompt_problem
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
