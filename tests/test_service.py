"""The battle service with scripted clients: concurrency, coalescing, cancellation, records."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest

from arena.battles import BattleError, Limits, Phase, Sampling
from arena.config import GenerationParameters, Registry
from arena.export.terms import TERMS_VERSION
from arena.replies import ErrorKind, Message, Reply, ReplyError
from arena.service import BattleService, Visitor
from arena.store import Store
from arena.votes import Winner


class ScriptedClient:
    """Streams `tokens` tokens `delay_s` apart; optionally fails after `fail_after` tokens."""

    def __init__(self, name: str, tokens: int = 5, delay_s: float = 0.0, fail_after=None):
        self.name, self.tokens, self.delay_s, self.fail_after = name, tokens, delay_s, fail_after
        self.started: list[float] = []
        self.finished: list[float] = []
        self.seen: list[list[Message]] = []
        self.parameters: list[GenerationParameters | None] = []

    async def stream(
        self, messages: list[Message], parameters: GenerationParameters | None = None
    ) -> AsyncIterator[Reply]:
        self.started.append(time.monotonic())
        self.seen.append(list(messages))
        self.parameters.append(parameters)
        reply = Reply(model=self.name)
        for index in range(self.tokens):
            await asyncio.sleep(self.delay_s)
            if index == self.fail_after:
                reply.error = ReplyError(ErrorKind.STREAM_ERROR, "boom")
                break
            reply.text += f"{self.name}{index} "
            reply.tokens += 1
            yield reply
        reply.finished = True
        reply.finish_reason = None if reply.error else "length"
        self.finished.append(time.monotonic())
        yield reply


def registry(*names: str) -> Registry:
    return Registry.model_validate(
        {
            "models": [
                {"name": n, "display_name": n, "organization": "o", "endpoint": "http://x"}
                for n in names
            ]
        }
    )


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path) as store:
        yield store


@pytest.fixture
def make_service(store):
    """``make_service(clients, limits, interval)``: a service on ``store``, closed (its queued
    writes landed) before the store closes, as app.py does."""
    services: list[BattleService] = []

    def make(clients, limits: Limits | None = None, interval=0.05) -> BattleService:
        service = BattleService(
            registry(*clients),
            store,
            clients,
            limits or Limits(),
            rng=random.Random(3),
            update_interval_s=interval,
        )
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


async def drain(updates: AsyncIterator) -> list:
    return [update async for update in updates]


VISITOR = Visitor(session_id="5f0b6c1e-0000-4000-8000-000000000001", ip_hash="h")


def test_both_sides_stream_at_once_and_updates_are_coalesced(make_service, store):
    clients = {n: ScriptedClient(n, tokens=40, delay_s=0.01) for n in ("x", "y")}
    service = make_service(clients, interval=0.05)
    battle = service.new_battle(VISITOR)
    started = time.monotonic()
    updates = asyncio.run(drain(service.send(battle, "hi", VISITOR)))
    elapsed = time.monotonic() - started
    x, y = clients["x"], clients["y"]
    # Each side started before the other finished: they streamed at once, not one after another.
    assert x.started[0] < y.finished[0] and y.started[0] < x.finished[0]
    # 80 tokens arrived; at most one update per 50 ms (plus the final one) reached the UI.
    assert len(updates) <= elapsed / 0.05 + 2
    assert battle.phase is Phase.READY
    assert all(side.reply.text.count(" ") == 40 for side in battle.sides)


def test_vote_is_stored_once_and_names_stay_server_side(make_service, store):
    clients = {n: ScriptedClient(n) for n in ("x", "y")}
    service = make_service(clients)
    battle = service.new_battle(VISITOR)
    asyncio.run(drain(service.send(battle, "hi", VISITOR)))
    service.vote(battle, Winner.TIE, VISITOR)
    assert store.vote_for(battle.id)["winner"] == Winner.TIE
    with pytest.raises(BattleError, match="already has your vote"):
        service.vote(battle, Winner.MODEL_A, VISITOR)
    intruder = Visitor(session_id="5f0b6c1e-0000-4000-8000-000000000002")
    with pytest.raises(BattleError, match="another session"):
        service.vote(battle, Winner.MODEL_B, intruder)
    assert store.vote_for(battle.id)["winner"] == Winner.TIE


def test_a_vote_tags_the_battle_for_the_leaderboard_categories(make_service, store):
    clients = {n: ScriptedClient(n) for n in ("x", "y")}
    service = make_service(clients)
    battle = service.new_battle(VISITOR)
    prompt = "Write a Python function that parses an ISO date and explain the edge cases."
    asyncio.run(drain(service.send(battle, prompt, VISITOR)))
    service.vote(battle, Winner.MODEL_A, VISITOR)
    row = store.battles_frame().iloc[0]
    assert row["is_coding"] and row["language"] == "en"
    assert "is_math" not in row.index


def test_failed_side_blocks_the_vote_while_the_other_side_finishes(make_service, store):
    clients = {"x": ScriptedClient("x", tokens=30), "y": ScriptedClient("y", fail_after=2)}
    service = make_service(clients)
    battle = service.new_battle(VISITOR)
    asyncio.run(drain(service.send(battle, "hi", VISITOR)))
    replies = {side.model.name: side.reply for side in battle.sides}
    assert replies["x"].ok and replies["x"].tokens == 30
    assert replies["y"].error.kind is ErrorKind.STREAM_ERROR and replies["y"].text == "y0 y1 "
    assert battle.phase is Phase.FAILED
    with pytest.raises(BattleError, match="cannot be voted on"):
        service.vote(battle, Winner.MODEL_A, VISITOR)
    # Regenerating fixes nothing on a model that keeps failing, but it is allowed and recorded.
    asyncio.run(drain(service.regenerate(battle, VISITOR)))
    assert battle.attempt == 1


def test_second_turn_sends_the_history_to_each_side(make_service, store):
    clients = {n: ScriptedClient(n, tokens=2) for n in ("x", "y")}
    service = make_service(clients)
    battle = service.new_battle(VISITOR)
    asyncio.run(drain(service.send(battle, "first", VISITOR)))
    asyncio.run(drain(service.send(battle, "second", VISITOR)))
    for name, client in clients.items():
        assert client.seen[1] == [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": f"{name}0 {name}1 "},
            {"role": "user", "content": "second"},
        ]
    service.vote(battle, Winner.MODEL_B, VISITOR)
    row = store.battles_frame().iloc[0]
    assert row["turn"] == 2
    assert [m["content"] for m in row["conversation_a"]][::2] == ["first", "second"]


def test_limits_are_checked_before_anything_is_sent(make_service, store):
    clients = {n: ScriptedClient(n) for n in ("x", "y")}
    service = make_service(clients, limits=Limits(max_prompt_chars=5, max_turns=1))
    battle = service.new_battle(VISITOR)
    with pytest.raises(BattleError, match="limit is 5"):
        asyncio.run(drain(service.send(battle, "too long", VISITOR)))
    assert battle.sides is None and not clients["x"].started
    asyncio.run(drain(service.send(battle, "ok", VISITOR)))
    with pytest.raises(BattleError, match="limit of 1 turns"):
        asyncio.run(drain(service.send(battle, "again", VISITOR)))


def test_a_reader_leaving_mid_stream_still_leaves_a_record(make_service, store):
    clients = {n: ScriptedClient(n, tokens=100, delay_s=0.01) for n in ("x", "y")}
    service = make_service(clients, interval=0.01)

    async def leave_early():
        battle = service.new_battle(VISITOR)
        updates = service.send(battle, "hi", VISITOR)
        await anext(updates)
        await anext(updates)
        await updates.aclose()
        return battle

    battle = asyncio.run(leave_early())
    assert battle.phase is Phase.FAILED
    service.close()  # the replies are written in the background: wait for them
    with store._cursor() as cursor:
        rows = cursor.execute(
            "SELECT finished, length(content) > 0 FROM messages WHERE role = 'assistant'"
        ).fetchall()
    assert sorted(rows) == [(False, True), (False, True)]


def test_a_named_battle_streams_the_picked_models_with_the_chosen_parameters(make_service, store):
    clients = {n: ScriptedClient(n, tokens=2) for n in ("x", "y", "z")}
    service = make_service(clients)
    battle = service.new_side_by_side(VISITOR, "z", "x")
    asyncio.run(drain(service.send(battle, "hi", VISITOR, Sampling(0.0, 0.5, 7))))
    assert [side.model.name for side in battle.sides] == ["z", "x"]
    assert not clients["y"].started
    chosen = GenerationParameters(temperature=0.0, top_p=0.5, max_new_tokens=7)
    assert clients["z"].parameters == clients["x"].parameters == [chosen]
    # A regeneration may choose again; each reply is stored with its own parameters.
    asyncio.run(drain(service.regenerate(battle, VISITOR, Sampling(1.0, 1.0, 3))))
    assert clients["x"].parameters[-1].max_new_tokens == 3
    service.vote(battle, Winner.MODEL_A, VISITOR)
    row = store.battles_frame().iloc[0]
    assert (row["model_a"], row["model_b"], row["anony"]) == ("z", "x", False)
    with store._cursor() as cursor:
        stored = cursor.execute(
            "SELECT attempt, parameters->>'max_new_tokens' FROM messages "
            "WHERE role = 'assistant' ORDER BY attempt"
        ).fetchall()
    assert stored == [(0, "7"), (0, "7"), (1, "3"), (1, "3")]


def test_chosen_parameters_are_checked_before_anything_is_sent(make_service, store):
    clients = {n: ScriptedClient(n) for n in ("x", "y")}
    service = make_service(clients)
    battle = service.new_side_by_side(VISITOR, "x", "y")
    with pytest.raises(BattleError, match="from 1 to 512"):
        asyncio.run(drain(service.send(battle, "hi", VISITOR, Sampling(0.7, 0.9, 513))))
    assert battle.sides is None and not clients["x"].started
    anonymous = service.new_battle(VISITOR)
    with pytest.raises(BattleError, match="each model's own generation parameters"):
        asyncio.run(drain(service.send(anonymous, "hi", VISITOR, Sampling(0.7, 0.9, 8))))
    with store._cursor() as cursor:
        assert cursor.execute("SELECT count(*) FROM battles").fetchone() == (0,)


def test_the_models_are_asked_before_the_store_has_written_the_turn(
    make_service, store, monkeypatch
):
    clients = {n: ScriptedClient(n, tokens=3) for n in ("x", "y")}
    service = make_service(clients)
    written: list[float] = []

    def slow(write):
        def slow_write(*args, **kwargs):
            time.sleep(0.2)  # a busy store
            written.append(time.monotonic())
            return write(*args, **kwargs)

        return slow_write

    # The first turn is written with its battle, a later one message by message.
    monkeypatch.setattr(store, "open_battles", slow(store.open_battles))
    monkeypatch.setattr(store, "add_user_message", slow(store.add_user_message))
    battle = service.new_battle(VISITOR)
    asyncio.run(drain(service.send(battle, "first", VISITOR)))
    asyncio.run(drain(service.send(battle, "second", VISITOR)))
    assert battle.phase is Phase.READY
    service.vote(battle, Winner.TIE, VISITOR)  # which waits for the writes
    assert clients["x"].started[0] < written[0] and clients["y"].started[0] < written[0]
    assert clients["x"].started[1] < written[1] and clients["y"].started[1] < written[1]
    # Nothing was lost or reordered: every message is stored, each reply after its turn.
    with store._cursor() as cursor:
        stored = cursor.execute(
            "SELECT c.side, m.turn, m.role, m.content FROM messages m "
            "JOIN conversations c ON c.id = m.conversation_id ORDER BY c.side, m.turn, m.role DESC"
        ).fetchall()
    assert stored == [
        (side, turn, role, content)
        for side, name in (("a", battle.sides[0].model.name), ("b", battle.sides[1].model.name))
        for turn, prompt in enumerate(("first", "second"))
        for role, content in (("user", prompt), ("assistant", f"{name}0 {name}1 {name}2 "))
    ]


def test_a_choice_made_before_the_first_message_is_written_with_the_battle(make_service, store):
    service = make_service({n: ScriptedClient(n, tokens=3) for n in ("x", "y")})
    battle = service.new_battle(VISITOR)
    asyncio.run(drain(service.send(battle, "hi", VISITOR, share=True)))
    # A later opening never overrides the recorded choice, whatever it carries.
    service.vote(battle, Winner.TIE, VISITOR)
    asyncio.run(drain(service.send(service.new_battle(VISITOR), "again", VISITOR, share=False)))
    service.flush()
    consent = store.consent_of(VISITOR.session_id)
    assert consent is not None
    assert (consent["share"], consent["terms_version"]) == (True, TERMS_VERSION)


def test_a_choice_recorded_while_the_battle_is_being_written_wins(make_service, store, monkeypatch):
    service = make_service({n: ScriptedClient(n, tokens=3) for n in ("x", "y")})
    open_battles = store.open_battles
    changed_mind = False

    def slow_open_battles(openings):
        # The visitor clicks "Don't share" while the burst's openings are still queued.
        nonlocal changed_mind
        store.record_consent(VISITOR.session_id, share=False, terms_version=TERMS_VERSION)
        changed_mind = True
        return open_battles(openings)

    monkeypatch.setattr(store, "open_battles", slow_open_battles)
    battle = service.new_battle(VISITOR)
    asyncio.run(drain(service.send(battle, "hi", VISITOR, share=True)))
    service.flush()
    assert changed_mind
    assert store.consent_of(VISITOR.session_id)["share"] is False  # type: ignore[index]


def test_a_failed_store_write_ends_the_stream_with_its_error_and_is_logged(
    make_service, store, monkeypatch, caplog
):
    clients = {n: ScriptedClient(n, tokens=500, delay_s=0.01) for n in ("x", "y")}
    service = make_service(clients)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "open_battles", broken)
    battle = service.new_battle(VISITOR)
    with pytest.raises(OSError, match="disk full"):
        asyncio.run(drain(service.send(battle, "hi", VISITOR)))
    # At once, not after the replies (5 s each): they could not be stored after a turn that is
    # not, so neither model was let finish.
    assert not clients["x"].finished and not clients["y"].finished
    assert battle.phase is Phase.FAILED
    with pytest.raises(BattleError, match="cannot be voted on"):
        service.vote(battle, Winner.MODEL_A, VISITOR)
    service.close()
    assert "_write_openings failed" in caplog.text and "disk full" in caplog.text


def test_a_failed_reply_write_makes_the_vote_fail_and_nothing_is_stored(
    make_service, store, monkeypatch
):
    clients = {n: ScriptedClient(n, tokens=3) for n in ("x", "y")}
    service = make_service(clients)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "add_replies", broken)
    battle = service.new_battle(VISITOR)
    asyncio.run(drain(service.send(battle, "hi", VISITOR)))
    with pytest.raises(BattleError, match="could not be saved"):
        service.vote(battle, Winner.MODEL_A, VISITOR)
    assert battle.phase is Phase.FAILED
    assert store.vote_for(battle.id) is None


def test_the_vote_buttons_need_not_wait_for_the_reply_writes_but_the_vote_does(
    make_service, store, monkeypatch
):
    clients = {n: ScriptedClient(n, tokens=3) for n in ("x", "y")}
    service = make_service(clients)
    written = []
    add_replies = store.add_replies

    def slow(records):
        time.sleep(0.3)  # a writer busy with other battles' writes
        written.extend(add_replies(records))

    monkeypatch.setattr(store, "add_replies", slow)
    battle = service.new_battle(VISITOR)
    asyncio.run(drain(service.send(battle, "hi", VISITOR)))
    assert battle.phase is Phase.READY and written == []
    service.vote(battle, Winner.MODEL_B, VISITOR)
    assert len(written) == 2 and store.vote_for(battle.id) is not None
