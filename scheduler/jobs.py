"""The feedback loop's jobs, each runnable once (CLI) or on a schedule (app.py).

Every job returns a one-line summary of what it did, which the caller logs; a failing job
raises, and the scheduler logs the error and runs it again at the next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from arena.export import (
    Exporter,
    HubRepo,
    LocalFolder,
    Target,
    compact,
    last_published,
    restore_store,
    use_hub_timeout,
)
from arena.leaderboards import LeaderboardService
from arena.settings import ExportSettings
from arena.signal_labels import label_pending
from arena.store import Store

log = logging.getLogger("scheduler")

JOBS = ("push", "refresh", "restore", "compact", "signals")
"""What ``python -m scheduler`` can run."""


def build_target(settings: ExportSettings, data_dir: Path) -> Target:
    """The Hub repo if one is configured (token from ``HF_TOKEN``), else ``<data_dir>/dataset``."""
    if settings.hub_repo is None:
        return LocalFolder(data_dir / "dataset")
    use_hub_timeout(settings.hub_timeout_s)
    return HubRepo(settings.hub_repo, endpoint=settings.hub_endpoint, private=settings.hub_private)


@dataclass
class Jobs:
    """The jobs of one store, with the last outcome of each."""

    store: Store
    leaderboards: LeaderboardService
    exporter: Exporter
    license_id: str
    errors: dict[str, str] = field(default_factory=dict)
    """The error of each job whose last run failed, for the status line."""
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def run(self, name: str) -> str:
        """Run one job by name; returns its summary, or raises after logging the failure."""
        job = {
            "push": self.push,
            "refresh": self.refresh,
            "restore": self.restore,
            "compact": self.compact,
            "signals": self.signals,
        }[name]
        started = time.perf_counter()
        try:
            summary = job()
        except Exception as error:
            log.exception("%s failed after %.2f s: %s", name, time.perf_counter() - started, error)
            with self._lock:
                self.errors[name] = str(error)
            raise
        log.info("%s", summary)
        with self._lock:
            self.errors.pop(name, None)
        return summary

    def push(self) -> str:
        # Label first: a battle is exported once, with its vote, so its signals must be stored
        # by then (a voted battle takes no more turns). Signals are derived data: if labelling
        # fails, the votes are published all the same, and the failure is reported.
        try:
            labelled = label_pending(self.store).turns
        except Exception as error:
            log.exception("signals failed before push: %s", error)
            with self._lock:
                self.errors["signals"] = str(error)
            labelled = None
        summary = self.exporter.push().describe()
        if labelled is None:
            summary += " (signals could not be labelled first; see the log)"
        elif labelled:
            summary += f" (labelled {labelled} new user turns first)"
        return summary

    def signals(self) -> str:
        """Read SAT/DSAT from every new user turn that follows a reply (`arena.signal_labels`)."""
        return label_pending(self.store).describe()

    def refresh(self) -> str:
        started = time.perf_counter()
        boards = self.leaderboards.refresh()
        seconds = time.perf_counter() - started
        if not boards:
            return f"refresh: no votes yet, nothing computed ({seconds:.2f} s)"
        used = boards[0].battles_used
        return (
            f"refresh: {len(boards)} leaderboard(s) recomputed and stored as snapshots "
            f"({used} battles in the main one; {seconds:.2f} s)"
        )

    def restore(self) -> str:
        return restore_store(self.store, self.exporter.target).describe()

    def compact(self) -> str:
        target = self.exporter.target
        return compact(self.store, target, license_id=self.license_id).describe()

    def status_line(self) -> str:
        """When the dataset was last published, and the last export error if any."""
        published = last_published(self.store)
        if published is not None:
            # DuckDB hands TIMESTAMPTZ back in the process's zone; the line says UTC.
            published = published.astimezone(UTC)
        where = self.exporter.target.repo_id or "the local dataset folder"
        line = (
            f"📦 Dataset last published {published:%Y-%m-%d %H:%M} UTC to {where}."
            if published
            else f"📦 Nothing published to {where} yet."
        )
        with self._lock:
            error = self.errors.get("push")
        if error is not None:
            line += f" The last export failed ({error}); it is retried automatically."
        return line
