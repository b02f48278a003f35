"""The whole arena in-process: Gradio serving the Battle tab, driven like a browser session would.

Each test launches the app on a free port (see ``launch_arena`` in conftest.py), talks to it with
``gradio_client`` (one ``Client`` is one browser session with its own server-side state), and then
reads what reached the DuckDB store. The demo models are deterministic, so every reply can be
compared with the exact text its persona writes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from gradio_client.exceptions import AppError

from app import QUEUE_STATUS_INTERVAL_S, open_arena
from arena import service as service_module
from arena.config import ConfigError, Protocol
from arena.demo_server import DemoServer, Faults
from arena.demo_server.personas import reply as persona_reply
from arena.demo_server.personas import tokenize
from arena.privacy import hash_ip
from arena.settings import parse_settings
from arena.store import Store

# Gradio's queue calls pandas APIs that pandas 3 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")

PROMPT = "How do I bake bread at home?"
FOLLOW_UP = "And what about sourdough?"
FINISH_REASON = {Protocol.OPENAI: "stop", Protocol.TGI: "eos_token"}  # TGI's chat says "stop"
LOCALHOST = "127.0.0.1"


# -- reading what the app answers ---------------------------------------------------------------


@dataclass
class View:
    """What the Battle tab shows after an event (the buttons are not API outputs)."""

    a: list[tuple[str, str]]
    """Pane A as (role, text) messages."""
    b: list[tuple[str, str]]
    label_a: str | None
    """The label the updates last gave pane A, or None if none renamed it (a stream never does:
    it sends the panes as plain values)."""
    label_b: str | None
    prompt: str | None
    """The text the event put in the prompt box, or None if it left the box alone."""
    result: str
    notice: str

    @property
    def reply_a(self) -> str:
        return _last_reply(self.a)

    @property
    def reply_b(self) -> str:
        return _last_reply(self.b)


def _messages(chatbot: dict[str, Any] | list[dict[str, Any]]) -> list[tuple[str, str]]:
    """A chatbot output: a property update with a value, or the plain messages."""
    messages = chatbot["value"] if isinstance(chatbot, dict) else chatbot
    return [
        (message["role"], "".join(part["text"] for part in message["content"]))
        for message in messages
    ]


def _props(output: Any) -> dict[str, Any]:
    return output if isinstance(output, dict) else {}


def _label_set(updates: tuple[tuple[Any, ...], ...], index: int) -> str | None:
    labels = [u[index]["label"] for u in updates if "label" in _props(u[index])]
    return labels[-1] if labels else None


def _last_reply(messages: list[tuple[str, str]]) -> str:
    assert messages and messages[-1][0] == "assistant", messages
    return messages[-1][1]


def _text_set(box: Any) -> str | None:
    """The text a textbox output puts in the box: None for an update that leaves it alone."""
    return box.get("value") if isinstance(box, dict) else box


def view(*updates: tuple[Any, ...]) -> View:
    """The tab after a stream of updates: the last one, and the last text set in the box."""
    chatbot_a, chatbot_b, _, result, notice = updates[-1]
    prompts = [text for update in updates if (text := _text_set(update[2])) is not None]
    return View(
        a=_messages(chatbot_a),
        b=_messages(chatbot_b),
        label_a=_label_set(updates, 0),
        label_b=_label_set(updates, 1),
        prompt=prompts[-1] if prompts else None,
        result=result,
        notice=notice,
    )


def finish(job) -> View:
    """Wait for a submitted event and return what it showed."""
    job.result(timeout=30)
    return view(*job.outputs())


def send(client, prompt: str) -> View:
    return finish(client.submit(prompt, api_name="/battle_send"))


def regenerate(client) -> View:
    return finish(client.submit(api_name="/battle_regenerate"))


def vote(client, winner: str) -> View:
    return view(client.predict(api_name=f"/battle_vote_{winner}"))


def new_round(client) -> View:
    return view(client.predict(api_name="/battle_new"))


# -- reading the store --------------------------------------------------------------------------


def rows(store: Store, query: str, *parameters: object) -> list[tuple[Any, ...]]:
    """Query the arena's file directly (connections in one process share the open database)."""
    with duckdb.connect(str(store.path)) as con:
        return con.execute(query, list(parameters)).fetchall()


