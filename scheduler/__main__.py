"""``python -m scheduler push|refresh|restore|compact|signals [app flags]``: run one job once.

Takes the app's flags and ARENA_* variables (``--data-dir``, ``--hub-repo``...; see
``python app.py --help``). Run it while the app is stopped: the store is one DuckDB file that a
single process may open.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import duckdb

from arena.config import ConfigError, load_registry
from arena.export import Exporter, PublishError
from arena.leaderboards import LeaderboardService
from arena.settings import parse_settings
from arena.store import Store, StoreError
from scheduler.jobs import JOBS, Jobs, build_target


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = argparse.ArgumentParser(
        prog="python -m scheduler",
        description="Run one job of the feedback loop once: push (export new rows to the "
        "dataset), refresh (recompute the leaderboards), restore (rebuild an empty store from "
        "the dataset), compact (merge the dataset's shards and drop deleted battles), signals "
        "(label new user turns with satisfaction signals). Other flags are the app's "
        "(python app.py --help).",
    )
    parser.add_argument("job", choices=JOBS)
    args, app_flags = parser.parse_known_args(argv)
    settings = parse_settings(app_flags)
    try:
        registry = load_registry(settings.models_path)
        with Store.open(settings.data_dir) as store:
            target = build_target(settings.export, settings.data_dir)
            jobs = Jobs(
                store,
                LeaderboardService(store, registry),
                Exporter(store, target, license_id=settings.export.license),
                settings.export.license,
            )
            print(jobs.run(args.job))
    except (ConfigError, StoreError, PublishError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except duckdb.IOException as error:
        print(
            f"error: cannot open the store in {settings.data_dir} ({error}); is the app "
            "running? Its scheduler runs these jobs itself.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
