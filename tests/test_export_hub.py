"""Pushing to a Hub dataset repo with the real huggingface_hub client, against `LocalHub`.

Whatever fails (a refused commit, a commit applied whose answer is lost or late, a crash between
the commit and the watermark), pushing again until it succeeds leaves every vote in the dataset
exactly once.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import pandas as pd
import pytest
from huggingface_hub.utils._http import default_client_factory, set_client_factory

from arena.export import Exporter, HubRepo, PublishError, use_hub_timeout
from arena.store import Store
from tests.hub_server import LocalHub
from tests.test_export import play

REPO = "arena-tester/feedback"


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    with LocalHub() as running:
        yield running


@pytest.fixture(autouse=True)
def hub_timeout() -> Iterator[None]:
    use_hub_timeout(0.5)
    yield
    set_client_factory(default_client_factory)  # the library's own, for the other tests


def exporter_for(store: Store, hub: LocalHub, **options: bool) -> Exporter:
    target = HubRepo(REPO, token=hub.token, endpoint=hub.endpoint, **options)
    return Exporter(store, target, license_id="cc-by-4.0")


def published_questions(hub: LocalHub) -> list[str]:
    """question_id of every battles row in the repo's head, across shards."""
    frames = [
        pd.read_parquet(io.BytesIO(content))
        for path, content in hub.files(REPO).items()
        if path.startswith("data/battles/")
    ]
    return sorted(question for frame in frames for question in frame["question_id"])


def test_the_first_push_creates_the_repo_and_commits_a_batch_with_its_card(
    store: Store, hub: LocalHub
) -> None:
    play(store, "b1")

    result = exporter_for(store, hub, private=True).push()

    assert result.commit_id == hub.head(REPO)
    files = hub.files(REPO)
    assert "README.md" in files and "data/battles/batch-00000001.parquet" in files
    assert b"config_name: unpaired" in files["README.md"]
    assert published_questions(hub) == ["b1"]
    assert len(hub.commits(REPO)) == 2  # the repo's initial commit, then the batch


def test_a_refused_commit_is_retried_with_the_same_rows(store: Store, hub: LocalHub) -> None:
    exporter = exporter_for(store, hub)
    play(store, "b1")
    exporter.push()
    play(store, "b2", session_id="s2")
    hub.fail_next_commit(500)

    with pytest.raises(PublishError, match="retried"):
        exporter.push()
    play(store, "b3", session_id="s3")  # arrives while batch 2 is pending
    retried = exporter.push()
    following = exporter.push()

    assert retried.batch == 2 and retried.rows["battles"] == 1
    assert following.batch == 3 and following.rows["battles"] == 1
    assert published_questions(hub) == ["b1", "b2", "b3"]


def test_a_client_error_is_not_taken_for_a_landed_commit(store: Store, hub: LocalHub) -> None:
    play(store, "b1")
    hub.fail_next_commit(403)

    with pytest.raises(PublishError, match="refused"):
        exporter_for(store, hub).push()

    assert exporter_for(store, hub).push().batch == 1
    assert published_questions(hub) == ["b1"]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda hub: hub.apply_then_fail_next_commit(500), id="applied-then-500"),
        pytest.param(lambda hub: hub.apply_then_timeout_next_commit(), id="applied-then-dropped"),
        pytest.param(
            lambda hub: hub.apply_then_timeout_next_commit(2.0, drop_connection=False),
            id="applied-then-timeout",
        ),
    ],
)
def test_a_commit_that_landed_without_an_answer_counts_as_published(
    store: Store, hub: LocalHub, fault
) -> None:
    exporter = exporter_for(store, hub)
    play(store, "b1")
    exporter.push()
    play(store, "b2", session_id="s2")
    fault(hub)

    result = exporter.push()  # the repo is read back: batch 2 is there
    play(store, "b3", session_id="s3")
    after = exporter.push()

    assert result.batch == 2 and result.commit_id == hub.commits(REPO)[2].oid
    assert after.batch == 3
    assert published_questions(hub) == ["b1", "b2", "b3"]


def test_a_crash_between_commit_and_watermark_republishes_the_same_files(
    store: Store, hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    play(store, "b1")
    crashing = exporter_for(store, hub)

    def die(batch: int, commit_id: str | None) -> None:
        raise SystemExit("killed after the commit")

    monkeypatch.setattr(crashing, "_mark_published", die)
    with pytest.raises(SystemExit):
        crashing.push()
    play(store, "b2", session_id="s2")

    restarted = exporter_for(store, hub)
    again = restarted.push()  # batch 1 again: same paths, so the same rows are replaced
    then = restarted.push()

    assert again.batch == 1 and then.batch == 2
    assert published_questions(hub) == ["b1", "b2"]
    assert sorted(p for p in hub.files(REPO) if p.startswith("data/battles/")) == [
        "data/battles/batch-00000001.parquet",
        "data/battles/batch-00000002.parquet",
    ]


def test_repeated_faults_leave_every_vote_exactly_once(store: Store, hub: LocalHub) -> None:
    exporter = exporter_for(store, hub)
    faults = [
        lambda: hub.fail_next_commit(502),
        lambda: hub.apply_then_fail_next_commit(500),
        lambda: hub.apply_then_timeout_next_commit(),
        lambda: None,
    ]
    for round_ in range(8):
        for index in range(3):
            play(store, f"b{round_}-{index}", session_id=f"s{round_}-{index}")
        faults[round_ % len(faults)]()
        with contextlib.suppress(PublishError):
            exporter.push()
    while exporter.push().batch is not None:
        pass

    expected = sorted(f"b{r}-{i}" for r in range(8) for i in range(3))
    assert published_questions(hub) == expected