def count(store: Store, table: str) -> int:
    return rows(store, f"SELECT count(*) FROM {table}")[0][0]


def replies_of(store: Store, battle_id: str, side: str) -> list[dict[str, Any]]:
    """Every stored reply of one side of a battle, by turn then attempt."""
    columns = [
        "turn",
        "attempt",
        "model",
        "content",
        "ttft_ms",
        "total_ms",
        "tokens",
        "finish_reason",
        "error_kind",
        "error_message",
        "finished",
        "parameters",
    ]
    found = rows(
        store,
        f"SELECT {', '.join('m.' + c for c in columns)} FROM messages m "
        "JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.battle_id = ? AND c.side = ? AND m.role = 'assistant' ORDER BY turn, attempt",
        battle_id,
        side,
    )
    return [dict(zip(columns, row, strict=True)) for row in found]


def only_battle(store: Store) -> tuple[str, str, str, str]:
    """(id, session_id, model_a, model_b) of the one battle in the store."""
    (battle,) = rows(store, "SELECT id, session_id, model_a, model_b FROM battles")
    return battle


def database_dump(store: Store) -> str:
    """Every value of every table and view of the file, as text."""
    with duckdb.connect(str(store.path)) as con:
        tables = [
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_catalog = current_database()"
            ).fetchall()
        ]
        return "\n".join(f"{t}: {con.execute(f'SELECT * FROM {t}').fetchall()!r}" for t in tables)


def expected_reply(arena, model: str, prompt: str) -> str:
    return persona_reply(arena.registry.get(model).persona, prompt)


# -- a full battle ------------------------------------------------------------------------------


def test_a_full_battle_is_stored_with_its_vote_timings_and_a_salted_judge(launch_arena):
    running = launch_arena()  # the shipped models.yaml: demo personas over both protocols
    registry = running.arena.registry

    client = running.client()
    shown = send(client, PROMPT)

    # Both replies arrived, the panes kept their anonymous labels ("Model A", "Model B": no
    # update renamed them), and the prompt box was emptied.
    assert shown.a[0] == shown.b[0] == ("user", PROMPT)
    assert shown.label_a is None and shown.label_b is None
    assert shown.prompt == "" and shown.result == "" and shown.notice == ""
    battle_id, session_id, model_a, model_b = only_battle(running.store)
    assert model_a != model_b
    assert shown.reply_a == expected_reply(running.arena, model_a, PROMPT)
    assert shown.reply_b == expected_reply(running.arena, model_b, PROMPT)
    # Nothing shown before the vote gives the models away.
    for name in (model_a, model_b):
        entry = registry.get(name)
        assert name not in repr(shown) and entry.display_name not in repr(shown)

    after = vote(client, "model_b")

    # The vote reveals both names, in pane order, and the panes take them as labels.
    entry_a, entry_b = registry.get(model_a), registry.get(model_b)
    assert (after.label_a, after.label_b) == (entry_a.display_name, entry_b.display_name)
    assert "B is better" in after.result
    assert f"Model A: {entry_a.display_name}" in after.result
    assert f"Model B: {entry_b.display_name}" in after.result

    # The store has the battle in the lmsys arena format...
    (row,) = running.store.battles_frame().to_dict("records")
    assert row["question_id"] == battle_id
    assert (row["model_a"], row["model_b"], row["winner"]) == (model_a, model_b, "model_b")
    assert row["anony"]  # an anonymous battle
    assert row["turn"] == 1 and not row["has_error"]
    assert row["conversation_a"] == [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": shown.reply_a},
    ]
    assert row["conversation_b"] == [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": shown.reply_b},
    ]
    assert abs(row["tstamp"] - time.time()) < 60

    # ...and the judge is a salted hash of the address, never the address itself.
    ip_hash = hash_ip(LOCALHOST, running.store.ip_salt)
    assert row["judge"] == f"ip:{ip_hash}"
    assert re.fullmatch(r"ip:[0-9a-f]{64}", row["judge"])
    stored_vote = running.store.vote_for(battle_id)
    assert stored_vote is not None
    assert stored_vote["winner"] == "model_b" and stored_vote["session_id"] == session_id
    assert stored_vote["ip_hash"] == ip_hash and stored_vote["username"] is None
    assert rows(running.store, "SELECT ip_hash FROM sessions") == [(ip_hash,)]

    # Every reply keeps its timings, token count, finish reason and sampling parameters.
    for side, model, text in (("a", model_a, shown.reply_a), ("b", model_b, shown.reply_b)):
        (stored,) = replies_of(running.store, battle_id, side)
        entry = registry.get(model)
        assert stored["model"] == model and stored["content"] == text
        assert stored["finished"] and stored["error_kind"] is None
        assert stored["tokens"] == len(tokenize(text)) + 1  # the end-of-sequence token counts
        assert stored["finish_reason"] == FINISH_REASON[entry.protocol]
        assert 0 < stored["ttft_ms"] <= stored["total_ms"] < 30_000
        parameters = json.loads(stored["parameters"])
        assert parameters["model_id"] == entry.model_id
        assert parameters["max_new_tokens"] == entry.parameters.max_new_tokens


