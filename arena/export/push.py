"""The incremental export: new rows become one numbered batch, published once.

1. Plan: if the target has a batch that was planned but never confirmed, take it again (same
   rows, same file names); else assign every vote, snapshot and deletion the target has not seen
   yet to a new batch, in one transaction. New votes are those numbered above the watermark the
   target's last batch kept (`arena.store.Store.vote_snapshot` says why none can be missed), so
   a plan reads only them, not every vote ever stored.
2. Render the batch's Parquet files and the dataset card into a staging folder.
3. Publish them; only then mark the batch published. A crash or a failure before that mark
   leaves the batch pending, and the next push replaces the same files.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from arena.export import direct
from arena.export.card import dataset_card
from arena.export.tables import CONFIGS, write_batch
from arena.export.targets import PublishError, Target
from arena.store import Store

log = logging.getLogger("arena.export")

EXPORT_LOCK = threading.Lock()
"""Held by every job that writes to a target, so two never interleave in one process."""


@dataclass(frozen=True)
class PushResult:
    batch: int | None
    """The batch published, or None when nothing was new."""
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    commit_id: str | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        if self.batch is None:
            return f"push: nothing new ({self.seconds:.2f} s)"
        rows = ", ".join(f"{config} {count}" for config, count in self.rows.items())
        return (
            f"push: batch {self.batch} published: {rows}; {self.files} files; "
            f"commit {self.commit_id or '-'}; {self.seconds:.2f} s"
        )


_UNNUMBERED = (("snapshot", "leaderboard_snapshots"), ("deletion", "deletions"))
"""Kinds of export rows besides votes, each a table matched whole against what the target took
(a few a day: leaderboard refreshes and visitors' deletions)."""


def shard_path(config: str, batch: int) -> str:
    """Where a batch's file of one config lives in the dataset: fixed for a given batch."""
    return f"data/{config}/batch-{batch:08d}.parquet"


class Exporter:
    """Pushes a store's new rows to one target."""

    def __init__(self, store: Store, target: Target, *, license_id: str) -> None:
        self._store = store
        self.target = target
        self._license = license_id

    def push(self) -> PushResult:
        """Publish what is new; raises `arena.export.targets.PublishError` if it did not land."""
        started = time.perf_counter()
        with EXPORT_LOCK:
            self._refuse_unknown_data()
            batch = self._plan()
            if batch is None:
                return PushResult(None, seconds=time.perf_counter() - started)
            staging = self._store.path.parent / "export-staging"
            staging.mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory(dir=staging) as folder:
                files, rows = self._render(batch, Path(folder))
                commit_id = self.target.publish(files, f"Export batch {batch}")
            self._mark_published(batch, commit_id)
        result = PushResult(batch, rows, len(files), commit_id, time.perf_counter() - started)
        log.info("%s", result.describe())
        return result

    def _refuse_unknown_data(self) -> None:
        """Batch numbers restart at 1 in a new store: never let them replace published shards."""
        with self._store.cursor() as cursor:
            [(known,)] = cursor.execute(
                "SELECT count(*) FROM export_batches WHERE target = ?", [self.target.key]
            ).fetchall()
        if not known and self.target.has_data():
            where = self.target.repo_id or "the dataset folder"
            raise PublishError(
                f"{where} already holds data this store has not published (the store is new or "
                "was wiped): restore it first (python -m scheduler restore, or restart the app "
                "with the repo configured), or publish to an empty repo"
            )

    def _plan(self) -> int | None:
        key = self.target.key
        with self._store.vote_snapshot() as cursor:
            try:
                pending = cursor.execute(
                    "SELECT min(batch) FROM export_batches "
                    "WHERE target = ? AND published_at IS NULL",
                    [key],
                ).fetchone()
                if pending is not None and pending[0] is not None:
                    cursor.commit()
                    return int(pending[0])
                row = cursor.execute(
                    "SELECT coalesce(max(batch), 0), max(votes_through) FROM export_batches "
                    "WHERE target = ?",
                    [key],
                ).fetchone()
                assert row is not None
                batch, watermark = int(row[0]) + 1, row[1]
                params = {"target": key, "batch": batch}
                added, votes_through = _plan_votes(cursor, params, watermark)
                for kind, table in _UNNUMBERED:
                    added += _plan_unseen(cursor, params | {"kind": kind}, table)
                added += direct.plan(cursor, target=key, batch=batch)
                if added == 0:
                    cursor.rollback()
                    return None
                cursor.execute(
                    "INSERT INTO export_batches (target, batch, votes_through) VALUES (?, ?, ?)",
                    [key, batch, votes_through],
                )
            except BaseException:
                cursor.rollback()
                raise
            cursor.commit()
        return batch

    def _render(self, batch: int, folder: Path) -> tuple[dict[str, Path], dict[str, int]]:
        key = self.target.key
        salt = self._store.judge_salt
        with self._store.cursor() as cursor:
            rows = write_batch(cursor, target=key, batch=batch, salt=salt, folder=folder)
            cursor.execute(
                "UPDATE export_batches SET counts = ? WHERE target = ? AND batch = ?",
                [json.dumps(rows), key, batch],
            )
            earlier = cursor.execute(
                "SELECT counts FROM export_batches "
                "WHERE target = ? AND published_at IS NOT NULL AND counts IS NOT NULL",
                [key],
            ).fetchall()
        totals = dict(rows)
        for (counts,) in earlier:
            for config, count in json.loads(counts).items():
                totals[config] = totals.get(config, 0) + count
        card = folder / "README.md"
        card.write_text(
            dataset_card(license_id=self._license, repo_id=self.target.repo_id, counts=totals),
            encoding="utf-8",
        )
        files = {shard_path(config, batch): folder / f"{config}.parquet" for config in CONFIGS}
        files["README.md"] = card
        return files, rows

    def _mark_published(self, batch: int, commit_id: str | None) -> None:
        with self._store.cursor() as cursor:
            cursor.execute(
                "UPDATE export_batches SET published_at = now(), commit_id = ? "
                "WHERE target = ? AND batch = ?",
                [commit_id, self.target.key, batch],
            )


def _plan_votes(
    cursor: duckdb.DuckDBPyConnection, params: dict[str, object], watermark: int | None
) -> tuple[int, int]:
    """Assign the votes the target has not taken to the batch; returns how many, and the new
    watermark: the highest vote number this plan could see (`arena.store.Store.vote_snapshot`).

    Above a watermark are exactly the votes not taken yet. Without one (the target's first
    batch, or batches planned before migration 12), every vote is matched against what the
    target took."""
    if watermark is None:
        added = _plan_unseen(cursor, params | {"kind": "vote"}, "votes")
    else:
        row = cursor.execute(
            "INSERT INTO export_rows SELECT $target, 'vote', id, $batch FROM votes "
            "WHERE seq > $watermark",
            params | {"watermark": watermark},
        ).fetchone()
        added = int(row[0]) if row else 0
    row = cursor.execute(
        "SELECT coalesce(max(seq), $watermark) FROM votes WHERE seq > $watermark",
        {"watermark": -1 if watermark is None else watermark},
    ).fetchone()
    assert row is not None
    return added, int(row[0])


def _plan_unseen(cursor: duckdb.DuckDBPyConnection, params: dict[str, object], table: str) -> int:
    """Assign the rows of ``table`` the target has not taken yet to the batch; returns how many."""
    row = cursor.execute(
        f"""
        INSERT INTO export_rows
        SELECT $target, $kind, t.id, $batch FROM {table} t
        ANTI JOIN (
            SELECT row_id FROM export_rows WHERE target = $target AND kind = $kind
        ) e ON e.row_id = t.id
        """,
        params,
    ).fetchone()
    return int(row[0]) if row else 0


def last_published(store: Store) -> datetime | None:
    """When any target last confirmed a batch, or None if nothing was ever published."""
    with store.cursor() as cursor:
        row = cursor.execute("SELECT max(published_at) FROM export_batches").fetchone()
    return None if row is None else row[0]
