"""The Direct chat tab in-process: chats driven through the app's API, read from the store.

Like tests/test_side_by_side.py: each test launches the app on a free port and talks to it with
``gradio_client`` (one client, one browser session). Every feedback event a browser could send
is checked in the store, and the same events sent forged (another session, a reply that does not
exist, bad input) are refused with a notice and store nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.test_app import rows

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")

CONCISE, VERBOSE = "demo-concise", "demo-verbose"
PROMPT = "How do I bake bread at home?"


@dataclass
class Shown:
    """What the tab shows after an event (gradio_client leaves out the state and buttons)."""

    messages: list[tuple[str, str]]
    prompt: Any
    notice: str
    target: Any
    status: str
    edit_text: Any
    comment: Any


def shown(outputs: tuple[Any, ...]) -> Shown:
    _model, chatbot, prompt, notice, target, status, edit_text, comment = outputs[:8]
    messages = [
        (m["role"], "".join(part["text"] for part in m["content"]))
        for m in chatbot.get("value", [])
    ]
    return Shown(messages, prompt, notice, target, status, edit_text, comment)


def send(client, prompt: str, model: str = CONCISE) -> Shown:
    job = client.submit(prompt, model, api_name="/chat_send")
    job.result(timeout=60)
    return shown(job.outputs()[-1])


def regenerate(client) -> Shown:
    job = client.submit(api_name="/chat_regenerate")
    job.result(timeout=60)
    return shown(job.outputs()[-1])


def act(client, api_name: str, *args: Any) -> Shown:
    return shown(client.predict(*args, api_name=api_name))


def events(store) -> list[tuple[str, Any]]:
    return rows(store, "SELECT aspect, value FROM feedback_events ORDER BY seq")


def test_a_chat_with_likes_an_edit_a_regeneration_and_a_comment_is_stored_as_events(
    launch_arena,
):
    running = launch_arena()
    store = running.store
    client = running.client()
    client.predict(api_name="/chat_consent_share")

    first = send(client, PROMPT)

    assert first.messages[0] == ("user", PROMPT)
    assert first.messages[1][0] == "assistant" and "Reply 1" in first.messages[1][1]
    assert first.notice == ""
    ((conversation, mode, model, session),) = rows(
        store, "SELECT id, mode, model, session_id FROM conversations"
    )
    assert (mode, model) == ("direct", CONCISE)
    assert rows(store, "SELECT share FROM consents WHERE session_id = ?", session) == [(True,)]
    (original,) = [
        c for (c,) in rows(store, "SELECT content FROM messages WHERE role = 'assistant'")
    ]

    liked = act(client, "/chat_like", 1)
    assert "liked" in liked.status and "👍 liked" in liked.messages[1][1]
    act(client, "/chat_dislike", 1)  # changed
    act(client, "/chat_dislike", 1)  # pressed again: withdrawn
    edited = act(client, "/chat_edit", 1, "Mix, knead, proof, bake at 230 °C.")
    assert edited.messages[1][1].startswith("Mix, knead, proof, bake at 230 °C.")
    assert "edited" in edited.messages[1][1]

    again = regenerate(client)

    assert "attempt 2" in again.messages[1][1]
    act(client, "/chat_like", 1)  # the new reply
    act(client, "/chat_comment", 1, "  Much better.  ")
    assert events(store) == [
        ("rating", "like"),
        ("rating", "dislike"),
        ("rating", None),
        ("edit", "Mix, knead, proof, bake at 230 °C."),
        ("rating", "like"),
        ("comment", "Much better."),
    ]
    # The edit belongs to the replaced attempt, the later events to the new one; the original
    # reply is still in the store, untouched.
    by_attempt = rows(
        store,
        "SELECT m.attempt, list(e.aspect ORDER BY e.seq) FROM feedback_events e "
        "JOIN messages m ON m.id = e.message_id GROUP BY m.attempt ORDER BY m.attempt",
    )
    assert by_attempt == [
        (0, ["rating", "rating", "rating", "edit"]),
        (1, ["rating", "comment"]),
    ]
    assert rows(store, "SELECT content FROM messages WHERE role = 'assistant' AND attempt = 0") == [
        (original,)
    ]

    link = client.predict(api_name="/chat_share")
    assert f"?conversation={conversation}" in link


def test_stop_ends_the_reply_through_the_app_and_keeps_what_arrived(launch_arena):
    running = launch_arena("--demo-token-latency-ms", "40")
    client = running.client()
    job = client.submit("Tell me a long story", VERBOSE, api_name="/chat_send")
    while not any(
        "".join(p["text"] for p in m["content"])
        for out in job.outputs()
        for m in out[1].get("value", [])
        if m["role"] == "assistant"
    ):
        assert not job.done(), "the reply finished before it could be stopped"
        time.sleep(0.05)

    client.predict(api_name="/chat_stop")
    final = shown(job.result(timeout=60))

    ((content, finished, finish_reason),) = rows(
        running.store,
        "SELECT content, finished, finish_reason FROM messages WHERE role = 'assistant'",
    )
    assert (finished, finish_reason) == (False, "stopped")
    assert content and "stopped" in final.messages[1][1]
    assert final.messages[1][1].startswith(content)
    # The chat goes on from the stopped reply.
    assert len(send(client, "Go on", VERBOSE).messages) == 4


def test_forged_and_bad_feedback_is_refused_with_a_notice_and_stores_nothing(launch_arena):
    running = launch_arena()
    store = running.store
    mine, theirs = running.client(), running.client()
    send(mine, PROMPT)
    send(mine, "And rye bread?")

    # Another session holds no chat: nothing of mine can be reached from it.
    for api_name, args in (
        ("/chat_like", (1,)),
        ("/chat_edit", (2, "hijacked")),
        ("/chat_comment", (1, "spam")),
    ):
        assert "no reply to give feedback on" in act(theirs, api_name, *args).notice
    assert "Send a message first" in theirs.predict(api_name="/chat_share")
    assert "Nothing to regenerate" in regenerate(theirs).notice

    # My own session, but replies that do not exist, or feedback the rules refuse.
    assert "no reply 3" in act(mine, "/chat_like", 3).notice
    assert "no reply" in act(mine, "/chat_like", "1; DROP TABLE messages").notice
    assert "Only the latest reply can be edited" in act(mine, "/chat_edit", 1, "x").notice
    refused = act(mine, "/chat_edit", 2, "   ")
    assert "cannot be empty" in refused.notice
    long_comment = "c" * 2001
    refused = act(mine, "/chat_comment", 2, long_comment)
    assert "2,001 characters long; the limit is 2,000" in refused.notice
    assert "value" not in refused.comment  # the box keeps what was typed
    assert "no edit of yours to withdraw" in act(mine, "/chat_edit_withdraw", 2).notice
    # Without the Share choice there is no link to give.
    assert "choose **Share**" in mine.predict(api_name="/chat_share")
    assert events(store) == []
    assert rows(store, "SELECT count(*) FROM messages") == [(4,)]


def test_a_new_chat_ends_the_last_one_and_keeps_the_session(launch_arena):
    running = launch_arena()
    store = running.store
    client = running.client()
    client.predict(api_name="/chat_consent_private")
    send(client, PROMPT)

    after = act(client, "/chat_new", VERBOSE)
    assert after.messages == [] and "new chat started" in after.notice
    send(client, "Hello", VERBOSE)

    chats = rows(
        store,
        "SELECT c.model, e.conversation_id IS NOT NULL FROM conversations c "
        "LEFT JOIN conversation_ends e ON e.conversation_id = c.id ORDER BY c.created_at",
    )
    assert chats == [(CONCISE, True), (VERBOSE, False)]
    assert rows(store, "SELECT count(DISTINCT session_id) FROM conversations") == [(1,)]
    assert rows(store, "SELECT share FROM consents") == [(False,)]


def test_deleting_from_the_chat_tab_removes_the_chats_and_their_feedback(launch_arena):
    running = launch_arena()
    store = running.store
    client, other = running.client(), running.client()
    send(client, PROMPT)
    act(client, "/chat_like", 1)
    send(other, "Someone else's chat")
    act(other, "/chat_like", 1)

    after = client.predict(api_name="/chat_delete_contributions")

    assert "Deleted your chats" in after[3] and after[1]["value"] == []
    assert rows(store, "SELECT count(*) FROM conversations") == [(1,)]  # the other session's
    assert rows(store, "SELECT count(*) FROM feedback_events") == [(1,)]
    assert rows(store, "SELECT count(*) FROM deletions") == [(0,)]  # nothing was published