def test_the_client_address_is_nowhere_in_the_database(launch_arena):
    running = launch_arena()
    client = running.client()
    send(client, PROMPT)
    vote(client, "tie")
    store = running.store

    dump = database_dump(store)
    assert "votes:" in dump and hash_ip(LOCALHOST, store.ip_salt) in dump  # the scan sees rows
    assert LOCALHOST not in dump
    # Every file of the data folder too (strings may be compressed in the database file,
    # hence the table scan above).
    rows(store, "CHECKPOINT")
    files = [path for path in store.path.parent.rglob("*") if path.is_file()]
    assert store.path in files
    for path in files:
        assert LOCALHOST.encode() not in path.read_bytes(), path


# -- forged and ill-timed votes -----------------------------------------------------------------


def test_a_second_vote_on_the_same_battle_is_refused(launch_arena):
    running = launch_arena()
    client = running.client()
    send(client, PROMPT)
    vote(client, "model_a")

    with pytest.raises(AppError, match="already has your vote"):
        vote(client, "model_b")
    with pytest.raises(AppError, match="already voted"):
        regenerate(client)
    refused = send(client, FOLLOW_UP)
    assert "already voted" in refused.notice and refused.prompt is None

    (battle_id, *_) = only_battle(running.store)
    assert rows(running.store, "SELECT battle_id, winner FROM votes") == [(battle_id, "model_a")]
    assert count(running.store, "messages WHERE role = 'user'") == 2  # one per side: no turn 2


def test_voting_before_any_message_is_refused(launch_arena):
    running = launch_arena()
    client = running.client()

    with pytest.raises(AppError, match="nothing to vote on yet"):
        vote(client, "tie")
    with pytest.raises(AppError, match="Nothing to regenerate"):
        regenerate(client)
    new_round(client)  # an empty battle in the session's state
    with pytest.raises(AppError, match="nothing to vote on yet"):
        vote(client, "both_bad")

    assert count(running.store, "votes") == count(running.store, "battles") == 0


def test_voting_while_the_replies_stream_is_refused(launch_arena, write_models):
    # 70 to 100 tokens at 20 ms a token: the replies stream for well over a second.
    models = write_models("markdown", "coder")
    running = launch_arena("--models", str(models), "--demo-token-latency-ms", "20")
    client = running.client()

    streaming = client.submit(PROMPT, api_name="/battle_send")
    deadline = time.monotonic() + 10
    while not streaming.outputs():  # the first partial update: the battle is streaming
        assert time.monotonic() < deadline, "no reply started streaming"
        time.sleep(0.01)
    with pytest.raises(AppError, match="Wait for both replies to finish"):
        vote(client, "model_a")
    assert not streaming.done(), "the replies finished too fast for this test to mean anything"
    assert count(running.store, "votes") == 0

    finished = finish(streaming)
    battle_id, _, model_a, model_b = only_battle(running.store)
    assert finished.reply_a == expected_reply(running.arena, model_a, PROMPT)
    assert finished.reply_b == expected_reply(running.arena, model_b, PROMPT)
    vote(client, "model_a")
    assert rows(running.store, "SELECT battle_id, winner FROM votes") == [(battle_id, "model_a")]


