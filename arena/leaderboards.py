"""Leaderboards for the UI: computed from the store's battles, cached, and kept as snapshots.

The rating engine (`arena.ratings`) is pure; this is the small I/O shell around it. A view
(category, style control) is recomputed only when new votes arrived, so a page full of viewers
polling the tab costs one vote count each, not a bootstrap each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from arena.config import Registry
from arena.ratings import FilterConfig, Leaderboard, available_categories, compute_leaderboard
from arena.store import LeaderboardSnapshot, Store

BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True)
class View:
    """Which leaderboard: all battles or one category, with or without style control."""

    category: str | None = None
    style_control: bool = False


@dataclass(frozen=True)
class Computed:
    leaderboard: Leaderboard
    votes_seen: int
    """The store's vote count when this was computed; a different count makes it stale."""


class LeaderboardService:
    """Computes, caches and records leaderboards."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        bootstrap_rounds: int = BOOTSTRAP_ROUNDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._bootstrap_rounds = bootstrap_rounds
        self._clock = clock
        self._filters = FilterConfig(
            identity_terms={m.name: (m.display_name, m.organization) for m in registry.models}
        )
        self._cache: dict[View, Computed] = {}
        self._categories: list[str] = []
        self._lock = threading.Lock()

    def leaderboard(self, view: View) -> Leaderboard | None:
        """The view's leaderboard, recomputed if votes arrived since; None before any vote."""
        with self._lock:
            votes = self._store.vote_count()
            cached = self._cache.get(view)
            if cached is not None and cached.votes_seen == votes:
                return cached.leaderboard
            if votes == 0:
                return None
            return self._compute(view, votes).leaderboard

    def refresh(self) -> list[Leaderboard]:
        """Recompute every view seen so far plus the main one; for the scheduled refresh job."""
        with self._lock:
            votes = self._store.vote_count()
            if votes == 0:
                return []
            views = {View(), *self._cache}
            return [self._compute(view, votes).leaderboard for view in views]

    def categories(self) -> list[str]:
        """Categories the battles were tagged with at the last computation."""
        return list(self._categories)

    def history(self, view: View) -> list[LeaderboardSnapshot]:
        return self._store.leaderboard_history(
            category=view.category, style_control=view.style_control
        )

    def _compute(self, view: View, votes: int) -> Computed:
        battles: pd.DataFrame = self._store.battles_frame()
        self._categories = available_categories(battles)
        leaderboard = compute_leaderboard(
            battles,
            bootstrap_rounds=self._bootstrap_rounds,
            style_control=view.style_control,
            category=view.category,
            filters=self._filters,
            computed_at=self._clock(),
        )
        assert leaderboard.computed_at is not None
        self._store.save_leaderboard(
            LeaderboardSnapshot(
                computed_at=leaderboard.computed_at,
                category=view.category,
                style_control=view.style_control,
                battles_used=leaderboard.battles_used,
                records=leaderboard.to_records(),
            )
        )
        computed = Computed(leaderboard, votes)
        self._cache[view] = computed
        return computed
