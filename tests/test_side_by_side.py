"""The Side-by-side tab in-process: named battles driven through the app's API, read from the store.

Like tests/test_app.py (whose readers it reuses): each test launches the app on a free port and
talks to it with ``gradio_client``. The user picks both models and the generation parameters;
the vote is stored as named (``anony`` false), and the leaderboard does not count it. Every
event a browser could send is also sent forged, and refused.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pandas as pd
import pytest
from gradio_client.exceptions import AppError

from arena.battles import BattleError, Sampling
from arena.demo_server.personas import reply as persona_reply
from arena.demo_server.personas import tokenize
from arena.export import Exporter, LocalFolder
from arena.leaderboards import LeaderboardService, View
from arena.service import Visitor
from arena.votes import Winner
from tests.test_app import PROMPT, count, replies_of, rows, view

# Gradio's queue calls pandas APIs that pandas 3 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")

CONCISE, VERBOSE, MARKDOWN, CODER = "demo-concise", "demo-verbose", "demo-markdown", "demo-coder"
LONG = "demo-long"


# -- driving the tab ----------------------------------------------------------------------------


def sbs_view(*updates: tuple[Any, ...]) -> Any:
    """The tab after a stream of updates: the dropdowns come first, the sliders (if any) last."""
    return view(*(update[2:7] for update in updates))


def sbs_send(
    client,
    prompt: str,
    model_a: str,
    model_b: str,
    temperature: float = 0.7,
    top_p: float = 0.95,
    max_new_tokens: int = 16,
):
    job = client.submit(
        prompt, model_a, model_b, temperature, top_p, max_new_tokens, api_name="/sbs_send"
    )
    job.result(timeout=30)
    return sbs_view(*job.outputs())


def sbs_vote(client, winner: str):
    return sbs_view(client.predict(api_name=f"/sbs_vote_{winner}"))


def sbs_models(client, model_a: str, model_b: str) -> tuple[Any, ...]:
    """Pick models as the dropdowns do; the whole update, sliders included."""
    return client.predict(model_a, model_b, api_name="/sbs_models")


def truncated(arena, model: str, tokens: int) -> str:
    persona = arena.registry.get(model).persona
    return "".join(token.text for token in tokenize(persona_reply(persona, PROMPT))[:tokens])


def dropdown_choices(url: str) -> list[str]:
    config = httpx.get(f"{url}config", timeout=10).json()
    (dropdown,) = [
        c for c in config["components"] if c.get("props", {}).get("elem_id") == "sbs-model-a"
    ]
    return [value for _, value in dropdown["props"]["choices"]]


# -- a named battle -----------------------------------------------------------------------------


def test_picked_models_stream_with_the_chosen_parameters_and_the_vote_is_named(launch_arena):
    running = launch_arena()  # the shipped models.yaml: one model of each protocol below
    store, arena = running.store, running.arena
    client = running.client()

    shown = sbs_send(client, PROMPT, VERBOSE, CONCISE, temperature=0.3, top_p=0.8, max_new_tokens=5)

    # Named from the start, in the order picked; both replies cut at the chosen 5 tokens.
    verbose, concise = arena.registry.get(VERBOSE), arena.registry.get(CONCISE)
    assert (shown.label_a, shown.label_b) == (verbose.display_name, concise.display_name)
    assert shown.reply_a == truncated(arena, VERBOSE, 5)
    assert shown.reply_b == truncated(arena, CONCISE, 5)
    assert shown.prompt == "" and shown.notice == "" and shown.result == ""

    after = sbs_vote(client, "model_a")

    assert "A is better" in after.result and "named vote" in after.result
    (battle_id, anony, model_a, model_b) = rows(
        store, "SELECT id, anony, model_a, model_b FROM battles"
    )[0]
    assert (anony, model_a, model_b) == (False, VERBOSE, CONCISE)
    assert rows(store, "SELECT DISTINCT mode FROM conversations") == [("side_by_side",)]
    (row,) = store.battles_frame().to_dict("records")
    assert (row["winner"], row["anony"]) == ("model_a", False)
    for side, entry in (("a", verbose), ("b", concise)):
        (stored,) = replies_of(store, battle_id, side)
        assert stored["finish_reason"] == "length" and stored["tokens"] == 5
        parameters = json.loads(stored["parameters"])
        assert parameters == {
            "model_id": entry.model_id,
            "max_new_tokens": 5,
            "temperature": 0.3,
            "top_p": 0.8,
            "stop": entry.parameters.stop,
        }

    # One vote per battle: the input stays locked until a new round.
    refused = sbs_send(client, "Another question", VERBOSE, CONCISE)
    assert "already voted" in refused.notice and count(store, "votes") == 1
    with pytest.raises(AppError, match="already has your vote"):
        sbs_vote(client, "model_b")
    fresh = sbs_view(client.predict(VERBOSE, CONCISE, api_name="/sbs_new"))
    assert fresh.a == [] and fresh.result == "" and fresh.label_a == verbose.display_name
    sbs_send(client, "Another question", VERBOSE, CONCISE)
    assert count(store, "battles") == 2


def test_picking_other_models_starts_a_new_round_and_resets_the_parameters(
    launch_arena, write_models
):
    models = write_models(
        {"persona": "concise", "parameters": {"max_new_tokens": 16, "temperature": 0.2}},
        {"persona": "verbose", "parameters": {"max_new_tokens": 64, "temperature": 0.9}},
        {"persona": "markdown", "parameters": {"max_new_tokens": 48}},
    )
    running = launch_arena("--models", str(models))
    client = running.client()
    sbs_send(client, PROMPT, CONCISE, VERBOSE, max_new_tokens=16)

    update = sbs_models(client, VERBOSE, MARKDOWN)

    shown = sbs_view(update)
    assert shown.a == [] and shown.b == [] and "new round started" in shown.notice
    assert (shown.label_a, shown.label_b) == ("Verbose (test)", "Markdown (test)")
    # Model A's temperature and top_p; the most tokens both allow, which is also the maximum.
    temperature, top_p, max_new_tokens = update[-3:]
    assert (temperature["value"], top_p["value"], max_new_tokens["value"]) == (0.9, 0.95, 48)
    assert max_new_tokens["maximum"] == 48
    sbs_send(client, PROMPT, VERBOSE, MARKDOWN, max_new_tokens=48)
    assert rows(running.store, "SELECT model_a, model_b FROM battles ORDER BY created_at") == [
        (CONCISE, VERBOSE),
        (VERBOSE, MARKDOWN),
    ]


def test_a_named_vote_does_not_move_the_leaderboard(launch_arena, write_models):
    running = launch_arena("--models", str(write_models("concise", "verbose")))
    service, store = running.arena.battles, running.store
    visitor = Visitor(session_id=str(uuid.uuid4()), ip_hash="h")

    async def play(winner: str) -> None:
        battle = service.new_battle(visitor)
        async for _ in service.send(battle, PROMPT, visitor):
            pass
        a_won = battle.sides[0].model.name == winner
        service.vote(battle, Winner.MODEL_A if a_won else Winner.MODEL_B, visitor)

    # Two anonymous battles, one won by each model: they tie.
    for winner in (CONCISE, VERBOSE):
        asyncio.run(play(winner))
    leaderboards = LeaderboardService(store, running.arena.registry, bootstrap_rounds=20)
    before = leaderboards.leaderboard(View())
    assert before is not None and before.battles_used == 2 and len(before.table) == 2

    client = running.client()
    sbs_send(client, PROMPT, CONCISE, VERBOSE)
    sbs_vote(client, "model_a")

    assert store.vote_count() == 3
    after = leaderboards.leaderboard(View())
    assert after is not None and after.battles_in == 3 and after.battles_used == 2
    pd.testing.assert_frame_equal(after.table, before.table)
    pd.testing.assert_frame_equal(after.battle_count, before.battle_count)
    (anonymous_only,) = [step for step in after.filter_report if step.name == "anonymous_only"]
    assert anonymous_only.removed == 1


# -- forged calls -------------------------------------------------------------------------------


@pytest.fixture
def guarded(launch_arena, write_models):
    """An arena with a model hidden from the tab, a disabled one, and two token limits."""
    models = write_models(
        {"persona": "concise", "parameters": {"max_new_tokens": 16}},
        {"persona": "verbose", "parameters": {"max_new_tokens": 64}},
        {"persona": "verbose", "name": LONG, "parameters": {"max_new_tokens": 64}},
        {"persona": "markdown", "side_by_side": False},
        {"persona": "coder", "enabled": False},
    )
    return launch_arena("--models", str(models))


def test_hidden_and_disabled_models_cannot_be_picked(guarded):
    assert dropdown_choices(guarded.url) == [CONCISE, VERBOSE, LONG]
    client = guarded.client()
    for model in (MARKDOWN, CODER, "no-such-model"):
        with pytest.raises(AppError):
            sbs_send(client, PROMPT, CONCISE, model)
        with pytest.raises(AppError):
            sbs_models(client, model, VERBOSE)
    # Behind the UI's own check, the service refuses them too, with one answer for all.
    visitor = Visitor(session_id=str(uuid.uuid4()))
    for model in (MARKDOWN, CODER, "no-such-model"):
        with pytest.raises(BattleError, match=f"no model '{model}' to pick"):
            guarded.arena.battles.new_side_by_side(visitor, CONCISE, model)
    assert count(guarded.store, "battles") == 0
    # The hidden model still plays anonymous battles.
    assert MARKDOWN in [m.name for m in guarded.arena.registry.battle_candidates]


def test_the_same_model_twice_is_refused_with_a_notice(guarded):
    client = guarded.client()
    shown = sbs_send(client, PROMPT, VERBOSE, VERBOSE)
    assert "two different models" in shown.notice and shown.a == []
    assert "two different models" in sbs_view(sbs_models(client, CONCISE, CONCISE)).notice
    assert count(guarded.store, "battles") == 0


def test_parameters_beyond_a_model_s_limits_are_refused(guarded):
    client = guarded.client()
    # Out of every slider's range: refused before the handler runs.
    for temperature, top_p in ((2.5, 0.9), (-1.0, 0.9), (0.7, 0.0), (0.7, 1.5)):
        with pytest.raises(AppError):
            sbs_send(client, PROMPT, CONCISE, VERBOSE, temperature, top_p, 8)
    # Within the slider of this session (64 after picking two 64-token models), but beyond the
    # limit of a model of the battle the raw call names: refused by the service.
    sbs_models(client, VERBOSE, LONG)
    shown = sbs_send(client, PROMPT, CONCISE, VERBOSE, max_new_tokens=40)
    assert "from 1 to 16 for Concise (test)" in shown.notice
    assert count(guarded.store, "battles") == 0
    shown = sbs_send(client, PROMPT, CONCISE, VERBOSE, max_new_tokens=16)
    assert shown.notice == "" and count(guarded.store, "battles") == 1


def test_a_regeneration_is_held_to_the_same_limits(guarded):
    # A session whose slider allows 64 (after picking two 64-token models), then a raw call
    # naming a 16-token model: the service holds the regeneration to that model's limit.
    client = guarded.client()
    sbs_models(client, VERBOSE, LONG)
    sbs_send(client, PROMPT, CONCISE, VERBOSE, max_new_tokens=8)
    with pytest.raises(AppError, match="from 1 to 16 for Concise"):
        client.predict(0.7, 0.9, 17, api_name="/sbs_regenerate")
    job = client.submit(0.0, 1.0, 4, api_name="/sbs_regenerate")
    job.result(timeout=30)
    (battle_id,) = rows(guarded.store, "SELECT id FROM battles")[0]
    first, second = replies_of(guarded.store, battle_id, "a")
    assert json.loads(first["parameters"])["max_new_tokens"] == 8
    assert json.loads(second["parameters"])["max_new_tokens"] == 4
    assert second["tokens"] == 4 and second["attempt"] == 1


def test_anonymous_battles_take_no_chosen_parameters(guarded):
    service = guarded.arena.battles
    visitor = Visitor(session_id=str(uuid.uuid4()))
    battle = service.new_battle(visitor)

    async def send() -> None:
        async for _ in service.send(battle, PROMPT, visitor, Sampling(0.7, 0.9, 8)):
            pass

    with pytest.raises(BattleError, match="own generation parameters"):
        asyncio.run(send())
    assert count(guarded.store, "battles") == 0


def test_with_fewer_than_two_models_offered_the_tab_says_why(launch_arena, write_models):
    models = write_models("concise", {"persona": "verbose", "side_by_side": False})
    running = launch_arena("--models", str(models))
    config = httpx.get(f"{running.url}config", timeout=10).json()
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert "sbs-unavailable" in ids and "sbs-model-a" not in ids
    assert "prompt" in ids  # the Battle tab is unaffected


# -- consent ------------------------------------------------------------------------------------


def test_a_choice_made_before_picking_models_shares_the_named_battle(launch_arena, tmp_path):
    running = launch_arena()
    sharing, silent = running.client(), running.client()
    sharing.predict(api_name="/sbs_consent_share")
    # Picking models gives the session its id before any message: the choice must still count.
    sbs_models(sharing, VERBOSE, CONCISE)
    for client in (sharing, silent):
        sbs_send(client, PROMPT, VERBOSE, CONCISE)
        sbs_vote(client, "model_a")

    sessions = [session for (session,) in rows(running.store, "SELECT session_id FROM battles")]
    shared = {s: (running.store.consent_of(s) or {}).get("share") for s in sessions}
    assert sorted(shared.values(), key=str) == [None, True]  # no choice: not shared

    folder = tmp_path / "dataset"
    Exporter(running.store, LocalFolder(folder), license_id="cc-by-4.0").push()
    published = pd.read_parquet(folder / "data/battles/batch-00000001.parquet")
    assert sorted(published["text_shared"]) == [False, True]
    for battle in published.to_dict("records"):
        prompts = [m["content"] for m in battle["conversation_a"] if m["role"] == "user"]
        assert prompts == ([PROMPT] if battle["text_shared"] else [])
        assert not battle["anony"]


def test_the_tab_s_delete_button_removes_its_named_battles(launch_arena):
    running = launch_arena()
    client = running.client()
    sbs_send(client, PROMPT, VERBOSE, CONCISE)
    sbs_vote(client, "model_b")

    after = sbs_view(client.predict(api_name="/sbs_delete_contributions"))

    assert "Deleted 1 battle(s)" in after.notice and after.a == []
    assert count(running.store, "battles") == 0 and count(running.store, "deletions") == 1