def test_another_session_cannot_vote_on_a_battle(launch_arena):
    running = launch_arena()
    owner, stranger = running.client(), running.client()
    send(owner, PROMPT)
    battle_id, session_id, *_ = only_battle(running.store)

    with pytest.raises(AppError, match="nothing to vote on yet"):
        vote(stranger, "model_b")
    assert count(running.store, "votes") == 0

    # The stranger's own battle is a separate one, in a session of its own.
    send(stranger, FOLLOW_UP)
    vote(owner, "model_a")
    vote(stranger, "tie")
    votes = rows(
        running.store,
        "SELECT v.battle_id, v.session_id, b.session_id, v.winner "
        "FROM votes v JOIN battles b ON b.id = v.battle_id ORDER BY v.created_at",
    )
    assert len(votes) == 2
    assert votes[0] == (battle_id, session_id, session_id, "model_a")
    stranger_battle, stranger_session, battle_session, winner = votes[1]
    assert stranger_battle != battle_id and stranger_session != session_id
    assert stranger_session == battle_session and winner == "tie"


def raw_event(url: str, api_name: str, data: list[Any], session_hash: str) -> dict[str, Any]:
    """Run an event with a hand-written queue request; returns its completion message."""
    config = httpx.get(f"{url}config", timeout=10).json()
    (fn_index,) = [d["id"] for d in config["dependencies"] if d.get("api_name") == api_name]
    join = {"data": data, "fn_index": fn_index, "session_hash": session_hash}
    httpx.post(f"{url}gradio_api/queue/join", json=join, timeout=10).raise_for_status()
    params = {"session_hash": session_hash}
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params=params, timeout=10) as events:
        for line in events.iter_lines():
            message = json.loads(line.removeprefix("data:")) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                return message
    raise AssertionError("the event never completed")


def test_a_raw_request_cannot_pass_a_battle_in_place_of_the_session_state(launch_arena):
    """The battle lives in server-side state: a vote request carrying one of its own is refused."""
    running = launch_arena()
    send(running.client(), PROMPT)
    battle_id, session_id, *_ = only_battle(running.store)
    forged = {"id": battle_id, "session_id": session_id, "phase": "ready"}

    completed = raw_event(running.url, "battle_vote_model_a", [forged], "forger-session")

    assert completed["success"] is False
    assert "nothing to vote on yet" in completed["output"]["error"]
    assert running.store.vote_for(battle_id) is None


# -- a side that fails --------------------------------------------------------------------------


