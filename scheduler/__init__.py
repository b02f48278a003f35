"""The feedback loop's jobs: export, leaderboard refresh, compaction, restore, signal labelling.

`ArenaScheduler` runs `Jobs` inside the app with APScheduler: each job at its own interval, one
instance at a time, missed ticks coalesced into one run; a failed run is logged and simply runs
again at the next tick. ``python -m scheduler push|refresh|restore|compact|signals`` runs one job
once.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from types import TracebackType
from typing import Self

from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler

from arena.settings import ExportSettings
from scheduler.jobs import JOBS, Jobs, build_target

__all__ = ["JOBS", "ArenaScheduler", "Jobs", "build_target"]

log = logging.getLogger("scheduler")


class ArenaScheduler:
    """Push, refresh, compact and signals on intervals, in a background thread; a context
    manager."""

    def __init__(self, jobs: Jobs, settings: ExportSettings) -> None:
        self.jobs = jobs
        self._scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        for name, seconds in (
            ("push", settings.push_interval_s),
            ("refresh", settings.refresh_interval_s),
            ("compact", settings.compact_interval_s),
            ("signals", settings.signals_interval_s),
        ):
            self._scheduler.add_job(self._tick, "interval", args=[name], seconds=seconds, id=name)

    def _tick(self, name: str) -> None:
        # Jobs.run has logged the failure; the next tick is the retry.
        with suppress(Exception):
            self.jobs.run(name)

    def scheduled(self) -> list[Job]:
        """The APScheduler jobs, with their triggers and limits."""
        return self._scheduler.get_jobs()

    def __enter__(self) -> Self:
        self._scheduler.start()
        log.info("scheduler started: %s", ", ".join(self._describe()))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Waits for a running job: a push cut short would only be redone, but cleanly is better.
        self._scheduler.shutdown(wait=True)

    def _describe(self) -> list[str]:
        return [f"{job.id} every {job.trigger.interval}" for job in self.scheduled()]
