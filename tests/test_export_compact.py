"""Deleting contributions and compacting the dataset: deleted battles leave every shard.

A deletion removes the battle from the store at once, is listed in the ``deletions`` config by
the next push, and the next compaction rewrites the shards without it, in one commit.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from huggingface_hub.utils._http import default_client_factory, set_client_factory

from arena.export import (
    CONFIGS,
    Exporter,
    HubRepo,
    LocalFolder,
    compact,
    restore_store,
    use_hub_timeout,
)
from arena.store import Store
from tests.hub_server import LocalHub
from tests.test_export import play, published_text

REPO = "arena-tester/feedback"
SECRET_PROMPT = "my diary entry I regret sharing"


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    use_hub_timeout(5)
    with LocalHub() as running:
        yield running
    set_client_factory(default_client_factory)


def hub_exporter(store: Store, hub: LocalHub) -> Exporter:
    return Exporter(
        store, HubRepo(REPO, token=hub.token, endpoint=hub.endpoint), license_id="cc-by-4.0"
    )


def hub_text(hub: LocalHub) -> str:
    """Every value of every shard on the hub, and the card, as one string."""
    parts = []
    for path, content in hub.files(REPO).items():
        if path.endswith(".parquet"):
            parts.append(pd.read_parquet(io.BytesIO(content)).to_json(date_format="iso"))
        else:
            parts.append(content.decode(errors="replace"))
    return "\n".join(parts)


def questions(hub: LocalHub, config: str) -> list[str]:
    return sorted(
        q
        for path, content in hub.files(REPO).items()
        if path.startswith(f"data/{config}/")
        for q in pd.read_parquet(io.BytesIO(content))["question_id"]
    )


def test_deleting_removes_the_session_battles_at_once_and_lists_their_ids(store: Store) -> None:
    play(store, "mine", session_id="s1", prompt=SECRET_PROMPT)
    play(store, "theirs", session_id="s2")

    assert store.delete_contributions(session_id="s1", username=None) == 1

    with store.cursor() as cursor:
        assert cursor.execute("SELECT id FROM battles").fetchall() == [("theirs",)]
        assert cursor.execute("SELECT id FROM deletions").fetchall() == [("mine",)]
        [(left,)] = cursor.execute(
            "SELECT count(*) FROM messages WHERE content = ?", [SECRET_PROMPT]
        ).fetchall()
    assert left == 0 and store.vote_count() == 1


def test_a_logged_in_visitor_deletes_the_battles_of_all_their_sessions(store: Store) -> None:
    play(store, "laptop", session_id="s1", username="dana")
    play(store, "phone", session_id="s2", username="dana")
    play(store, "someone-else", session_id="s3", username="eve")

    assert store.delete_contributions(session_id="s-new", username="dana") == 2
    assert store.vote_count() == 1


def test_compaction_drops_deleted_battles_from_every_shard_in_one_commit(
    store: Store, hub: LocalHub
) -> None:
    exporter = hub_exporter(store, hub)
    play(store, "kept", session_id="s1")
    play(store, "regretted", session_id="s2", prompt=SECRET_PROMPT)
    exporter.push()
    play(store, "later", session_id="s3")
    store.delete_contributions(session_id="s2", username=None)
    exporter.push()  # lists the deletion; batch 1 still holds the battle
    assert SECRET_PROMPT in hub_text(hub)
    commits = len(hub.commits(REPO))

    result = compact(store, exporter.target, license_id="cc-by-4.0")

    assert len(hub.commits(REPO)) == commits + 1
    assert result.files_before == 2 * len(CONFIGS) and result.files_after == len(CONFIGS)
    assert SECRET_PROMPT not in hub_text(hub)
    assert questions(hub, "battles") == ["kept", "later"]
    assert questions(hub, "deletions") == ["regretted"]
    assert sorted(p for p in hub.files(REPO) if p.startswith("data/battles/")) == [
        "data/battles/batch-00000002-compacted.parquet"
    ]
    assert "| `battles` | 2 |" in hub.files(REPO)["README.md"].decode()
    again = compact(store, exporter.target, license_id="cc-by-4.0")
    assert again.skipped is not None and len(hub.commits(REPO)) == commits + 1

    # Pushing goes on after the compacted batches, and the card still counts right.
    play(store, "after", session_id="s4")
    assert exporter.push().batch == 3
    assert questions(hub, "battles") == ["after", "kept", "later"]
    assert "| `battles` | 3 |" in hub.files(REPO)["README.md"].decode()


def test_compaction_waits_for_a_pending_batch(store: Store, hub: LocalHub) -> None:
    exporter = hub_exporter(store, hub)
    play(store, "b1")
    exporter.push()
    play(store, "b2", session_id="s2")
    hub.fail_next_commit(503)
    with pytest.raises(Exception, match="retried"):
        exporter.push()

    result = compact(store, exporter.target, license_id="cc-by-4.0")

    assert result.skipped is not None and "push first" in result.skipped


def test_a_deleted_battle_is_not_restored_even_before_compaction(
    tmp_path: Path, hub: LocalHub
) -> None:
    data = tmp_path / "data"
    with Store.open(data) as store:
        play(store, "kept", session_id="s1")
        play(store, "regretted", session_id="s2", prompt=SECRET_PROMPT)
        hub_exporter(store, hub).push()
        store.delete_contributions(session_id="s2", username=None)
        hub_exporter(store, hub).push()
    shutil.rmtree(data)

    with Store.open(data) as store:
        restore_store(store, hub_exporter(store, hub).target)
        with store.cursor() as cursor:
            assert cursor.execute("SELECT id FROM battles").fetchall() == [("kept",)]
        assert hub_exporter(store, hub).push().batch is None  # the deletion is published too
        assert compact(store, hub_exporter(store, hub).target, license_id="cc-by-4.0").dropped


def test_a_local_folder_is_compacted_the_same_way(store: Store, tmp_path: Path) -> None:
    exporter = Exporter(store, LocalFolder(tmp_path / "dataset"), license_id="cc-by-4.0")
    play(store, "kept", session_id="s1")
    play(store, "regretted", session_id="s2", prompt=SECRET_PROMPT)
    exporter.push()
    store.delete_contributions(session_id="s2", username=None)
    exporter.push()

    compact(store, exporter.target, license_id="cc-by-4.0")

    folder = tmp_path / "dataset"
    assert SECRET_PROMPT not in published_text(folder)
    assert len(list((folder / "data").glob("*/*.parquet"))) == len(CONFIGS)
    with duckdb.connect() as con:
        [(rows,)] = con.execute(
            f"SELECT count(*) FROM read_parquet('{folder}/data/battles/*.parquet')"
        ).fetchall()
    assert rows == 1