def test_a_battle_with_a_failed_reply_cannot_be_voted_on_but_can_be_regenerated(
    launch_arena, write_models
):
    with DemoServer(faults={"concise": Faults(error_at=3)}) as server:
        models = write_models(
            {"persona": "concise", "name": "flaky", "endpoint": server.base_url("concise")},
            {
                "persona": "coder",
                "name": "steady",
                "endpoint": server.base_url("coder"),
                "protocol": "tgi",
            },
        )
        running = launch_arena("--models", str(models))
        client = running.client()

        shown = send(client, PROMPT)

        battle_id, _, model_a, _ = only_battle(running.store)
        flaky_side, steady_side = ("a", "b") if model_a == "flaky" else ("b", "a")
        flaky_pane = shown.reply_a if flaky_side == "a" else shown.reply_b
        steady_pane = shown.reply_b if flaky_side == "a" else shown.reply_a
        (failed,) = replies_of(running.store, battle_id, flaky_side)
        (steady,) = replies_of(running.store, battle_id, steady_side)

        # The failing side shows its three tokens, then the error; the other finished in full.
        partial = "".join(token.text for token in tokenize(persona_reply("concise", PROMPT))[:3])
        assert failed["error_kind"] == "stream_error" and failed["content"] == partial
        assert flaky_pane == f"{partial}\n\n⚠️ **Error:** {failed['error_message']}"
        assert steady_pane == persona_reply("coder", PROMPT) == steady["content"]
        assert steady["finished"] and steady["error_kind"] is None
        assert steady["finish_reason"] == "eos_token"

        with pytest.raises(AppError, match="A reply failed"):
            vote(client, "model_a")
        assert "A reply failed" in send(client, FOLLOW_UP).notice

        # Regenerating is allowed: both sides are asked again and both attempts are kept.
        again = regenerate(client)
        assert "Error:" in (again.reply_a if flaky_side == "a" else again.reply_b)
        for side in ("a", "b"):
            stored = replies_of(running.store, battle_id, side)
            attempts = [(r["turn"], r["attempt"]) for r in stored]
            assert attempts == [(0, 0), (0, 1)]
        with pytest.raises(AppError, match="A reply failed"):
            vote(client, "tie")
        assert count(running.store, "votes") == 0


# -- limits and empty input ---------------------------------------------------------------------


def test_an_over_long_prompt_is_refused_with_a_notice_and_kept_in_the_box(launch_arena):
    running = launch_arena("--max-prompt-chars", "40")
    client = running.client()

    refused = send(client, "x" * 41)

    assert "41 characters" in refused.notice and "limit is 40" in refused.notice
    assert refused.prompt is None
    assert refused.a == refused.b == []
    assert count(running.store, "battles") == 0

    accepted = send(client, "y" * 40)  # exactly at the limit
    assert accepted.notice == "" and accepted.prompt == ""
    assert accepted.a[0] == ("user", "y" * 40) and accepted.reply_a and accepted.reply_b


def test_a_send_after_the_last_allowed_turn_gives_the_turn_limit_notice(launch_arena):
    running = launch_arena("--max-turns", "2")
    client = running.client()
    send(client, PROMPT)
    second = send(client, FOLLOW_UP)

    refused = send(client, "One more thing?")

    assert "limit of 2 turns" in refused.notice and refused.prompt is None
    assert refused.a == second.a and refused.b == second.b  # nothing new was shown
    assert count(running.store, "messages WHERE role = 'user'") == 4  # two turns, two sides
    vote(client, "model_b")  # a vote is what is due now
    assert count(running.store, "votes") == 1


def test_empty_input_is_ignored(launch_arena):
    running = launch_arena()
    client = running.client()

    for blank in ("", "   \n\t "):
        ignored = send(client, blank)
        assert ignored.a == ignored.b == [] and ignored.notice == ""

    for table in ("sessions", "battles", "messages"):
        assert count(running.store, table) == 0, table


# -- several turns, regenerate, new round -------------------------------------------------------


def test_two_turns_then_a_vote_stores_both_turns(launch_arena):
    running = launch_arena()
    client = running.client()
    first = send(client, PROMPT)
    second = send(client, FOLLOW_UP)
    vote(client, "model_a")

    # The panes show the whole conversation...
    assert second.a == [
        ("user", PROMPT),
        ("assistant", first.reply_a),
        ("user", FOLLOW_UP),
        ("assistant", second.reply_a),
    ]
    assert second.b[:2] == first.b
    # ...and so does the store.
    (row,) = running.store.battles_frame().to_dict("records")
    assert row["turn"] == 2 and not row["has_error"]
    for conversation, pane in (
        (row["conversation_a"], second.a),
        (row["conversation_b"], second.b),
    ):
        assert [(m["role"], m["content"]) for m in conversation] == pane
    assert second.reply_a == expected_reply(running.arena, row["model_a"], FOLLOW_UP)


