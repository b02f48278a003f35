"""The feedback dataset: what the arena publishes, how, and how it is read back on restart.

`Exporter.push` publishes new votes, conversations and leaderboard snapshots incrementally, as
one batch of Parquet shards per push, to a `LocalFolder` or a `HubRepo`; `compact` merges the
shards and drops deleted battles; `restore_store` rebuilds an empty store from a published
dataset. The jobs that run them on a schedule live in `scheduler`.
"""

from arena.export.compact import CompactResult, compact
from arena.export.push import EXPORT_LOCK, Exporter, PushResult, last_published, shard_path
from arena.export.restore import RestoreError, RestoreResult, restore_store
from arena.export.tables import CONFIGS
from arena.export.targets import HubRepo, LocalFolder, PublishError, Target, use_hub_timeout

__all__ = [
    "CONFIGS",
    "EXPORT_LOCK",
    "CompactResult",
    "Exporter",
    "HubRepo",
    "LocalFolder",
    "PublishError",
    "PushResult",
    "RestoreError",
    "RestoreResult",
    "Target",
    "compact",
    "last_published",
    "restore_store",
    "shard_path",
    "use_hub_timeout",
]
