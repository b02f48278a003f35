"""Direct chats in the feedback dataset: edits and liked regenerations as preference rows, ratings
as KTO rows, every feedback event in ``feedback``, nothing at all from sessions that do not share,
each chat exported once (and then closed), deletions, compaction and restore.

Chats are written straight into a store (no UI), pushed to a local folder or `LocalHub`, and
read back with DuckDB and the ``datasets`` library.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import pandas as pd
import pyarrow.parquet as pq
import pytest

from arena.chat import ChatService
from arena.chat_rules import ChatLimits
from arena.config import Registry
from arena.export import (
    Exporter,
    HubRepo,
    LocalFolder,
    compact,
    direct,
    restore_store,
    shard_path,
)
from arena.export.terms import TERMS_VERSION
from arena.replies import Reply
from arena.signal_labels import label_pending
from arena.store import RecordRejected, Store
from tests.test_export import play, published_text, rows
from tests.test_export_restore import REPO, exporter, hub  # noqa: F401 (the hub fixture)

MODEL = "alpha"


class Chat:
    """Writes one direct chat of ``session`` into a store, as the chat service would."""

    def __init__(self, store: Store, session: str, *, share: bool | None = True) -> None:
        self.store, self.session = store, session
        store.record_session(session, ip_hash=f"iphash-{session}", username=None)
        if share is not None:
            store.record_consent(session, share=share, terms_version=TERMS_VERSION)
        self.id = store.start_conversation(session_id=session, mode="direct", model=MODEL)
        self.turns = 0

    def turn(self, prompt: str, *replies: str) -> list[str]:
        """A user message and its replies (regenerations after the first); their ids."""
        self.store.add_user_message(self.id, turn=self.turns, content=prompt)
        ids = [
            self.store.add_reply(
                self.id,
                turn=self.turns,
                attempt=attempt,
                reply=Reply(model=MODEL, text=text, tokens=1, finished=True),
                parameters={},
            )
            for attempt, text in enumerate(replies)
        ]
        self.turns += 1
        return ids

    def feedback(self, message: str, aspect: str, value: str | None) -> None:
        self.store.add_feedback(
            self.id, session_id=self.session, message_id=message, aspect=aspect, value=value
        )

    def end(self) -> None:
        self.store.end_conversation(self.id, session_id=self.session)


def test_a_shared_chat_becomes_preference_kto_and_feedback_rows(store: Store, tmp_path: Path):
    chat = Chat(store, "s1")
    (first,) = chat.turn("Capital of France?", "Lyon.")
    chat.feedback(first, "rating", "dislike")
    chat.feedback(first, "edit", "Paris.")  # the chat went on from the edit
    _replaced, new = chat.turn("And of Italy? Mail me at jane@example.com", "Milan.", "Rome.")
    chat.feedback(new, "rating", "dislike")
    chat.feedback(new, "rating", "like")  # changed: the like stands
    chat.feedback(new, "comment", "Right, thanks jane@example.com")
    chat.end()
    play(store, "b1", session_id="voter")  # a battle in the same batch

    result = Exporter(store, LocalFolder(tmp_path / "dataset"), license_id="cc-by-4.0").push()

    assert result.rows["feedback"] == 5
    folder = tmp_path / "dataset"
    # The edit: chosen is the user's, rejected the model's, the prompt the chat up to that turn.
    preference = {
        r["chosen_model"]: r for r in rows(folder, "preference") if r["question_id"] == chat.id
    }
    edit, regenerated = preference["human"], preference[MODEL]
    assert [dict(m) for m in edit["prompt"]] == [{"role": "user", "content": "Capital of France?"}]
    assert [dict(m) for m in edit["chosen"]] == [{"role": "assistant", "content": "Paris."}]
    assert [dict(m) for m in edit["rejected"]] == [{"role": "assistant", "content": "Lyon."}]
    assert edit["rejected_model"] == MODEL
    assert (edit["source"], regenerated["source"]) == ("edit", "regeneration")
    # The liked regeneration against the reply it replaced; its prompt carries the edited turn,
    # scrubbed.
    assert [dict(m) for m in regenerated["prompt"]] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy? Mail me at <EMAIL>"},
    ]
    assert [dict(m) for m in regenerated["chosen"]] == [{"role": "assistant", "content": "Rome."}]
    assert [dict(m) for m in regenerated["rejected"]] == [
        {"role": "assistant", "content": "Milan."}
    ]
    kto = sorted(
        (r["completion"][0]["content"], r["label"])
        for r in rows(folder, "unpaired")
        if r["question_id"] == chat.id
    )
    # Disliked Lyon, the replaced (unrated) Milan, the liked Rome.
    assert kto == [("Lyon.", False), ("Milan.", False), ("Rome.", True)]
    events = [
        (r["turn"], r["attempt"], r["aspect"], r["value"], r["current"])
        for r in sorted(rows(folder, "feedback"), key=lambda r: r["event_index"])
    ]
    assert events == [
        (0, 0, "rating", "dislike", True),
        (0, 0, "edit", "Paris.", True),
        (1, 1, "rating", "dislike", False),
        (1, 1, "rating", "like", True),
        (1, 1, "comment", "Right, thanks <EMAIL>", True),
    ]
    (conversation,) = [r for r in rows(folder, "conversations") if r["mode"] == "direct"]
    assert conversation["question_id"] == chat.id and pd.isna(conversation["side"])
    assert [(m["turn"], m["attempt"], m["role"]) for m in conversation["messages"]] == [
        (0, 0, "user"), (0, 0, "assistant"), (1, 0, "user"), (1, 0, "assistant"),
        (1, 1, "assistant"),
    ]  # fmt: skip
    assert "jane@example.com" not in published_text(folder)
    # Battle rows and chat rows load together, as the trainers read them.
    for config in ("preference", "unpaired", "feedback", "conversations"):
        loaded = datasets.load_dataset(
            str(folder), config, split="train", cache_dir=str(tmp_path / "cache")
        )
        assert len(loaded) == result.rows[config]
    card = (folder / "README.md").read_text()
    assert "config_name: feedback" in card and "does not exist yet" not in card


def test_battle_and_chat_rows_of_one_batch_are_published_in_time_order(
    store: Store, tmp_path: Path
):
    chats = []
    for index in range(3):
        chat = Chat(store, f"c{index}")
        (reply,) = chat.turn(f"Question {index}?", f"Answer {index}.")
        chat.feedback(reply, "edit", f"Better answer {index}.")
        chat.feedback(reply, "rating", "like")
        chat.end()
        chats.append(chat.id)
        if index < 2:
            play(store, f"b{index}", session_id=f"voter{index}")

    Exporter(store, LocalFolder(tmp_path / "dataset"), license_id="cc-by-4.0").push()

    def published(config: str) -> list[dict]:
        return pq.read_table(tmp_path / "dataset" / shard_path(config, 1)).to_pylist()

    c0, c1, c2 = chats
    # Both sides of a battle start at the same moment: they follow each other.
    conversations = published("conversations")
    assert [r["question_id"] for r in conversations] == [c0, "b0", "b0", c1, "b1", "b1", c2]
    keys = [(r["tstamp"], r["conversation_id"]) for r in conversations]
    assert keys == sorted(keys)
    assert [r["question_id"] for r in published("preference")] == [c0, "b0", c1, "b1", c2]
    unpaired = [r["question_id"] for r in published("unpaired")]
    assert unpaired == [c0, "b0", "b0", c1, "b1", "b1", c2]


def test_chats_of_sessions_that_do_not_share_publish_nothing(store: Store, tmp_path: Path):
    for session, share in (("private", False), ("undecided", None)):
        chat = Chat(store, session, share=share)
        (reply,) = chat.turn(f"hush-prompt of {session}", f"hush-reply of {session}")
        chat.feedback(reply, "edit", f"hush-edit of {session}")
        chat.feedback(reply, "comment", f"hush-comment of {session}")
        chat.end()
    play(store, "b1", session_id="voter")  # something to publish, so a batch is written

    result = Exporter(store, LocalFolder(tmp_path / "dataset"), license_id="cc-by-4.0").push()

    assert result.batch == 1
    assert (result.rows["feedback"], result.rows["conversations"]) == (0, 2)  # the battle's
    assert "hush-" not in published_text(tmp_path / "dataset")
    # And a session that stops sharing between planning and writing publishes nothing either.
    later = Chat(store, "fickle")
    later.turn("hush-prompt of fickle", "hush-reply")
    later.end()
    exporter = Exporter(store, LocalFolder(tmp_path / "dataset"), license_id="cc-by-4.0")
    with store.cursor() as cursor:
        cursor.begin()
        assert direct.plan(cursor, target=exporter.target.key, batch=2) == 1
        cursor.execute("INSERT INTO export_batches (target, batch) VALUES (?, 2)",
                       [exporter.target.key])  # fmt: skip
        cursor.commit()
    store.record_consent("fickle", share=False, terms_version=TERMS_VERSION)
    assert exporter.push().rows["conversations"] == 0
    assert "hush-" not in published_text(tmp_path / "dataset")


def test_a_chat_is_exported_once_when_settled_and_then_takes_no_changes(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    exporter = Exporter(store, LocalFolder(tmp_path / "dataset"), license_id="cc-by-4.0")
    chat = Chat(store, "s1")
    (reply,) = chat.turn("hello", "hi")

    assert exporter.push().batch is None  # still open, and recent: not yet

    monkeypatch.setattr(direct, "IDLE_BEFORE_EXPORT_S", 0)  # an hour has passed
    first = exporter.push()
    assert (first.batch, first.rows["conversations"]) == (1, 1)
    with pytest.raises(RecordRejected, match="published"):
        chat.feedback(reply, "rating", "like")
    assert exporter.push().batch is None  # never twice


def test_deleting_lists_published_chats_and_compaction_drops_them(store: Store, tmp_path: Path):
    target = LocalFolder(tmp_path / "dataset")
    exporter = Exporter(store, target, license_id="cc-by-4.0")
    chat = Chat(store, "s1")
    (reply,) = chat.turn("hello", "hi")
    chat.feedback(reply, "rating", "like")
    chat.end()
    kept = Chat(store, "s2")
    kept.turn("other", "answer")
    kept.end()
    exporter.push()

    store.delete_contributions(session_id="s1", username=None)

    with store.cursor() as cursor:
        assert cursor.execute("SELECT id FROM deletions").fetchall() == [(chat.id,)]
        assert cursor.execute(
            "SELECT count(*) FROM feedback_events WHERE session_id = 's1'"
        ).fetchall() == [(0,)]
    exporter.push()
    result = compact(store, target, license_id="cc-by-4.0")
    assert result.skipped is None
    folder = tmp_path / "dataset"
    for config in ("conversations", "unpaired", "feedback"):
        assert chat.id not in {r["question_id"] for r in rows(folder, config)}
    assert kept.id in {r["question_id"] for r in rows(folder, "conversations")}


def test_published_chats_come_back_after_a_wipe_with_their_feedback(
    tmp_path: Path,
    hub,  # noqa: F811 (the fixture imported above)
):
    with Store.open(tmp_path / "before") as store:
        chat = Chat(store, "s1")
        (first,) = chat.turn("Capital of France?", "Lyon.")
        chat.feedback(first, "edit", "Paris.")
        chat.feedback(first, "rating", "like")
        chat.feedback(first, "rating", None)
        chat.end()
        play(store, "b1", session_id="voter")
        exporter(store, hub).push()

    with Store.open(tmp_path / "after") as store:
        result = restore_store(store, HubRepo(REPO, token=hub.token, endpoint=hub.endpoint))
        assert result.skipped is None
        events = [(e["aspect"], e["value"]) for e in store.feedback_events(chat.id)]
        assert events == [("edit", "Paris."), ("rating", "like"), ("rating", None)]
        # Its share link works again, showing the chat as it ended.
        chats = ChatService(
            Registry.model_validate(
                {"models": [{"name": MODEL, "display_name": "Alpha", "organization": "o",
                             "endpoint": "http://x"}]}
            ),
            store,
            {MODEL: object()},  # never streams here
            ChatLimits(),
        )  # fmt: skip
        shared = chats.shared(chat.id)
        assert shared is not None
        assert [(m.role, m.content, m.edited) for m in shared.messages] == [
            ("user", "Capital of France?", False),
            ("assistant", "Paris.", True),
        ]
        # Closed and known as published: nothing is pushed twice, nothing more is accepted.
        assert exporter(store, hub).push().batch is None
        (message,) = [m for m, a, v, t in _ids(store, chat.id)]
        with pytest.raises(RecordRejected):
            store.add_feedback(
                chat.id, session_id=store_session(store, chat.id), message_id=message,
                aspect="comment", value="late",
            )  # fmt: skip


def test_a_chat_a_crashed_compaction_left_twice_comes_back_once(tmp_path: Path):
    folder = tmp_path / "dataset"
    with Store.open(tmp_path / "before") as store:
        chat = Chat(store, "s1")
        (first,) = chat.turn("Capital of France?", "Lyon.")
        chat.feedback(first, "rating", "like")
        chat.end()
        play(store, "b1", session_id="voter")
        Exporter(store, LocalFolder(folder), license_id="cc-by-4.0").push()
    # A merged shard written next to the shards it merges, which were never removed.
    for config in ("battles", "conversations", "feedback"):
        shard = folder / "data" / config / "batch-00000001.parquet"
        shutil.copy(shard, shard.with_name("batch-00000001-compacted.parquet"))

    with Store.open(tmp_path / "after") as store:
        assert restore_store(store, LocalFolder(folder)).votes == 1
        with store.cursor() as cursor:
            messages = cursor.execute(
                "SELECT role, content FROM messages WHERE conversation_id = ? "
                "ORDER BY turn, role DESC",
                [chat.id],
            ).fetchall()
        assert messages == [("user", "Capital of France?"), ("assistant", "Lyon.")]
        events = [(e["aspect"], e["value"]) for e in store.feedback_events(chat.id)]
        assert events == [("rating", "like")]


def _ids(store: Store, conversation: str):
    with store.cursor() as cursor:
        return cursor.execute(
            "SELECT id, turn, attempt, role FROM messages WHERE conversation_id = ? "
            "AND role = 'assistant'",
            [conversation],
        ).fetchall()


def store_session(store: Store, conversation: str) -> str:
    with store.cursor() as cursor:
        return cursor.execute(
            "SELECT session_id FROM conversations WHERE id = ?", [conversation]
        ).fetchall()[0][0]


def test_a_direct_chat_s_signals_and_signal_pair_are_published(store: Store, tmp_path: Path):
    chat = Chat(store, "s1")
    chat.turn("Capital of Australia?", "Sydney.")
    chat.turn("That's wrong, try again.", "Canberra.")
    chat.turn("Thanks, that's right!", "You're welcome.")
    chat.end()
    label_pending(store)

    Exporter(store, LocalFolder(tmp_path / "dataset"), license_id="cc-by-4.0").push()

    folder = tmp_path / "dataset"
    signals = rows(folder, "signals")
    # Each reading sits on the reply the next turn reacted to.
    assert sorted((s["mode"], s["turn"], s["polarity"]) for s in signals) == [
        ("direct", 0, "dsat"),
        ("direct", 1, "sat"),
    ]
    assert {s["question_id"] for s in signals} == {chat.id}
    (pair,) = [r for r in rows(folder, "preference") if r["source"] == "signals"]
    assert pair["question_id"] == chat.id
    assert [dict(m) for m in pair["rejected"]] == [{"role": "assistant", "content": "Sydney."}]
    assert [dict(m) for m in pair["chosen"]] == [{"role": "assistant", "content": "Canberra."}]
