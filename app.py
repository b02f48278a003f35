"""Open Feedback Arena: wires the registry, the store, the model clients and the UI, then launches.

python app.py [--models models.yaml] [--data-dir data]   (python app.py --help for all flags)
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from arena.chat import ChatService
from arena.chat_rules import ChatLimits
from arena.config import ConfigError, Registry, load_registry
from arena.demo_server import PERSONAS, DemoServer
from arena.export import Exporter, RestoreError
from arena.leaderboards import LeaderboardService
from arena.model_worker import ModelWorker, Target, WorkerError
from arena.service import BattleService
from arena.settings import Settings, parse_settings
from arena.store import Store, StoreVersionError
from arena.ui import build_ui
from arena.ui.battle import ClientIdentity
from arena.ui.consent import ConsentNotice
from scheduler import ArenaScheduler, Jobs, build_target

log = logging.getLogger("arena")

QUEUE_STATUS_INTERVAL_S = 1.0
"""How often Gradio tells waiting visitors their place in the queue. Its default ("auto") tells
every waiting visitor each time any event starts: a burst of battles then queues status
messages ahead of the replies, each one a trip through the event loop (100 battles: 1,814
messages, and 8 s before the first reply showed)."""


@dataclass(frozen=True)
class Arena:
    """Everything a running arena holds."""

    settings: Settings
    registry: Registry
    store: Store
    battles: BattleService
    leaderboards: LeaderboardService
    jobs: Jobs
    blocks: gr.Blocks


@contextmanager
def open_arena(settings: Settings) -> Iterator[Arena]:
    """Build the arena; on exit stop the demo server and close the store."""
    registry = load_registry(settings.models_path)
    with ExitStack() as stack:
        base_urls = {m.name: m.endpoint for m in registry.enabled if not m.is_demo}
        demo_models = [m for m in registry.enabled if m.is_demo]
        if demo_models:
            unknown = sorted({m.persona for m in demo_models} - set(PERSONAS))
            if unknown:
                raise ConfigError(
                    f"{settings.models_path}: unknown built-in personas {unknown}; "
                    f"available: {', '.join(PERSONAS)}"
                )
            server = stack.enter_context(
                DemoServer(token_latency_ms=settings.demo_token_latency_ms)
            )
            base_urls |= {m.name: server.base_url(m.persona) for m in demo_models}
            log.info("built-in demo server at %s", server.url)
        store = stack.enter_context(Store.open(settings.data_dir))
        worker = stack.enter_context(
            ModelWorker({m.name: Target(m, base_urls[m.name]) for m in registry.enabled})
        )
        clients = {m.name: worker.client(m.name) for m in registry.enabled}
        battles = BattleService(registry, store, clients, settings.limits)
        stack.callback(battles.close)  # its writes in flight land before the store closes
        leaderboards = LeaderboardService(store, registry)
        target = build_target(settings.export, settings.data_dir)
        exporter = Exporter(store, target, license_id=settings.export.license)
        jobs = Jobs(store, leaderboards, exporter, settings.export.license)
        if settings.export.hub_repo is not None:
            # The disk may have been wiped: bring back what was published before serving (a
            # store that has votes is left alone).
            jobs.run("restore")
        stack.enter_context(ArenaScheduler(jobs, settings.export))
        export_dir = settings.data_dir / "exports"
        export_dir.mkdir(parents=True, exist_ok=True)
        blocks = build_ui(
            battles,
            leaderboards,
            registry,
            identity=ClientIdentity(store.ip_salt, settings.proxy_hops),
            concurrency_limit=settings.concurrency_limit,
            export_dir=export_dir,
            consent=ConsentNotice(store, settings.export.license),
            publish_status=jobs.status_line,
            chats=ChatService(
                registry,
                store,
                clients,
                ChatLimits(max_prompt_chars=settings.limits.max_prompt_chars),
            ),
        )
        blocks.queue(
            default_concurrency_limit=settings.concurrency_limit,
            status_update_rate=QUEUE_STATUS_INTERVAL_S,
        )
        yield Arena(settings, registry, store, battles, leaderboards, jobs, blocks)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = parse_settings(argv)
    try:
        with open_arena(settings) as arena:
            # Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT itself.
            arena.blocks.launch(max_threads=settings.concurrency_limit)
    except (ConfigError, StoreVersionError, RestoreError, WorkerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
