"""The jobs of the loop: run once from the command line, or on a schedule inside the app."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from arena.export import Exporter, LocalFolder, PublishError
from arena.leaderboards import LeaderboardService
from arena.settings import parse_settings
from arena.store import Store
from scheduler import ArenaScheduler, Jobs
from scheduler.__main__ import main
from tests.test_export import play
from tests.test_export_restore import REGISTRY

REPO = Path(__file__).resolve().parent.parent


def flags(data: Path, *more: str) -> list[str]:
    return ["--models", str(REPO / "models.yaml"), "--data-dir", str(data), *more]


def test_the_cli_runs_refresh_then_push_once_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ARENA_HUB_REPO", "ARENA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    with Store.open(data) as store:
        play(store, "b1")
        play(store, "b2", session_id="s2", winner="model_b")  # type: ignore[arg-type]

    assert main(["refresh", *flags(data)]) == 0
    assert main(["push", *flags(data)]) == 0
    assert main(["push", *flags(data)]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("refresh: 1 leaderboard(s) recomputed")
    assert out[1].startswith("push: batch 1 published: battles 2,") and "leaderboard 1" in out[1]
    assert out[2].startswith("push: nothing new")
    assert (data / "dataset" / "data" / "leaderboard" / "batch-00000001.parquet").exists()


def test_the_cli_says_what_to_do_when_a_push_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    (data / "dataset" / "data" / "battles").mkdir(parents=True)
    (data / "dataset" / "data" / "battles" / "batch-00000001.parquet").write_bytes(b"x")
    with Store.open(data) as store:
        play(store, "b1")

    assert main(["push", *flags(data)]) == 1
    assert "restore it first" in capsys.readouterr().err


def test_a_failed_job_is_logged_shown_in_the_status_and_cleared_by_the_next_success(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky(LocalFolder):
        failures = 1

        def publish(self, files, message):
            if self.failures:
                self.failures -= 1
                raise PublishError("the Hub is down")
            return super().publish(files, message)

    with Store.open(tmp_path / "data") as store:
        exporter = Exporter(store, Flaky(tmp_path / "dataset"), license_id="cc-by-4.0")
        service = LeaderboardService(store, REGISTRY, bootstrap_rounds=5)
        jobs = Jobs(store, service, exporter, "cc-by-4.0")
        assert "Nothing published" in jobs.status_line()
        play(store, "b1")

        with caplog.at_level(logging.ERROR, logger="scheduler"), pytest.raises(PublishError):
            jobs.run("push")
        assert "push failed" in caplog.text and "the Hub is down" in caplog.text
        assert "The last export failed (the Hub is down)" in jobs.status_line()

        assert jobs.run("push").startswith("push: batch 1 published")
        assert "last published" in jobs.status_line() and "failed" not in jobs.status_line()


def test_the_app_schedules_push_and_refresh_one_instance_at_a_time(tmp_path: Path) -> None:
    settings = parse_settings(
        flags(tmp_path / "data", "--push-interval-s", "900", "--refresh-interval-s", "300"),
        environ={"ARENA_SIGNALS_INTERVAL_S": "120"},
    )
    with Store.open(settings.data_dir) as store:
        exporter = Exporter(store, LocalFolder(tmp_path / "dataset"), license_id="cc-by-4.0")
        jobs = Jobs(store, LeaderboardService(store, REGISTRY), exporter, "cc-by-4.0")
        with ArenaScheduler(jobs, settings.export) as running:
            scheduled = {job.id: job for job in running.scheduled()}
            assert sorted(scheduled) == ["compact", "push", "refresh", "signals"]
            assert scheduled["push"].trigger.interval.total_seconds() == 900
            assert scheduled["refresh"].trigger.interval.total_seconds() == 300
            assert scheduled["signals"].trigger.interval.total_seconds() == 120
            assert all(job.max_instances == 1 and job.coalesce for job in scheduled.values())


def test_intervals_stay_well_under_the_hubs_commit_limit() -> None:
    defaults = parse_settings([], environ={}).export
    assert 3600 / defaults.push_interval_s <= 12
    with pytest.raises(SystemExit):
        parse_settings(["--push-interval-s", "10"], environ={})


def test_the_app_restores_an_empty_store_from_its_hub_repo_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub.utils._http import default_client_factory, set_client_factory

    from app import open_arena
    from arena.export import HubRepo, use_hub_timeout
    from tests.hub_server import LocalHub

    with LocalHub() as hub:
        monkeypatch.setenv("HF_TOKEN", hub.token)
        use_hub_timeout(5)
        with Store.open(tmp_path / "published") as store:
            play(store, "b1")
            target = HubRepo("arena-tester/feedback", endpoint=hub.endpoint)
            Exporter(store, target, license_id="cc-by-4.0").push()
        hub_flags = ["--hub-repo", "arena-tester/feedback", "--hub-endpoint", hub.endpoint]
        settings = parse_settings(flags(tmp_path / "wiped", *hub_flags), environ={})
        try:
            with open_arena(settings) as arena:
                assert arena.store.vote_count() == 1
                assert "to arena-tester/feedback" in arena.jobs.status_line()
        finally:
            set_client_factory(default_client_factory)
