"""The export job: what reaches the dataset, and what never does.

Battles are played straight into a store (no UI), pushed to a local folder, and read back with
DuckDB and with the ``datasets`` library, the way a model trainer would load them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import datasets
import duckdb
import pytest

from arena.export import CONFIGS, Exporter, LocalFolder, shard_path
from arena.export.lists import ORDER
from arena.export.terms import TERMS_VERSION
from arena.replies import Reply
from arena.store import LeaderboardSnapshot, Store
from arena.votes import Winner

CORPUS = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "pii_corpus.jsonl").read_text().splitlines()
    if line.strip()
]


@pytest.fixture
def exporter(store: Store, tmp_path: Path) -> Exporter:
    return Exporter(store, LocalFolder(tmp_path / "dataset"), license_id="cc-by-4.0")


def play(
    store: Store,
    battle_id: str,
    *,
    session_id: str = "s1",
    share: bool | None = True,
    winner: Winner = Winner.MODEL_A,
    prompt: str = "What is the capital of France?",
    replies: tuple[str, str] = ("Paris.", "Lyon."),
    username: str | None = None,
) -> None:
    """One voted one-turn battle of alpha (A) against beta (B); ``share`` None: no choice."""
    store.record_session(session_id, ip_hash=f"iphash-{session_id}", username=username)
    if share is not None:
        store.record_consent(session_id, share=share, terms_version=TERMS_VERSION)
    sides = store.start_battle(
        battle_id=battle_id, session_id=session_id, model_a="alpha", model_b="beta"
    )
    for conversation, model, text in zip(sides, ("alpha", "beta"), replies, strict=True):
        store.add_user_message(conversation, turn=0, content=prompt)
        reply = Reply(model=model, text=text, tokens=2, ttft_s=0.1, total_s=0.2, finished=True)
        store.add_reply(conversation, turn=0, attempt=0, reply=reply, parameters={})
    store.record_vote(
        battle_id=battle_id,
        session_id=session_id,
        winner=winner,
        username=username,
        ip_hash=f"iphash-{session_id}",
    )


def rows(folder: Path, config: str) -> list[dict]:
    """Every row of one config, across its shards."""
    with duckdb.connect() as con:
        frame = con.execute(f"SELECT * FROM read_parquet('{folder}/data/{config}/*.parquet')").df()
    return frame.to_dict("records")


def published_text(folder: Path) -> str:
    """Everything a reader of the folder can see, as one string: every value and the card."""
    parts = [(folder / "README.md").read_text()]
    with duckdb.connect() as con:
        for config in CONFIGS:
            parts += [
                row[0]
                for row in con.execute(
                    f"SELECT to_json(t)::VARCHAR FROM read_parquet("
                    f"'{folder}/data/{config}/*.parquet') t"
                ).fetchall()
            ]
    return "\n".join(parts)


def test_a_push_writes_every_config_and_a_card_that_datasets_loads(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    play(store, "b1", winner=Winner.MODEL_A)
    play(store, "b2", session_id="s2", winner=Winner.BOTH_BAD)
    play(store, "regretted", session_id="s3")
    assert store.delete_contributions(session_id="s3", username=None) == 1
    store.save_leaderboard(
        LeaderboardSnapshot(
            computed_at=store.vote_for("b1")["created_at"],  # type: ignore[index]
            category=None,
            style_control=False,
            battles_used=2,
            records=[{"model": "alpha", "rating": 1010.0}],
        )
    )

    result = exporter.push()

    folder = tmp_path / "dataset"
    assert result.batch == 1
    assert result.rows == {
        "battles": 2,
        "conversations": 4,
        "preference": 1,
        "unpaired": 4,
        "leaderboard": 1,
        "deletions": 1,
        "signals": 0,  # one-turn battles: no user turn reacts to a reply
        "feedback": 0,  # direct chats only (tests/test_export_direct.py)
    }
    card = (folder / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "config_name: preference" in card
    loaded = {
        config: datasets.load_dataset(
            str(folder), config, split="train", cache_dir=str(tmp_path / "cache")
        )
        for config in CONFIGS
        if result.rows[config]  # the card lists only configs with rows
    }
    assert {config: len(data) for config, data in loaded.items()} == {
        config: rows for config, rows in result.rows.items() if rows
    }
    preference = loaded["preference"][0]
    assert preference["prompt"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert preference["chosen"] == [{"role": "assistant", "content": "Paris."}]
    assert preference["rejected"] == [{"role": "assistant", "content": "Lyon."}]
    # Both bad: both replies are undesirable; a clear win labels the winner good, the loser bad.
    labels = sorted((r["question_id"], r["model"], r["label"]) for r in loaded["unpaired"])
    assert labels == [
        ("b1", "alpha", True),
        ("b1", "beta", False),
        ("b2", "alpha", False),
        ("b2", "beta", False),
    ]
    assert loaded["deletions"]["question_id"] == ["regretted"]
    battle = loaded["battles"][0]
    assert set(battle) >= {
        "question_id", "model_a", "model_b", "winner", "judge", "conversation_a",
        "conversation_b", "turn", "anony", "language", "tstamp", "category_tags",
    }  # fmt: skip
    assert battle["conversation_a"][1] == {"role": "assistant", "content": "Paris."}


def test_the_battle_configs_are_written_in_their_documented_order(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    # Battles started one after the other, played in reverse: the order of the files follows
    # the times and ids, not the order the store wrote the replies or votes in.
    store.record_session("s1", ip_hash=None, username=None)
    store.record_consent("s1", share=True, terms_version=TERMS_VERSION)
    started = {
        battle_id: store.start_battle(
            battle_id=battle_id, session_id="s1", model_a="alpha", model_b="beta"
        )
        for battle_id in ("b1", "b2", "b3", "b4")
    }
    for battle_id, sides in reversed(started.items()):
        for conversation, model in zip(sides, ("alpha", "beta"), strict=True):
            store.add_user_message(conversation, turn=0, content=f"{battle_id}?")
            reply = Reply(model=model, text=f"{model} on {battle_id}", finished=True)
            store.add_reply(conversation, turn=0, attempt=0, reply=reply, parameters={})
        store.record_vote(
            battle_id=battle_id,
            session_id="s1",
            winner=Winner.MODEL_B,
            username=None,
            ip_hash=None,
        )

    exporter.push()

    for config, keys in ORDER.items():
        found = [tuple(row[key] for key in keys) for row in rows(tmp_path / "dataset", config)]
        assert len(found) >= 4 and found == sorted(found), config


def test_each_push_publishes_only_the_new_rows_in_a_new_shard(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    folder = tmp_path / "dataset"
    play(store, "b1")
    assert exporter.push().batch == 1
    assert exporter.push().batch is None  # nothing new: no batch, no files

    play(store, "b2", session_id="s2")
    second = exporter.push()

    assert second.batch == 2 and second.rows["battles"] == 1
    assert [r["question_id"] for r in rows(folder, "battles")] == ["b1", "b2"]
    assert (folder / shard_path("battles", 2)).exists()
    assert "| `battles` | 2 |" in (folder / "README.md").read_text()  # the card counts all


class CommitHeld:
    """Wraps a store's connection (private: no public hook lies between a vote's INSERT and its
    COMMIT) so that the cursors of one thread wait at COMMIT until `release` is set."""

    def __init__(self, store: Store, thread_name: str) -> None:
        self._con, self._thread = store._con, thread_name
        self.waiting, self.release = threading.Event(), threading.Event()
        store._con = self  # type: ignore[assignment]

    def cursor(self) -> object:
        cursor = self._con.cursor()
        return (
            self._Held(cursor, self) if threading.current_thread().name == self._thread else cursor
        )

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)

    class _Held:
        def __init__(self, cursor: duckdb.DuckDBPyConnection, held: CommitHeld) -> None:
            self._cursor, self._held = cursor, held

        def commit(self) -> None:
            self._held.waiting.set()
            self._held.release.wait()
            self._cursor.commit()

        def __getattr__(self, name: str) -> object:
            return getattr(self._cursor, name)

        def __enter__(self) -> CommitHeld._Held:
            return self

        def __exit__(self, *exc: object) -> None:
            self._cursor.close()


def test_a_vote_committed_after_a_later_one_is_still_published(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    # Gradio's worker threads commit votes in any order while the scheduler pushes. A plan takes
    # the votes numbered above its watermark: right only if no vote it cannot see is numbered
    # below one it can. record_vote holds a lock from the INSERT that numbers a vote to its
    # COMMIT, and a plan takes its snapshot under it (Store.vote_snapshot), so the later vote
    # and the push below wait for the slow vote's COMMIT instead of overtaking it.
    for battle_id, session_id in (("slow", "s1"), ("fast", "s2")):
        store.record_session(session_id, ip_hash=None, username=None)
        store.start_battle(
            battle_id=battle_id, session_id=session_id, model_a="alpha", model_b="beta"
        )
    held = CommitHeld(store, thread_name="slow voter")

    def vote(battle_id: str, session_id: str) -> None:
        store.record_vote(
            battle_id=battle_id,
            session_id=session_id,
            winner=Winner.TIE,
            username=None,
            ip_hash=None,
        )

    slow = threading.Thread(target=vote, args=("slow", "s1"), name="slow voter")
    slow.start()
    assert held.waiting.wait(10), "the slow vote reached its COMMIT"
    fast = threading.Thread(target=vote, args=("fast", "s2"))
    fast.start()
    fast.join(timeout=0.5)  # without the lock it commits here, numbered above the slow one
    pusher = threading.Thread(target=exporter.push)
    pusher.start()
    pusher.join(timeout=0.5)  # without the lock this plan sees only the fast vote
    held.release.set()
    for thread in (slow, fast, pusher):
        thread.join()
    exporter.push()

    published = [r["question_id"] for r in rows(tmp_path / "dataset", "battles")]
    assert sorted(published) == ["fast", "slow"]


def test_a_target_without_a_watermark_takes_every_vote_it_lacks_once(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    # Votes and batches from before migration 12 are numbered 0 and have no watermark: the next
    # plan matches every vote against what the target took, then sets a watermark.
    play(store, "b1")
    assert exporter.push().batch == 1
    play(store, "b2", session_id="s2")
    with store.cursor() as cursor:
        cursor.execute("UPDATE votes SET seq = 0; UPDATE export_batches SET votes_through = NULL")

    assert exporter.push().rows["battles"] == 1
    play(store, "b3", session_id="s3")
    assert exporter.push().rows["battles"] == 1
    assert exporter.push().batch is None

    published = [r["question_id"] for r in rows(tmp_path / "dataset", "battles")]
    assert published == ["b1", "b2", "b3"]
    with store.cursor() as cursor:
        marks = cursor.execute(
            "SELECT batch, votes_through FROM export_batches ORDER BY batch"
        ).fetchall()
        [(b3,)] = cursor.execute("SELECT seq FROM votes WHERE battle_id = 'b3'").fetchall()
    assert marks == [(1, None), (2, 0), (3, b3)] and b3 > 0


def test_a_battle_voted_long_after_it_started_is_published_whole(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    # A batch reads battles and conversations from its votes' lowest battle number on, not from
    # its votes' own numbers: a battle started before every other one may be voted on last.
    store.record_session("early", ip_hash=None, username=None)
    store.record_consent("early", share=True, terms_version=TERMS_VERSION)
    early = store.start_battle(
        battle_id="early", session_id="early", model_a="alpha", model_b="beta"
    )
    for conversation, model in zip(early, ("alpha", "beta"), strict=True):
        store.add_user_message(conversation, turn=0, content="An early question")
        reply = Reply(model=model, text=f"{model} answers", tokens=2, finished=True)
        store.add_reply(conversation, turn=0, attempt=0, reply=reply, parameters={})
    play(store, "b1")
    assert exporter.push().batch == 1
    store.record_vote(
        battle_id="early", session_id="early", winner=Winner.MODEL_B, username=None, ip_hash=None
    )

    second = exporter.push()

    assert second.rows["battles"] == 1 and second.rows["conversations"] == 2
    text = published_text(tmp_path / "dataset")
    assert "An early question" in text and "alpha answers" in text and "beta answers" in text


def test_text_is_published_only_for_sessions_that_chose_to_share(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    play(store, "shared", session_id="s1", share=True, prompt="shared prompt")
    play(store, "refused", session_id="s2", share=False, prompt="private prompt one")
    play(store, "silent", session_id="s3", share=None, prompt="private prompt two")

    exporter.push()

    folder = tmp_path / "dataset"
    text = published_text(folder)
    assert "shared prompt" in text
    assert "private prompt" not in text
    # Their votes still count, without text.
    battles = {r["question_id"]: r for r in rows(folder, "battles")}
    assert set(battles) == {"shared", "refused", "silent"}
    assert list(battles["refused"]["conversation_a"]) == []
    assert not battles["silent"]["text_shared"] and battles["shared"]["text_shared"]
    assert {r["question_id"] for r in rows(folder, "conversations")} == {"shared"}
    assert {r["question_id"] for r in rows(folder, "preference")} == {"shared"}


def test_the_card_lists_only_configs_with_rows_so_each_one_loads(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    play(store, "b1", share=False)  # a vote without text: no preference rows, no snapshot
    exporter.push()
    play(store, "b2", session_id="s2")
    exporter.push()  # preference rows now, in the second shard only

    folder = tmp_path / "dataset"
    card = (folder / "README.md").read_text()
    listed = [c for c in CONFIGS if f"config_name: {c}" in card]
    assert listed == ["battles", "conversations", "preference", "unpaired"]
    for config in listed:
        loaded = datasets.load_dataset(
            str(folder), config, split="train", cache_dir=str(tmp_path / "cache")
        )
        assert len(loaded) > 0


def test_a_later_choice_replaces_the_earlier_one(store: Store) -> None:
    store.record_session("s1", ip_hash=None, username=None)
    assert store.consent_of("s1") is None
    store.record_consent("s1", share=True, terms_version=TERMS_VERSION)
    store.record_consent("s1", share=False, terms_version=TERMS_VERSION)
    consent = store.consent_of("s1")
    assert consent is not None
    assert consent["share"] is False and consent["terms_version"] == TERMS_VERSION


def test_planted_secrets_never_reach_the_dataset(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    for index, case in enumerate(CORPUS):
        # Users paste secrets, and models echo them: both turns must be scrubbed.
        play(
            store,
            f"b{index}",
            session_id=f"s{index}",
            prompt=case["text"],
            replies=(f"You said: {case['text']}", "I cannot help."),
        )

    exporter.push()

    text = published_text(tmp_path / "dataset")
    leaked = [s for case in CORPUS for s in case["secrets"] if s in text]
    assert leaked == []
    assert "<EMAIL>" in text and "<CREDIT_CARD>" in text and "<API_KEY>" in text


def test_voters_appear_only_as_a_salted_pseudonym(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    play(store, "b1", session_id="session-one", username="alice-the-voter")
    play(store, "b2", session_id="session-one", username="alice-the-voter")
    play(store, "b3", session_id="session-two")

    exporter.push()

    text = published_text(tmp_path / "dataset")
    for private in ("session-one", "session-two", "alice-the-voter", "iphash-", store.ip_salt):
        assert private not in text
    judges = {r["question_id"]: r["judge"] for r in rows(tmp_path / "dataset", "battles")}
    assert judges["b1"] == judges["b2"] != judges["b3"]
    assert judges["b1"].startswith("arena_")


def _messages(store: Store, sql: str) -> None:
    with store.cursor() as cursor:
        cursor.execute(sql).fetchall()


def test_the_export_publishes_the_copy_scrubbed_when_the_message_was_stored(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    play(store, "b1", prompt="write to jane.doe@example.com", replies=("Done.", "Sent."))
    # Mark the stored copy: if the export scrubbed the text again, the mark would not show.
    _messages(
        store,
        "UPDATE messages SET content_scrubbed = 'stored copy: <EMAIL>' "
        "WHERE content_scrubbed IS NOT NULL",
    )

    exporter.push()

    text = published_text(tmp_path / "dataset")
    assert "stored copy: <EMAIL>" in text and "Done." in text
    assert "jane.doe@example.com" not in text


@pytest.mark.parametrize(
    "written_by",
    [
        # Rows written before migration 8, or restored: no copy at all.
        "content_scrubbed = NULL, scrubbed_by = NULL",
        # A copy by an earlier scrubber that missed the secret: it must not be trusted.
        "content_scrubbed = content, scrubbed_by = 'an-older-scrubber'",
    ],
)
def test_messages_without_a_current_scrubbed_copy_are_scrubbed_at_export(
    store: Store, exporter: Exporter, tmp_path: Path, written_by: str
) -> None:
    for index, case in enumerate(CORPUS):
        play(
            store,
            f"b{index}",
            session_id=f"s{index}",
            prompt=case["text"],
            replies=(f"You said: {case['text']}", "I cannot help."),
        )
    _messages(store, f"UPDATE messages SET {written_by}")

    exporter.push()

    text = published_text(tmp_path / "dataset")
    leaked = [s for case in CORPUS for s in case["secrets"] if s in text]
    assert leaked == []
    assert "<EMAIL>" in text and "You said: " in text


def two_turns(store: Store, battle_id: str, *, last_reply_finished: bool) -> None:
    """A shared two-turn battle won by A, whose first A reply was regenerated twice."""
    store.record_session("s1", ip_hash=None, username=None)
    store.record_consent("s1", share=True, terms_version=TERMS_VERSION)
    side_a, side_b = store.start_battle(
        battle_id=battle_id, session_id="s1", model_a="alpha", model_b="beta"
    )
    for conversation, model in ((side_a, "alpha"), (side_b, "beta")):
        for turn in (0, 1):
            store.add_user_message(conversation, turn=turn, content=f"question {turn}")
            attempts = 3 if (model, turn) == ("alpha", 0) else 1
            for attempt in range(attempts):
                finished = last_reply_finished or (model, turn) != ("alpha", 1)
                text = f"{model} answer {turn}.{attempt}"
                reply = Reply(model=model, text=text, finished=finished)
                store.add_reply(
                    conversation, turn=turn, attempt=attempt, reply=reply, parameters={}
                )
    store.record_vote(
        battle_id=battle_id, session_id="s1", winner=Winner.MODEL_A, username=None, ip_hash=None
    )


def test_conversations_keep_every_attempt_in_order_and_battles_the_latest(
    store: Store, exporter: Exporter, tmp_path: Path
) -> None:
    two_turns(store, "ok", last_reply_finished=True)
    two_turns(store, "cut", last_reply_finished=False)

    exporter.push()

    folder = tmp_path / "dataset"
    conversations = {
        (r["question_id"], r["side"]): r["messages"] for r in rows(folder, "conversations")
    }
    assert [
        (m["turn"], m["attempt"], m["role"], m["content"], m["latest"])
        for m in conversations["ok", "a"]
    ] == [
        (0, 0, "user", "question 0", True),
        (0, 0, "assistant", "alpha answer 0.0", False),
        (0, 1, "assistant", "alpha answer 0.1", False),
        (0, 2, "assistant", "alpha answer 0.2", True),
        (1, 0, "user", "question 1", True),
        (1, 0, "assistant", "alpha answer 1.0", True),
    ]
    assert [m["latest"] for m in conversations["ok", "b"]] == [True] * 4
    battles = {r["question_id"]: r for r in rows(folder, "battles")}
    assert [m["content"] for m in battles["ok"]["conversation_a"]] == [
        "question 0", "alpha answer 0.2", "question 1", "alpha answer 1.0",
    ]  # fmt: skip
    assert battles["ok"]["turn"] == 2 and not battles["ok"]["has_error"]
    # The latest reply of a turn was cut short: the battle counts as failed, with no pair.
    assert battles["cut"]["has_error"]
    [preference] = rows(folder, "preference")
    assert preference["question_id"] == "ok"
    assert list(preference["chosen"]) == [{"role": "assistant", "content": "alpha answer 0.2"}]
