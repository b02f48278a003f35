"""Gradio's per-session state, made cheap to create for an app with many components.

Gradio 6 gives each new browser session a `SessionState` whose constructor renders the config of
every block of the app (props, API info, JSON schemas: about 11 ms for the arena's tabs, before
the session's first event can run). Those configs serve one purpose, Gradio's deep links, and a
session only changes the few blocks its events update. `LazySessionState` computes a block's
config when something first needs it: an event that updates the block, or a deep link, which
then gets every block's config exactly as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from copy import copy
from typing import Any

import gradio as gr
from gradio import state_holder


class LazySessionState(state_holder.SessionState):
    """`gradio.state_holder.SessionState` without the eager render of every block's config."""

    def __init__(self, blocks: gr.Blocks) -> None:
        # Gradio's own __init__, minus the dict of all configs (tests/test_ui_sessions.py holds
        # the two in step: same attributes, same configs).
        self.blocks_config = copy(blocks.default_config)
        self._config_blocks = blocks.blocks
        self.config_values: dict[int, dict[str, Any]] = {}
        self.state_data: dict[int, Any] = {}
        self._state_ttl: dict[int, Any] = {}
        self.is_closed = False
        self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600

    @property
    def components(self) -> Iterator[dict[str, Any]]:
        """Every block's config, rendering those nothing has needed yet (for a deep link), in
        the order Gradio's eager dict has them: the app's blocks first, then any others."""
        ordered = {
            key: self.config_values.get(key) or self.blocks_config.config_for_block(key, [], block)
            for key, block in self.blocks_config.blocks.items()
            if key in self._config_blocks
        }
        self.config_values = ordered | self.config_values
        return super().components


def install_lazy_session_state() -> None:
    """Make Gradio create `LazySessionState` for new sessions (it looks the class up by name in
    `gradio.state_holder` each time). Idempotent."""
    state_holder.SessionState = LazySessionState  # type: ignore[misc]
