"""Gradio's per-session state, made cheap to create for an app with many components.

Gradio 6 gives each new browser session a `SessionState` whose constructor renders the config of
every block of the app (props, API info, JSON schemas: about 11 ms for the arena's tabs, before
the session's first event can run), and renders a block's config again each time an event sets
its value or replaces it (about 1 ms a block: `Block.get_config` inspects its constructor's
signature). Those configs serve one purpose, Gradio's deep links, which few sessions ever ask for.
`LazySessionState` only notes what changed, and renders the configs when a deep link asks for
them: the same configs, with the same values, as Gradio's own class would hold by then.
"""

from __future__ import annotations

import datetime
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
        self._stale: dict[int, None] = {}
        """Blocks replaced (or State blocks set) since their config was rendered, in order."""
        self._values: dict[int, Any] = {}
        """Values set since the block's config was last rendered, to write into it."""
        self.state_data: dict[int, Any] = {}
        self._state_ttl: dict[int, Any] = {}
        self.is_closed = False
        self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600

    def __setitem__(self, key: int, value: Any) -> None:
        # Gradio's, minus the config it renders at once (the same one `components` renders).
        from gradio.components import State

        block = self.blocks_config.blocks.get(key)
        if isinstance(block, State):
            self._state_ttl[key] = (block.time_to_live, datetime.datetime.now())
            self.state_data[key] = value
        else:
            self.blocks_config.blocks[key] = value
        if block:
            self._replaced(key)

    def _update_config(self, key: int) -> None:
        if self[key] is not None:
            self._replaced(key)

    def _update_value_in_config(self, key: int, value: Any) -> None:
        self._values[key] = value

    def _replaced(self, key: int) -> None:
        """A new config for ``key`` is due; values set before it do not carry over (in Gradio's
        class the config rendered for the new block holds the block's own value)."""
        self._stale[key] = None
        self._values.pop(key, None)

    @property
    def components(self) -> Iterator[dict[str, Any]]:
        """Every block's config, rendering those not rendered yet or out of date (for a deep
        link), in the order Gradio's eager dict has them: the app's blocks first, then any
        others."""
        blocks = self.blocks_config.blocks
        # Gradio's dict starts with every block of the app, rendered when the session began,
        # then has others in the order they were first touched (blocks rendered later, e.g. by
        # gr.render).
        keys = list(self._config_blocks)
        keys += [key for key in self.config_values if key not in self._config_blocks]
        keys += [
            key
            for key in [*self._stale, *self._values]
            if key not in self._config_blocks and key not in self.config_values
        ]
        ordered = {}
        for key in dict.fromkeys(keys):
            config = self.config_values.get(key)
            if key not in blocks:
                # Removed from the session by a reload or a re-render: Gradio's dict keeps the
                # config it had, which for an app block never rendered here is the app's own
                # (a replacement removed before any deep link is lost with it).
                if config is None and key in self._config_blocks:
                    config = self.blocks_config.config_for_block(key, [], self._config_blocks[key])
                if config is None:
                    continue
            elif not config or key in self._stale:
                config = self.blocks_config.config_for_block(key, [], blocks[key])
            if key in self._values and "props" in config:
                config["props"]["value"] = self._values[key]
            ordered[key] = config
        self.config_values = ordered
        self._stale.clear()
        self._values.clear()
        return super().components


def install_lazy_session_state() -> None:
    """Make Gradio create `LazySessionState` for new sessions (it looks the class up by name in
    `gradio.state_holder` each time). Idempotent."""
    state_holder.SessionState = LazySessionState  # type: ignore[misc]
