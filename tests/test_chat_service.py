"""The direct-chat service with scripted clients and a real store: streaming, Stop, regenerate,
per-message feedback as stored events, ownership, ending, and the read-only view."""

from __future__ import annotations

import asyncio

import pytest

from arena.chat import STOPPED, ChatService
from arena.chat_rules import Aspect, ChatError, ChatLimits, ChatPhase, Rating
from arena.config import Registry
from arena.export.terms import TERMS_VERSION
from arena.replies import Reply
from arena.service import Visitor
from arena.store import RecordRejected, Store
from tests.test_service import ScriptedClient, drain, registry

ME, OTHER = Visitor("session-me"), Visitor("session-other")


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path) as store:
        yield store


def service(store: Store, *clients: ScriptedClient, limits: ChatLimits | None = None):
    by_name = {c.name: c for c in clients}
    return ChatService(registry(*by_name), store, by_name, limits or ChatLimits(), 0.0)


def rows(store: Store, sql: str, params=None) -> list[tuple]:
    with store.cursor() as cursor:
        return cursor.execute(sql, params).fetchall()


async def chat_once(svc: ChatService, prompt: str = "hello", visitor: Visitor = ME):
    chat = svc.new_chat(visitor, "m")
    await drain(svc.send(chat, prompt, visitor))
    return chat


def test_a_multi_turn_chat_streams_and_is_stored_as_a_direct_conversation(store):
    client = ScriptedClient("m", tokens=3)
    svc = service(store, client)

    async def run():
        chat = svc.new_chat(ME, "m")
        updates = await drain(svc.send(chat, "hello", ME))
        assert len(updates) >= 2 and updates[-1].phase is ChatPhase.READY
        await drain(svc.send(chat, "and then?", ME))
        await drain(svc.regenerate(chat, ME))
        return chat

    chat = asyncio.run(run())

    # The second turn saw the first one; the regeneration saw the same as the attempt it replaced.
    assert client.seen[1] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "m0 m1 m2 "},
        {"role": "user", "content": "and then?"},
    ]
    assert client.seen[2] == client.seen[1]
    assert rows(store, "SELECT mode, model, battle_id FROM conversations") == [
        ("direct", "m", None)
    ]
    stored = rows(
        store,
        "SELECT turn, attempt, role, content, finished FROM messages "
        "ORDER BY turn, role = 'assistant', attempt",
    )
    assert stored == [
        (0, 0, "user", "hello", None),
        (0, 0, "assistant", "m0 m1 m2 ", True),
        (1, 0, "user", "and then?", None),
        (1, 0, "assistant", "m0 m1 m2 ", True),
        (1, 1, "assistant", "m0 m1 m2 ", True),  # the replaced attempt 0 stays
    ]
    assert [len(t.attempts) for t in chat.turns] == [1, 2]
    assert all(a.message_id for t in chat.turns for a in t.attempts)


def test_stop_ends_the_stream_keeps_what_arrived_and_the_chat_goes_on(store):
    client = ScriptedClient("m", tokens=1000, delay_s=0.01)
    svc = service(store, client)

    async def run():
        chat = svc.new_chat(ME, "m")
        updates = svc.send(chat, "tell me everything", ME)
        seen = []
        async for update in updates:
            seen.append(update.turns[-1].latest.reply.text)
            if update.turns[-1].latest.reply.tokens >= 3 and update.phase is ChatPhase.STREAMING:
                assert await svc.stop(chat, ME)
        assert not await svc.stop(chat, ME)  # nothing streams any more
        return chat

    chat = asyncio.run(run())

    attempt = chat.turns[0].latest
    assert chat.phase is ChatPhase.READY and attempt.stopped
    assert 3 <= attempt.reply.tokens < 1000
    ((content, finished, finish_reason, tokens),) = rows(
        store,
        "SELECT content, finished, finish_reason, tokens FROM messages WHERE role = 'assistant'",
    )
    assert (content, finished, finish_reason) == (attempt.reply.text, False, STOPPED)
    assert content.startswith("m0 m1 m2 ") and tokens == attempt.reply.tokens
    # A stopped reply is like any other: it takes feedback, and the chat continues after it.
    svc.rate(chat, ME, chat.reply_id(1), Rating.DISLIKE)
    client.tokens = 2
    asyncio.run(drain(svc.send(chat, "shorter please", ME)))
    assert client.seen[-1][1] == {"role": "assistant", "content": content}


def test_stop_from_another_session_is_refused(store):
    svc = service(store, ScriptedClient("m"))
    chat = asyncio.run(chat_once(svc))
    with pytest.raises(ChatError, match="another session"):
        asyncio.run(svc.stop(chat, OTHER))


