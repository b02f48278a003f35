"""Signals stored on the replies they refer to: the labelling pass, its job and its CLI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pytest

from arena.replies import Reply
from arena.signal_labels import RULES_VERSION, label_pending
from arena.store import Store
from arena.store.migrations import LATEST_VERSION, MIGRATIONS, migrate
from scheduler.__main__ import main

REPO = Path(__file__).resolve().parent.parent


def reply(model: str, text: str, *, finished: bool = True) -> Reply:
    return Reply(model=model, text=text, tokens=3, ttft_s=0.1, total_s=0.2, finished=finished)


def direct_chat(
    store: Store, turns: Sequence[tuple[str, str | None]], *, session_id: str = "s1"
) -> tuple[str, list[str]]:
    """A direct conversation with alpha: (user text, reply text or None) per turn.

    Returns the conversation id and the id of each turn's reply ("" where there is none).
    """
    store.record_session(session_id, ip_hash=None, username=None)
    conversation = store.start_conversation(session_id=session_id, mode="direct", model="alpha")
    replies = []
    for turn, (user, answer) in enumerate(turns):
        store.add_user_message(conversation, turn=turn, content=user)
        replies.append(
            ""
            if answer is None
            else store.add_reply(
                conversation, turn=turn, attempt=0, reply=reply("alpha", answer), parameters={}
            )
        )
    return conversation, replies


def stored(store: Store) -> list[tuple]:
    """(reply id, polarity, category, evidence, start, end) of every rules row, by user turn."""
    with store.cursor() as cursor:
        return cursor.execute(
            "SELECT s.message_id, s.polarity, s.category, s.evidence, s.evidence_start, "
            "s.evidence_end FROM message_signals s JOIN messages u ON u.id = s.user_message_id "
            "WHERE s.source = 'rules' ORDER BY u.conversation_id, u.turn"
        ).fetchall()


def test_a_complaint_then_thanks_lands_on_the_replies_they_follow(store: Store) -> None:
    conversation, replies = direct_chat(
        store,
        [
            ("What is the capital of Australia?", "Sydney."),
            ("No, that's wrong.", "Sorry: Canberra."),
            ("thanks!", None),
        ],
    )

    result = label_pending(store)

    assert (result.turns, result.sat, result.dsat) == (2, 1, 1)
    assert stored(store) == [
        (replies[0], "dsat", "factual_error", "that's wrong", 4, 16),
        (replies[1], "sat", "gratitude", "thanks", 0, 6),
    ]
    with store.cursor() as cursor:
        rows = cursor.execute(
            "SELECT s.conversation_id, s.labeller, u.turn, u.role FROM message_signals s "
            "JOIN messages u ON u.id = s.user_message_id ORDER BY u.turn"
        ).fetchall()
    assert rows == [
        (conversation, RULES_VERSION, 1, "user"),
        (conversation, RULES_VERSION, 2, "user"),
    ]
    assert result.describe().startswith("signals: 2 user turns labelled by rules-")


def test_a_second_run_labels_nothing_and_a_later_turn_only_itself(store: Store) -> None:
    conversation, _ = direct_chat(store, [("Write a haiku", "Old pond..."), ("meh", "Frog...")])
    assert label_pending(store).turns == 1

    again = label_pending(store)
    assert again.turns == 0 and again.describe().startswith("signals: nothing new to label")

    store.add_user_message(conversation, turn=2, content="perfect, thank you")
    later = label_pending(store)
    assert (later.turns, later.sat, later.dsat) == (1, 1, 0)
    assert [row[1] for row in stored(store)] == ["dsat", "sat"]


@pytest.mark.parametrize(
    ("follow_up", "expected"),
    [
        # Hard negatives: gratitude that is not satisfaction, and turns that only look like it.
        ("thanks, but this is wrong", ("dsat", "factual_error", "this is wrong")),
        ("Great, another wrong answer.", ("dsat", "factual_error", "another wrong answer")),
        ("wow, thanks for nothing", ("dsat", "negative_feedback", "thanks for nothing")),
        ("closer! just make the ending shorter", ("sat", "getting_there", "closer")),
        ("No, I don't have a Mac. I'm on Linux.", (None, None, None)),
        ("Write a thank you note to my interviewer", (None, None, None)),
        ("Is it wrong to use global variables?", (None, None, None)),
    ],
)
def test_hard_negatives_are_stored_as_the_rules_read_them(
    store: Store, follow_up: str, expected: tuple
) -> None:
    _, replies = direct_chat(store, [("Help me", "Here you go."), (follow_up, None)])

    label_pending(store)

    ((message_id, polarity, category, evidence, start, end),) = stored(store)
    assert (message_id, polarity, category, evidence) == (replies[0], *expected)
    if evidence is not None:
        assert follow_up[start:end] == evidence
    else:
        assert start is end is None


def test_the_reply_is_the_latest_attempt_of_the_previous_turn(store: Store) -> None:
    conversation, _ = direct_chat(store, [("Tell me a joke", "Why did...")])
    regenerated = store.add_reply(
        conversation, turn=0, attempt=1, reply=reply("alpha", "Knock knock"), parameters={}
    )
    store.add_user_message(conversation, turn=1, content="hahaha")

    label_pending(store)

    assert stored(store) == [(regenerated, "sat", "humor", "hahaha", 0, 6)]


def test_turns_that_follow_no_reply_are_not_labelled(store: Store) -> None:
    # The first turn follows nothing; a turn whose previous turn got no reply reacts to nothing.
    direct_chat(store, [("thanks", None), ("that's wrong", None)])

    assert label_pending(store).turns == 0
    assert stored(store) == []


def test_both_sides_of_a_battle_are_labelled_each_on_its_own_reply(store: Store) -> None:
    store.record_session("s1", ip_hash=None, username=None)
    sides = store.start_battle(battle_id="b1", session_id="s1", model_a="alpha", model_b="beta")
    ids = {}
    for conversation, model in zip(sides, ("alpha", "beta"), strict=True):
        store.add_user_message(conversation, turn=0, content="2+2?")
        ids[model] = store.add_reply(
            conversation, turn=0, attempt=0, reply=reply(model, "5"), parameters={}
        )
        store.add_user_message(conversation, turn=1, content="that's incorrect")

    result = label_pending(store)

    assert result.turns == 2
    assert {row[0] for row in stored(store)} == set(ids.values())
    assert {row[1:4] for row in stored(store)} == {("dsat", "factual_error", "that's incorrect")}


def test_chunks_label_every_turn_once(store: Store) -> None:
    for session in ("s1", "s2", "s3"):
        direct_chat(store, [("Q", "A"), ("thanks", "B"), ("wrong", "C")], session_id=session)

    result = label_pending(store, chunk=4)

    assert result.turns == 6
    with store.cursor() as cursor:
        [(rows, distinct)] = cursor.execute(
            "SELECT count(*), count(DISTINCT user_message_id) FROM message_signals"
        ).fetchall()
    assert rows == distinct == 6


def test_rules_and_judge_rows_sit_side_by_side_and_never_mix(store: Store) -> None:
    _, replies = direct_chat(store, [("Q", "A"), ("great", None)])
    label_pending(store)
    with store.cursor() as cursor:
        [(user_message, conversation)] = cursor.execute(
            "SELECT user_message_id, conversation_id FROM message_signals"
        ).fetchall()
        cursor.execute(
            "INSERT INTO message_signals (user_message_id, source, message_id, conversation_id, "
            "polarity, category, labeller) VALUES (?, 'judge', ?, ?, 'sat', 'praise', 'judge-x')",
            [user_message, replies[0], conversation],
        )
        with pytest.raises(duckdb.ConstraintException):
            cursor.execute(
                "INSERT INTO message_signals (user_message_id, source, message_id, "
                "conversation_id, labeller) VALUES (?, 'rules', ?, ?, 'again')",
                [user_message, replies[0], conversation],
            )
        with pytest.raises(duckdb.ConstraintException):
            cursor.execute(
                "INSERT INTO message_signals (user_message_id, source, message_id, "
                "conversation_id, labeller) VALUES ('u', 'mixed', 'm', 'c', 'x')"
            )
    # The judge's row does not stop the rules from labelling, and the rules skip their own.
    assert label_pending(store).turns == 0
    assert len(stored(store)) == 1


def test_deleting_contributions_deletes_their_signals(store: Store) -> None:
    direct_chat(store, [("Q", "A"), ("thanks", None)], session_id="gone")
    direct_chat(store, [("Q", "A"), ("thanks", None)], session_id="kept")
    label_pending(store)

    store.delete_contributions(session_id="gone", username=None)

    with store.cursor() as cursor:
        [(left,)] = cursor.execute(
            "SELECT count(*) FROM message_signals s "
            "JOIN conversations c ON c.id = s.conversation_id WHERE c.session_id = 'gone'"
        ).fetchall()
        [(total,)] = cursor.execute("SELECT count(*) FROM message_signals").fetchall()
    assert (left, total) == (0, 1)


def test_a_version_5_store_gains_the_table_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "arena.duckdb"
    with duckdb.connect(str(path)) as con:
        assert migrate(con, path, MIGRATIONS[:5]) == 5
        con.execute(
            "INSERT INTO conversations (id, session_id, mode, model) "
            "VALUES ('c', 's', 'direct', 'alpha')"
        )
        con.execute(
            "INSERT INTO messages (id, conversation_id, turn, attempt, role, content, model, "
            "finished) VALUES ('u0', 'c', 0, 0, 'user', 'Q', NULL, NULL), "
            "('a0', 'c', 0, 0, 'assistant', 'A', 'alpha', true), "
            "('u1', 'c', 1, 0, 'user', 'awesome', NULL, NULL)"
        )
    with Store(path) as upgraded:
        assert upgraded.schema_version == LATEST_VERSION
        label_pending(upgraded)
        assert stored(upgraded) == [("a0", "sat", "praise", "awesome", 0, 7)]


def test_the_cli_labels_once_and_then_finds_nothing_new(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ARENA_HUB_REPO", "ARENA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    with Store.open(data) as store:
        direct_chat(store, [("Q", "A"), ("you're wrong", "B"), ("got it, thanks", None)])
    flags = ["--models", str(REPO / "models.yaml"), "--data-dir", str(data)]

    assert main(["signals", *flags]) == 0
    assert main(["signals", *flags]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("signals: 2 user turns labelled by rules-")
    assert "1 sat, 1 dsat, 0 without a signal" in out[0]
    assert out[1].startswith("signals: nothing new to label")
    with Store.open(data) as store:
        assert [row[1] for row in stored(store)] == ["dsat", "sat"]