def test_regenerate_before_voting_stores_a_second_attempt_and_the_vote_still_counts(
    launch_arena,
):
    running = launch_arena()
    client = running.client()
    first = send(client, PROMPT)

    again = regenerate(client)
    vote(client, "model_b")

    assert again.a[0] == ("user", PROMPT) and len(again.a) == len(again.b) == 2
    assert again.reply_a == first.reply_a  # the demo personas are deterministic
    battle_id, *_ = only_battle(running.store)
    for side in ("a", "b"):
        attempts = [
            (r["turn"], r["attempt"], r["finished"])
            for r in replies_of(running.store, battle_id, side)
        ]
        assert attempts == [(0, 0, True), (0, 1, True)]
    (row,) = running.store.battles_frame().to_dict("records")
    assert row["winner"] == "model_b" and not row["has_error"]
    assert len(row["conversation_a"]) == 2  # the latest attempt only


def test_new_round_starts_a_fresh_battle_with_a_new_draw(launch_arena, monkeypatch):
    running = launch_arena()
    draws: list[tuple[str, str]] = []
    draw_pair = service_module.draw_pair

    def counting_draw(candidates, rng):
        pair = draw_pair(candidates, rng)
        draws.append((pair[0].name, pair[1].name))
        return pair

    monkeypatch.setattr(service_module, "draw_pair", counting_draw)
    client = running.client()
    send(client, PROMPT)
    vote(client, "model_a")

    fresh = new_round(client)

    assert fresh.a == fresh.b == [] and fresh.result == "" and fresh.prompt == ""
    assert (fresh.label_a, fresh.label_b) == ("Model A", "Model B")  # anonymous again
    assert len(draws) == 1  # the pair is drawn with the first message, not before
    second = send(client, FOLLOW_UP)
    assert second.a == [("user", FOLLOW_UP), ("assistant", second.reply_a)]
    vote(client, "tie")

    assert len(draws) == 2
    frame = running.store.battles_frame()
    assert list(frame["winner"]) == ["model_a", "tie"]
    assert frame["question_id"].nunique() == 2
    assert [(a, b) for a, b in zip(frame["model_a"], frame["model_b"], strict=True)] == draws
    assert frame["turn"].tolist() == [1, 1]
    # Same browser session, so both battles belong to one session.
    assert rows(running.store, "SELECT count(DISTINCT session_id) FROM battles") == [(1,)]


# -- startup errors -----------------------------------------------------------------------------


def open_with(models: Path, data_dir: Path) -> None:
    settings = parse_settings(["--models", str(models), "--data-dir", str(data_dir)], environ={})
    with open_arena(settings):
        pytest.fail("the arena started")


def test_a_bad_models_file_is_a_clear_config_error(write_models, data_dir):
    models = write_models("concise", {"persona": "coder", "temprature": 0.3})

    with pytest.raises(ConfigError) as raised:
        open_with(models, data_dir)

    message = str(raised.value)
    assert str(models) in message
    assert "models[1] ('demo-coder') field 'temprature'" in message and "unknown key" in message
    assert not data_dir.exists()  # refused before anything was written


def test_an_unknown_builtin_persona_is_a_clear_error(write_models, data_dir):
    models = write_models("concise", {"persona": "nonesuch"})

    with pytest.raises(ConfigError) as raised:
        open_with(models, data_dir)

    message = str(raised.value)
    assert str(models) in message and "unknown built-in personas ['nonesuch']" in message
    assert "available: concise, verbose, markdown, coder" in message
    assert not data_dir.exists()


def test_the_app_exits_with_status_2_and_the_reason_on_a_config_error(
    write_models, data_dir, capsys
):
    from app import main

    models = write_models("concise", {"persona": "nonesuch"})

    assert main(["--models", str(models), "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown built-in personas ['nonesuch']" in err


def test_waiting_visitors_get_their_queue_place_on_a_timer_not_at_every_event_start(
    launch_arena,
):
    # Gradio's default sends every waiting visitor a status message each time any event starts,
    # which in a burst queues thousands of them ahead of the replies.
    queue = launch_arena().arena.blocks._queue
    assert not queue.live_updates
    assert queue.update_intervals == QUEUE_STATUS_INTERVAL_S