def test_every_change_of_feedback_is_an_event_and_the_chat_shows_the_latest(store):
    svc = service(store, ScriptedClient("m"))
    chat = asyncio.run(chat_once(svc))
    reply = chat.reply_id(1)

    svc.rate(chat, ME, reply, Rating.LIKE)
    svc.rate(chat, ME, reply, Rating.DISLIKE)  # changed
    svc.rate(chat, ME, reply, Rating.DISLIKE)  # pressed again: withdrawn
    svc.feedback(chat, ME, reply, Aspect.EDIT, "A better answer.")
    svc.feedback(chat, ME, reply, Aspect.COMMENT, "Too long.")
    svc.feedback(chat, ME, reply, Aspect.COMMENT, "")  # withdrawn

    assert [(e["aspect"], e["value"]) for e in store.feedback_events(chat.conversation_id)] == [
        ("rating", "like"),
        ("rating", "dislike"),
        ("rating", None),
        ("edit", "A better answer."),
        ("comment", "Too long."),
        ("comment", None),
    ]
    current = chat.feedback_of(reply)
    assert (current.rating, current.edit, current.comment) == (None, "A better answer.", None)
    # The conversation itself was never rewritten: one user message, one reply.
    assert rows(store, "SELECT role, content FROM messages ORDER BY role DESC") == [
        ("user", "hello"),
        ("assistant", "m0 m1 m2 m3 m4 "),
    ]


def test_refused_feedback_stores_nothing_and_says_why(store):
    svc = service(store, ScriptedClient("m"), limits=ChatLimits(max_comment_chars=10))
    mine = asyncio.run(chat_once(svc))
    theirs = asyncio.run(chat_once(svc, visitor=OTHER))
    reply = mine.reply_id(1)

    with pytest.raises(ChatError, match="no such reply"):
        svc.rate(mine, ME, theirs.reply_id(1), Rating.LIKE)  # another session's message
    with pytest.raises(ChatError, match="another session"):
        svc.rate(theirs, ME, theirs.reply_id(1), Rating.LIKE)
    with pytest.raises(ChatError, match="cannot be empty"):
        svc.feedback(mine, ME, reply, Aspect.EDIT, "   ")
    with pytest.raises(ChatError, match="the limit is 10"):
        svc.feedback(mine, ME, reply, Aspect.COMMENT, "far too long a comment")
    assert rows(store, "SELECT count(*) FROM feedback_events") == [(0,)]

    # The store checks again, in the insert: a forged call past the service gets nowhere.
    for conversation, session, message in (
        (mine.conversation_id, OTHER.session_id, reply),  # not the owner
        (mine.conversation_id, ME.session_id, theirs.reply_id(1)),  # not this chat's message
        (mine.conversation_id, ME.session_id, "no-such-message"),
        (mine.conversation_id, ME.session_id, store_user_message_id(store, mine)),  # a user turn
    ):
        with pytest.raises(RecordRejected):
            store.add_feedback(
                conversation, session_id=session, message_id=message, aspect="rating", value="like"
            )
    assert rows(store, "SELECT count(*) FROM feedback_events") == [(0,)]

    # Feedback is for direct chats: a battle side of the same session takes none.
    side_a, _ = store.start_battle(
        battle_id="b1", session_id=ME.session_id, model_a="m", model_b="m2"
    )
    store.add_user_message(side_a, turn=0, content="Hello")
    battle_reply = store.add_reply(
        side_a, turn=0, attempt=0, reply=Reply(model="m", text="Hi", finished=True), parameters={}
    )
    with pytest.raises(RecordRejected):
        store.add_feedback(
            side_a, session_id=ME.session_id, message_id=battle_reply, aspect="rating", value="like"
        )
    assert rows(store, "SELECT count(*) FROM feedback_events") == [(0,)]


def store_user_message_id(store: Store, chat) -> str:
    return rows(
        store,
        "SELECT id FROM messages WHERE conversation_id = ? AND role = 'user'",
        [chat.conversation_id],
    )[0][0]


def test_an_ended_or_published_chat_takes_no_more_changes(store):
    svc = service(store, ScriptedClient("m"))
    chat = asyncio.run(chat_once(svc))
    reply = chat.reply_id(1)
    svc.end(chat, ME)
    assert rows(store, "SELECT count(*) FROM conversation_ends") == [(1,)]
    with pytest.raises(ChatError, match="ended"):
        svc.rate(chat, ME, reply, Rating.LIKE)
    with pytest.raises(RecordRejected, match="ended"):
        store.add_feedback(
            chat.conversation_id,
            session_id=ME.session_id,
            message_id=reply,
            aspect="rating",
            value="like",
        )

    # Exported after a long pause, while the tab stayed open: the next action learns it.
    open_chat = asyncio.run(chat_once(svc))
    with store.cursor() as cursor:
        cursor.execute(
            "INSERT INTO export_rows VALUES ('t', 'direct', ?, 1)", [open_chat.conversation_id]
        )
    with pytest.raises(ChatError, match="published"):
        asyncio.run(drain(svc.send(open_chat, "still there?", ME)))
    assert open_chat.phase is ChatPhase.ENDED
    assert rows(store, "SELECT count(*) FROM messages WHERE content = 'still there?'") == [(0,)]
    with pytest.raises(RecordRejected, match="published"):
        store.add_feedback(
            open_chat.conversation_id,
            session_id=ME.session_id,
            message_id=open_chat.reply_id(1),
            aspect="rating",
            value="like",
        )


