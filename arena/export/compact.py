"""Compaction: merge each config's shards into one and drop deleted battles, in one commit.

Pushes add a shard per config every few minutes; the Hub's folders and Dataset Viewer want few
files. Compaction reads every published shard, writes one per config named after the last
published batch (``batch-<n>-compacted.parquet``, so a retry writes the same names), leaves out
every battle listed as deleted (in the store or in the published ``deletions``), and replaces
the old shards with the new ones and an updated card in a single commit.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from arena.export.card import dataset_card
from arena.export.push import EXPORT_LOCK
from arena.export.tables import CONFIGS
from arena.export.targets import Target
from arena.store import Store

_KEEP_ALL = ("leaderboard", "deletions")
"""Configs without battles to drop: snapshots, and the deletion list itself."""


@dataclass(frozen=True)
class CompactResult:
    files_before: int = 0
    files_after: int = 0
    dropped: int = 0
    """Rows removed over all configs: of deleted battles, or duplicates."""
    commit_id: str | None = None
    seconds: float = 0.0
    skipped: str | None = None

    def describe(self) -> str:
        if self.skipped is not None:
            return f"compact: skipped, {self.skipped} ({self.seconds:.2f} s)"
        return (
            f"compact: {self.files_before} shards merged into {self.files_after}, "
            f"{self.dropped} rows of deleted battles (or duplicates) dropped; "
            f"commit {self.commit_id or '-'}; {self.seconds:.2f} s"
        )


def compact(store: Store, target: Target, *, license_id: str) -> CompactResult:
    """Merge the target's shards and drop deleted battles, if there is anything to do."""
    started = time.perf_counter()

    def skipped(reason: str) -> CompactResult:
        return CompactResult(skipped=reason, seconds=time.perf_counter() - started)

    with EXPORT_LOCK:
        with store.cursor() as cursor:
            [(last, pending)] = cursor.execute(
                "SELECT max(batch) FILTER (published_at IS NOT NULL), "
                "count(*) FILTER (published_at IS NULL) FROM export_batches WHERE target = ?",
                [target.key],
            ).fetchall()
            deleted = [row[0] for row in cursor.execute("SELECT id FROM deletions").fetchall()]
        if pending:
            # Its files may have landed already: merging them now would publish them twice.
            return skipped("a batch is waiting to be pushed; push first")
        if last is None:
            return skipped("nothing was published yet")
        with tempfile.TemporaryDirectory() as scratch:
            files = target.fetch_data(Path(scratch) / "download")
            out = Path(scratch) / "merged"
            out.mkdir()
            with duckdb.connect() as con:
                merged, dropped = _merge(con, files, deleted, out)
            if dropped == 0 and all(
                sum(name.startswith(f"data/{c}/") for name in files) <= 1 for c in CONFIGS
            ):
                return skipped("one shard per config and no deleted rows")
            counts = {config: rows for config, (_, rows) in merged.items()}
            card = out / "README.md"
            card.write_text(
                dataset_card(license_id=license_id, repo_id=target.repo_id, counts=counts),
                encoding="utf-8",
            )
            add = {_shard(config, last): local for config, (local, _) in merged.items()}
            add["README.md"] = card
            delete = [name for name in files if name not in add]
            commit_id = target.replace(add, delete, f"Compact batches up to {last}")
        with store.cursor() as cursor:
            # The card's totals are sums over batches: the merged shard now holds them all.
            cursor.execute(
                "UPDATE export_batches SET counts = CASE WHEN batch = $last THEN $counts END "
                "WHERE target = $target",
                {"last": last, "counts": json.dumps(counts), "target": target.key},
            ).fetchall()
    return CompactResult(
        files_before=len(files),
        files_after=len(merged),
        dropped=dropped,
        commit_id=commit_id,
        seconds=time.perf_counter() - started,
    )


def _shard(config: str, last: int) -> str:
    return f"data/{config}/batch-{last:08d}-compacted.parquet"


def _merge(
    con: duckdb.DuckDBPyConnection,
    files: dict[str, Path],
    deleted: list[str],
    out: Path,
) -> tuple[dict[str, tuple[Path, int]], int]:
    """Write one file per config into ``out``; returns config -> (file, rows), rows dropped.

    Rows of deleted battles go, and so do exact duplicates (a local compaction that crashed
    between writing its merged shard and removing the old ones leaves rows twice).
    """
    by_config = {
        config: [str(p) for name, p in files.items() if name.startswith(f"data/{config}/")]
        for config in CONFIGS
    }
    con.execute(
        "CREATE TEMP TABLE gone AS SELECT unnest($deleted::VARCHAR[]) AS id "
        "UNION SELECT question_id FROM read_parquet($paths)",
        {"deleted": deleted, "paths": by_config["deletions"]},
    ).fetchall()
    merged: dict[str, tuple[Path, int]] = {}
    dropped = 0
    for config, paths in by_config.items():
        if not paths:
            continue  # a config added after this dataset was last published
        source = "read_parquet($paths, union_by_name = true)"
        [(total,)] = con.execute(f"SELECT count(*) FROM {source}", {"paths": paths}).fetchall()
        where = "" if config in _KEEP_ALL else "WHERE question_id NOT IN (SELECT id FROM gone)"
        order = "computed_at, snapshot_id" if config == "leaderboard" else "tstamp, question_id"
        target = out / f"{config}.parquet"
        quoted = str(target).replace("'", "''")
        con.execute(
            f"COPY (SELECT DISTINCT * FROM {source} {where} ORDER BY {order}) "
            f"TO '{quoted}' (FORMAT parquet, COMPRESSION zstd)",
            {"paths": paths},
        ).fetchall()
        [(rows,)] = con.execute(
            f"SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata('{quoted}')"
        ).fetchall()
        merged[config] = (target, int(rows))
        if config not in _KEEP_ALL:
            dropped += total - int(rows)
    return merged, dropped
