"""Shared fixtures: free ports, a data folder, models files, and whole arenas run in-process.

``launch_arena(*flags)`` builds the app exactly as ``app.py`` does (``parse_settings`` then
``open_arena``), serves its Blocks on 127.0.0.1 and a free port, and closes everything when the
test ends: the clients it handed out, the Gradio server, the demo server and the store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from gradio_client import Client

    from app import Arena
    from arena.store import Store

# Before gradio is imported anywhere: the network is closed, analytics would only cost time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a TCP port of 127.0.0.1 that was free a moment ago."""
    return _free_port


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The arena's data folder for this test; not created yet (the store creates it)."""
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    """A new, migrated store in the test's data folder, closed after the test."""
    from arena.store import Store

    with Store.open(data_dir) as opened:
        yield opened


def demo_model(persona: str, **fields: Any) -> dict[str, Any]:
    """A models.yaml entry answered by the built-in demo server's ``persona``."""
    return {
        "name": f"demo-{persona}",
        "display_name": f"{persona.capitalize()} (test)",
        "organization": "Test Lab",
        "endpoint": f"builtin:{persona}",
        **fields,
    }


@pytest.fixture
def write_models(tmp_path: Path) -> Callable[..., Path]:
    """``write_models(*models)`` writes a models file and returns its path.

    A model is a persona name (its ``builtin:`` entry, see `demo_model`), a dict with a
    ``persona`` key (that entry with the dict's other fields over it), or a whole entry dict.
    """

    def entry(model: str | dict[str, Any]) -> dict[str, Any]:
        if isinstance(model, str):
            return demo_model(model)
        if "persona" in model:
            fields = dict(model)
            return demo_model(fields.pop("persona"), **fields)
        return model

    def write(*models: str | dict[str, Any], name: str = "models.yaml") -> Path:
        entries = [entry(model) for model in models]
        path = tmp_path / name
        path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False), encoding="utf-8")
        return path

    return write


@dataclass
class RunningArena:
    """An arena served on ``url``; ``client()`` opens a new browser-like session on it."""

    arena: Arena
    url: str
    _clients: list[Client] = field(default_factory=list)

    @property
    def store(self) -> Store:
        """The arena's store, once the battle writes submitted so far have landed."""
        self.arena.battles.flush()
        return self.arena.store

    def client(self, **options: Any) -> Client:
        """A gradio_client session of its own (its own server-side state)."""
        from gradio_client import Client

        client = Client(self.url, verbose=False, analytics_enabled=False, **options)
        self._clients.append(client)
        return client


@pytest.fixture
def launch_arena(data_dir: Path) -> Iterator[Callable[..., RunningArena]]:
    """``launch_arena(*flags)`` starts an arena with these command-line flags.

    Defaults, unless a flag says otherwise: the repository's models.yaml, this test's
    ``data_dir``, and demo models with no delay per token. ARENA_* variables of the
    environment are ignored, so the tests do not depend on the shell that runs them.
    """
    # Imported here: gradio takes seconds to import, and most test modules never need it.
    from app import open_arena
    from arena.settings import parse_settings

    with ExitStack() as stack:

        def launch(*flags: str) -> RunningArena:
            defaults = ["--data-dir", str(data_dir), "--demo-token-latency-ms", "0"]
            settings = parse_settings([*defaults, *flags], environ={})
            arena = stack.enter_context(open_arena(settings))
            port = _free_port()
            arena.blocks.launch(
                prevent_thread_lock=True, server_name=HOST, server_port=port, quiet=True
            )
            running = RunningArena(arena, f"http://{HOST}:{port}/")
            # Callbacks run last-in first-out: the server closes first, which ends the clients'
            # heartbeat streams, so closing the clients afterwards does not wait for them.
            stack.callback(lambda: [client.close() for client in running._clients])
            stack.callback(arena.blocks.close)
            return running

        yield launch