def test_only_offered_models_can_be_chatted_with(store):
    hidden = Registry.model_validate(
        {
            "models": [
                {"name": n, "display_name": n, "organization": "o", "endpoint": "http://x", **extra}
                for n, extra in (("m", {}), ("secret", {"side_by_side": False}),
                                 ("off", {"enabled": False}))
            ]
        }
    )  # fmt: skip
    svc = ChatService(hidden, store, {"m": ScriptedClient("m"), "secret": ScriptedClient("s")},
                      ChatLimits())  # fmt: skip
    assert [m.name for m in svc.offered] == ["m"]
    for name in ("secret", "off", "nope", None):
        with pytest.raises(ChatError, match="no model"):
            svc.new_chat(ME, name)


def test_a_link_is_offered_and_shown_only_for_shared_chats_scrubbed(store):
    svc = service(store, ScriptedClient("m"))
    chat = asyncio.run(chat_once(svc, "mail me at jane.doe@example.com"))
    with pytest.raises(ChatError, match="choose \\*\\*Share\\*\\*"):
        svc.share_id(chat, ME)
    assert svc.shared(chat.conversation_id) is None  # no choice yet: not shared

    store.record_consent(ME.session_id, share=True, terms_version=TERMS_VERSION)
    svc.rate(chat, ME, chat.reply_id(1), Rating.LIKE)
    svc.feedback(chat, ME, chat.reply_id(1), Aspect.EDIT, "Sure: write to jane.doe@example.com")
    assert svc.share_id(chat, ME) == chat.conversation_id
    shared = svc.shared(chat.conversation_id)
    assert shared is not None and shared.model == "m"
    user, assistant = shared.messages
    assert user.content == "mail me at <EMAIL>"
    assert (assistant.content, assistant.edited, assistant.rating) == (
        "Sure: write to <EMAIL>",
        True,
        Rating.LIKE,
    )

    store.record_consent(ME.session_id, share=False, terms_version=TERMS_VERSION)
    assert svc.shared(chat.conversation_id) is None  # changed their mind: the link goes dark
    for unknown in ("no-such-id", "", None, "x" * 1000, ["a"]):
        assert svc.shared(unknown) is None


def test_a_battle_conversation_is_never_shown_as_a_direct_chat(store):
    svc = service(store, ScriptedClient("m"))
    store.record_session("s", ip_hash=None, username=None)
    store.record_consent("s", share=True, terms_version=TERMS_VERSION)
    side_a, _ = store.start_battle(battle_id="b", session_id="s", model_a="m", model_b="n")
    store.add_user_message(side_a, turn=0, content="hi")
    store.add_reply(side_a, turn=0, attempt=0, reply=Reply(model="m", text="x", finished=True),
                    parameters={})  # fmt: skip
    assert svc.shared(side_a) is None


def test_migration_7_keeps_the_export_watermark_and_admits_direct_chats(tmp_path):
    import duckdb

    from arena.store.migrations import LATEST_VERSION, MIGRATIONS, migrate

    path = tmp_path / "arena.duckdb"
    with duckdb.connect(str(path)) as con:
        assert migrate(con, path, MIGRATIONS[:5]) == 5
        con.execute(
            "INSERT INTO export_rows VALUES ('t', 'vote', 'v1', 1), ('t', 'deletion', 'd1', 2)"
        )
    with Store(path) as store, store.cursor() as cursor:
        assert store.schema_version == LATEST_VERSION
        assert cursor.execute("SELECT * FROM export_rows ORDER BY batch").fetchall() == [
            ("t", "vote", "v1", 1),
            ("t", "deletion", "d1", 2),
        ]
        cursor.execute("INSERT INTO export_rows VALUES ('t', 'direct', 'c1', 3)")
        with pytest.raises(duckdb.ConstraintException):
            cursor.execute("INSERT INTO export_rows VALUES ('t', 'nonsense', 'x', 3)")
        with pytest.raises(duckdb.ConstraintException):
            cursor.execute(
                "INSERT INTO feedback_events (id, conversation_id, message_id, session_id, "
                "aspect, value) VALUES ('e', 'c', 'm', 's', 'rating', 'love')"
            )


def test_a_reader_who_leaves_mid_stream_still_leaves_the_reply_stored(store):
    svc = service(store, ScriptedClient("m", tokens=1000, delay_s=0.01))

    async def run():
        chat = svc.new_chat(ME, "m")
        updates = svc.send(chat, "hello", ME)
        async for update in updates:
            if update.turns[-1].latest.reply.tokens >= 2:
                break
        await updates.aclose()  # what Gradio does when the browser goes away
        return chat

    chat = asyncio.run(run())

    ((content, finished),) = rows(
        store, "SELECT content, finished FROM messages WHERE role = 'assistant'"
    )
    assert content.startswith("m0 m1 ") and finished is False
    assert chat.phase is ChatPhase.READY and chat.turns[0].latest.message_id is not None
