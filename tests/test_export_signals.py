"""Signals in the feedback dataset: the ``signals`` config and signal pairs in ``preference``.

Battles are played straight into a store, labelled, pushed to a local folder and read back.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import datasets
import pytest

from arena.export import Exporter, LocalFolder, compact, restore_store
from arena.export.signals import scrubbed_span, signal_pair_rows
from arena.export.terms import TERMS_VERSION
from arena.leaderboards import LeaderboardService
from arena.replies import Reply
from arena.signal_labels import label_pending
from arena.store import Store
from arena.votes import Winner
from scheduler import Jobs
from tests.test_export import published_text, rows
from tests.test_export_restore import REGISTRY

USER_TURNS = (
    "Capital of Australia? Write to me at bob@example.com",
    "That's wrong.",
    "thanks!",
)
REPLIES_A = ("Sydney.", "Canberra.", "You're welcome.")
REPLIES_B = ("Canberra.", "Canberra, since 1913.", "Glad to help.")


@pytest.fixture
def exporter(store: Store, tmp_path: Path) -> Exporter:
    return Exporter(store, LocalFolder(tmp_path / "dataset"), license_id="cc-by-4.0")


def battle(
    store: Store,
    battle_id: str,
    *,
    session_id: str = "s1",
    share: bool = True,
    user_turns: Sequence[str] = USER_TURNS,
    replies: tuple[Sequence[str], Sequence[str]] = (REPLIES_A, REPLIES_B),
    winner: Winner = Winner.MODEL_B,
) -> None:
    """A voted battle of alpha (A) and beta (B): the same user turns, one reply per turn each."""
    store.record_session(session_id, ip_hash=None, username=None)
    store.record_consent(session_id, share=share, terms_version=TERMS_VERSION)
    sides = store.start_battle(
        battle_id=battle_id, session_id=session_id, model_a="alpha", model_b="beta"
    )
    for conversation, model, texts in zip(sides, ("alpha", "beta"), replies, strict=True):
        for turn, user in enumerate(user_turns):
            store.add_user_message(conversation, turn=turn, content=user)
            reply = Reply(model=model, text=texts[turn], tokens=2, total_s=0.1, finished=True)
            store.add_reply(conversation, turn=turn, attempt=0, reply=reply, parameters={})
    store.record_vote(
        battle_id=battle_id, session_id=session_id, winner=winner, username=None, ip_hash=None
    )


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


SCRUBBED_PROMPT = [user("Capital of Australia? Write to me at <EMAIL>")]


def test_a_shared_complaint_then_thanks_becomes_a_signal_pair_beside_the_vote(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    battle(store, "b1")
    label_pending(store)

    result = exporter.push()

    folder = tmp_path / "dataset"
    assert result.rows["preference"] == 2 and result.rows["signals"] == 4
    preference = sorted(rows(folder, "preference"), key=lambda r: (r["source"], r["chosen_model"]))
    found = [
        (r["source"], r["chosen_model"], r["rejected_model"], list(r["prompt"]),
         list(r["chosen"]), list(r["rejected"]))
        for r in preference
    ]  # fmt: skip
    assert found == [
        # Within the losing side: the reply the user complained about against the one they
        # thanked. The complaint followed both sides' replies; the vote says it was about A's,
        # so B's side, which won, gives no pair.
        ("signals", "alpha", "alpha", SCRUBBED_PROMPT, [assistant("Canberra.")],
         [assistant("Sydney.")]),
        # The vote: first turn, winner against loser.
        ("vote", "beta", "alpha", SCRUBBED_PROMPT, [assistant("Canberra.")],
         [assistant("Sydney.")]),
    ]  # fmt: skip
    assert {r["question_id"] for r in preference} == {"b1"}


def test_published_evidence_is_a_span_of_the_published_user_turn(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    battle(
        store,
        "b1",
        user_turns=("Hi", "mail bob@example.com, and that's wrong", "thanks bob@example.com"),
        replies=(("Hello.", "Sorry.", "Welcome."), ("Hey.", "Oops.", "Sure.")),
    )
    label_pending(store)
    exporter.push()

    folder = tmp_path / "dataset"
    signals = rows(folder, "signals")
    published_turns = {
        (c["conversation_id"], m["turn"]): m["content"]
        for c in rows(folder, "conversations")
        for m in c["messages"]
        if m["role"] == "user"
    }
    assert sorted((s["side"], s["turn"], s["polarity"], s["evidence"]) for s in signals) == [
        ("a", 0, "dsat", "that's wrong"),
        ("a", 1, "sat", "thanks"),
        ("b", 0, "dsat", "that's wrong"),
        ("b", 1, "sat", "thanks"),
    ]
    for s in signals:
        turn = published_turns[(s["conversation_id"], s["turn"] + 1)]
        assert turn[s["evidence_start"] : s["evidence_end"]] == s["evidence"]
        assert (s["question_id"], s["mode"], s["source"]) == ("b1", "battle", "rules")
        assert s["labeller"].startswith("rules-") and s["category"]
    assert "bob@example.com" not in published_text(folder)


def test_an_unshared_battle_publishes_no_signal_and_no_signal_pair(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    battle(store, "private", share=False)
    label_pending(store)

    result = exporter.push()

    folder = tmp_path / "dataset"
    assert result.rows["battles"] == 1
    assert result.rows["signals"] == result.rows["preference"] == 0
    text = published_text(folder)
    for words in ("That's wrong", "Sydney", "Canberra", "thanks!", "Glad to help"):
        assert words not in text


def test_the_push_job_labels_first_so_the_batch_carries_its_signals(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    battle(store, "b1")
    jobs = Jobs(store, LeaderboardService(store, REGISTRY), exporter, "cc-by-4.0")

    summary = jobs.run("push")

    assert summary.startswith("push: batch 1 published") and "signals 4" in summary
    assert summary.endswith("(labelled 4 new user turns first)")
    assert {r["source"] for r in rows(tmp_path / "dataset", "preference")} == {"vote", "signals"}
    assert jobs.run("signals").startswith("signals: nothing new to label")


def test_datasets_loads_both_kinds_of_preference_rows_and_the_signals(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    battle(store, "b1")
    label_pending(store)
    exporter.push()

    folder = str(tmp_path / "dataset")
    cache = str(tmp_path / "cache")
    preference = datasets.load_dataset(folder, "preference", split="train", cache_dir=cache)
    signals = datasets.load_dataset(folder, "signals", split="train", cache_dir=cache)
    assert sorted(preference["source"]) == ["signals", "vote"]
    assert sorted(signals["polarity"]) == ["dsat", "dsat", "sat", "sat"]
    assert "config_name: signals" in (tmp_path / "dataset" / "README.md").read_text()


def test_a_dataset_from_before_signals_compacts_and_restores_then_is_labelled_again(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    battle(store, "b1")
    exporter.push()  # not labelled: as an arena without signals would have published
    folder = tmp_path / "dataset"
    shutil.rmtree(folder / "data" / "signals")
    battle(store, "b2", session_id="s2")
    label_pending(store)
    exporter.push()

    assert compact(store, exporter.target, license_id="cc-by-4.0").skipped is None
    preference = rows(folder, "preference")
    assert sorted((r["question_id"], r["source"]) for r in preference) == [
        ("b1", "vote"),
        ("b2", "signals"),
        ("b2", "vote"),
    ]

    shutil.rmtree(folder / "data" / "signals")  # the compacted dataset, minus the new config
    with Store.open(tmp_path / "restored") as restored:
        assert restore_store(restored, exporter.target).votes == 2
        relabelled = label_pending(restored)
    assert (relabelled.turns, relabelled.sat, relabelled.dsat) == (8, 4, 4)


# --- the pure parts


def test_scrubbed_span_follows_placeholders_and_refuses_changed_spans() -> None:
    raw = "mail bob@example.com, that's wrong"
    scrubbed = "mail <EMAIL>, that's wrong"
    start = raw.index("that's")
    assert scrubbed_span(raw, scrubbed, start, len(raw)) == ("that's wrong", 14, 26)
    assert scrubbed_span("thanks", "thanks", 0, 6) == ("thanks", 0, 6)
    # A span with a placeholder inside is published as the published turn shows it.
    assert scrubbed_span("bob@x.org is wrong", "<EMAIL> is wrong", 0, 18) == (
        "<EMAIL> is wrong",
        0,
        16,
    )
    # A span that is not where the published turn has it (scrubbed differently in context) is
    # dropped rather than guessed.
    assert scrubbed_span("that's wrong", "something else", 0, 12) is None
    assert scrubbed_span("thanks", "thanks", None, None) is None
    assert scrubbed_span("thanks", "thanks", 3, 99) is None


def turn_rows(
    *turns: tuple[str, str, bool, str | None],
    conversation: str = "c1",
    side: str | None = None,
    winner: str | None = None,
) -> list[dict[str, object]]:
    """Messages as `signal_pair_rows` reads them: (user text, reply text, reply ok, reading of
    the *next* user turn) per turn; each reading refers to the reply before its turn."""

    def message(id_: str, role: str, content: str, ok: bool, reacts_to, polarity, t: float):
        return {
            "conversation_id": conversation, "question_id": "q", "model": "m", "language": "en",
            "side": side, "winner": winner, "tstamp": t, "id": id_, "role": role,
            "content": content, "ok": ok, "reacts_to": reacts_to, "polarity": polarity,
        }  # fmt: skip

    messages: list[dict[str, object]] = []
    reacts_to = reading = None
    for index, (text, answer, ok, next_reading) in enumerate(turns):
        messages.append(message(f"u{index}", "user", text, False, reacts_to, reading, index))
        messages.append(message(f"r{index}", "assistant", answer, ok, None, None, index))
        reacts_to, reading = f"r{index}", next_reading
    if reading is not None:  # the user turn that gave the last reply its reading
        messages.append(message("u-last", "user", "...", False, reacts_to, reading, len(turns)))
    return messages


def pairs(messages: list[dict[str, object]]) -> list[tuple[str, str, str]]:
    return [
        (r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"])
        for r in signal_pair_rows(messages)
    ]


def test_signal_pairs_from_stored_readings() -> None:
    messages = turn_rows(
        ("Q", "A", True, "dsat"), ("redo", "B", True, "sat"), ("thanks", "C", True, None)
    )
    assert pairs(messages) == [("Q", "B", "A")]
    (row,) = signal_pair_rows(messages)
    assert (row["question_id"], row["chosen_model"], row["language"], row["tstamp"]) == (
        "q",
        "m",
        "en",
        1.0,
    )


def test_signal_pairs_never_cross_conversations() -> None:
    first = turn_rows(("Q", "A", True, "dsat"), ("redo", None, True, None), conversation="c1")
    second = turn_rows(("Q2", "B", True, "sat"), ("ok", "C", True, None), conversation="c2")
    assert pairs(first[:-1] + second) == []


def test_a_reading_of_another_reply_is_ignored() -> None:
    messages = turn_rows(
        ("Q", "A", True, "dsat"), ("redo", "B", True, "sat"), ("ty", "C", True, None)
    )
    messages[2]["reacts_to"] = "an older attempt"
    assert pairs(messages) == []


def test_failed_replies_are_never_chosen_or_rejected() -> None:
    # A SAT reading of a failed reply closes the request without a pair ...
    assert pairs(turn_rows(("Q", "A", True, "dsat"), ("redo", "B", False, "sat"))) == []
    # ... and a complaint about one keeps the request open without rejecting it.
    messages = turn_rows(
        ("Q", "A", False, "dsat"), ("again", "B", True, "dsat"), ("redo", "C", True, "sat")
    )
    assert pairs(messages) == [("Q", "C", "B")]


def test_complaints_count_on_the_side_that_lost_the_vote_only() -> None:
    turns = (("Q", "A", True, "dsat"), ("redo", "B", True, "sat"))
    assert pairs(turn_rows(*turns, side="a", winner="model_b")) == [("Q", "B", "A")]
    assert pairs(turn_rows(*turns, side="b", winner="model_b")) == []
    for undecided in ("tie", "tie (bothbad)", None):
        assert pairs(turn_rows(*turns, side="b", winner=undecided)) == [("Q", "B", "A")]


def test_a_tied_battle_gives_a_pair_on_each_side(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    battle(store, "b1", winner=Winner.TIE)
    label_pending(store)
    exporter.push()

    found = sorted(
        (r["chosen_model"], r["chosen"][0]["content"], r["rejected"][0]["content"])
        for r in rows(tmp_path / "dataset", "preference")
    )
    assert found == [
        ("alpha", "Canberra.", "Sydney."),
        ("beta", "Canberra, since 1913.", "Canberra."),
    ]


def test_identical_replies_make_no_pair() -> None:
    assert pairs(turn_rows(("Q", "A", True, "dsat"), ("redo", "A", True, "sat"))) == []


def test_a_failing_labelling_pass_does_not_hold_back_the_votes(
    store: Store, exporter: Exporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scheduler.jobs

    def broken(store: Store) -> None:
        raise RuntimeError("rules exploded")

    monkeypatch.setattr(scheduler.jobs, "label_pending", broken)
    battle(store, "b1")
    jobs = Jobs(store, LeaderboardService(store, REGISTRY), exporter, "cc-by-4.0")

    summary = jobs.run("push")

    assert summary.startswith("push: batch 1 published: battles 1")
    assert summary.endswith("(signals could not be labelled first; see the log)")
    assert jobs.errors == {"signals": "rules exploded"}
    assert [r["source"] for r in rows(tmp_path / "dataset", "preference")] == ["vote"]
