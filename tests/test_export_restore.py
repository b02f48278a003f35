"""Restore: publish, wipe the data folder, restart on an empty store, and nothing is lost.

The dataset lives on `LocalHub`; the restored store must give the same leaderboard (recomputed
from the restored battles), the same leaderboard history, and push nothing twice afterwards.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from itertools import cycle
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from huggingface_hub.utils._http import default_client_factory, set_client_factory

from arena.config import Registry
from arena.export import (
    Exporter,
    HubRepo,
    LocalFolder,
    PublishError,
    RestoreError,
    restore_store,
    use_hub_timeout,
)
from arena.leaderboards import LeaderboardService, View
from arena.replies import Reply
from arena.store import Store
from arena.votes import Winner
from tests.hub_server import LocalHub
from tests.test_export import play

REPO = "arena-tester/feedback"
MODELS = ("alpha", "beta")
REGISTRY = Registry.model_validate(
    {
        "models": [
            {"name": n, "display_name": n.title(), "organization": "Lab", "endpoint": "http://x"}
            for n in MODELS
        ]
    }
)


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    use_hub_timeout(5)
    with LocalHub() as running:
        yield running
    set_client_factory(default_client_factory)


def exporter(store: Store, hub: LocalHub) -> Exporter:
    target = HubRepo(REPO, token=hub.token, endpoint=hub.endpoint)
    return Exporter(store, target, license_id="cc-by-4.0")


def fill(store: Store) -> None:
    """Battles of every kind: shared and not, all four outcomes, a failed reply, a retry."""
    winners = cycle([Winner.MODEL_A, Winner.MODEL_A, Winner.MODEL_B, Winner.TIE, Winner.BOTH_BAD])
    for index in range(40):
        play(
            store,
            f"b{index:02d}",
            session_id=f"s{index % 7}",
            share=None if index % 3 == 0 else True,
            winner=next(winners),
            prompt=f"Question number {index}",
        )
        store.tag_battle(f"b{index:02d}", tags={"code"} if index % 2 else set(), language="en")
    # A battle whose B side failed, and one whose reply was regenerated before the vote.
    store.record_session("s-extra", ip_hash=None, username="carol")
    for battle_id, regenerate in (("failed", False), ("retried", True)):
        side_a, side_b = store.start_battle(
            battle_id=battle_id, session_id="s-extra", model_a="alpha", model_b="beta"
        )
        for conversation, model in ((side_a, "alpha"), (side_b, "beta")):
            store.add_user_message(conversation, turn=0, content="Hello")
            finished = not (battle_id == "failed" and model == "beta")
            reply = Reply(model=model, text="Hi", finished=finished)
            store.add_reply(conversation, turn=0, attempt=0, reply=reply, parameters={})
            if regenerate:
                again = Reply(model=model, text="Hi again", finished=True)
                store.add_reply(conversation, turn=0, attempt=1, reply=again, parameters={})
        store.record_vote(
            battle_id=battle_id,
            session_id="s-extra",
            winner=Winner.MODEL_B,
            username="carol",
            ip_hash=None,
        )


def test_a_wiped_store_comes_back_from_the_dataset(tmp_path: Path, hub: LocalHub) -> None:
    data = tmp_path / "data"
    with Store.open(data) as store:
        fill(store)
        before = LeaderboardService(store, REGISTRY, bootstrap_rounds=20)
        board = before.leaderboard(View())
        assert board is not None
        history = before.history(View())
        exporter(store, hub).push()
        frame_before = store.battles_frame()

    shutil.rmtree(data)  # the Space restarts on an empty disk

    with Store.open(data) as store:
        result = restore_store(store, exporter(store, hub).target)
        after = LeaderboardService(store, REGISTRY, bootstrap_rounds=20)
        assert result.votes == 42 and result.batches == 1
        assert after.history(View()) == history
        restored = after.leaderboard(View())
        assert restored is not None
        assert restored.to_records() == board.to_records()
        frame_after = store.battles_frame()
        # Shared text is back word for word; withheld text stays withheld.
        shared = frame_before.set_index("question_id").loc["b01", "conversation_a"]
        assert frame_after.set_index("question_id").loc["b01", "conversation_a"] == shared
        assert set(frame_after.columns) == set(frame_before.columns)
        assert list(frame_after["winner"]) == list(frame_before["winner"])
        assert list(frame_after["has_error"]) == list(frame_before["has_error"])

        # The next push continues after the restored batch and duplicates nothing. Restored
        # votes are numbered 0, so the restored batch's watermark is 0: the next plan reads only
        # the votes written since.
        with store.cursor() as cursor:
            assert cursor.execute("SELECT votes_through FROM export_batches").fetchall() == [(0,)]
        play(store, "new", session_id="s-new")
        assert exporter(store, hub).push().batch == 2
    battles = [
        pd.read_parquet(io.BytesIO(content))
        for path, content in hub.files(REPO).items()
        if path.startswith("data/battles/")
    ]
    questions = [q for frame in battles for q in frame["question_id"]]
    assert len(questions) == len(set(questions)) == 43


def test_restore_leaves_a_store_with_votes_alone(tmp_path: Path, hub: LocalHub) -> None:
    with Store.open(tmp_path / "data") as store:
        play(store, "b1")
        result = restore_store(store, exporter(store, hub).target)
    assert result.skipped is not None and "already has votes" in result.skipped


def test_restore_of_a_repo_that_does_not_exist_is_a_no_op(tmp_path: Path, hub: LocalHub) -> None:
    with Store.open(tmp_path / "data") as store:
        result = restore_store(store, exporter(store, hub).target)
        assert result.skipped is not None and "nothing was published" in result.skipped
        assert store.vote_count() == 0


def test_a_new_store_never_overwrites_a_published_dataset(tmp_path: Path, hub: LocalHub) -> None:
    with Store.open(tmp_path / "first") as store:
        play(store, "b1")
        exporter(store, hub).push()
    with Store.open(tmp_path / "second") as store:
        play(store, "other")
        with pytest.raises(PublishError, match="restore it first"):
            exporter(store, hub).push()
    assert [path for path in hub.files(REPO) if path.startswith("data/battles/")] == [
        "data/battles/batch-00000001.parquet"
    ]


def test_rows_a_crashed_compaction_left_twice_come_back_once(tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    with Store.open(tmp_path / "data") as store:
        fill(store)
        Exporter(store, LocalFolder(folder), license_id="cc-by-4.0").push()
        frame_before = store.battles_frame()
    # A merged shard written next to the shards it merges, which were never removed.
    for config in ("battles", "conversations", "leaderboard"):
        shard = folder / "data" / config / "batch-00000001.parquet"
        shutil.copy(shard, shard.with_name("batch-00000001-compacted.parquet"))

    with Store.open(tmp_path / "restored") as store:
        result = restore_store(store, LocalFolder(folder))
        assert result.votes == 42
        with store.cursor() as cursor:
            [(messages, keys)] = cursor.execute(
                "SELECT count(*), count(DISTINCT (conversation_id, turn, role, attempt)) "
                "FROM messages"
            ).fetchall()
        assert messages == keys
        frame_after = store.battles_frame()
    assert list(frame_after["question_id"]) == list(frame_before["question_id"])


def test_a_dataset_that_contradicts_itself_is_refused_and_nothing_restored(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "dataset"
    with Store.open(tmp_path / "data") as store:
        fill(store)
        Exporter(store, LocalFolder(folder), license_id="cc-by-4.0").push()
    # A second conversation under another id for side A of battle b01: two sides A for one vote.
    shard = folder / "data" / "conversations" / "batch-00000001.parquet"
    duckdb.sql(
        f"SELECT * FROM '{shard}' UNION ALL "
        f"SELECT * REPLACE (conversation_id || '-forged' AS conversation_id) FROM '{shard}' "
        "WHERE question_id = 'b01' AND side = 'a'"
    ).to_parquet(str(tmp_path / "forged.parquet"))
    shutil.move(tmp_path / "forged.parquet", shard)

    with Store.open(tmp_path / "restored") as store:
        with pytest.raises(RestoreError, match=r"holds rows twice: rows for battles repeat"):
            restore_store(store, LocalFolder(folder))
        assert store.vote_count() == 0
        with store.cursor() as cursor:
            assert cursor.execute("SELECT count(*) FROM messages").fetchall() == [(0,)]
