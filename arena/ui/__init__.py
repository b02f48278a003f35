"""The Gradio interface: one module per tab, assembled here."""

from __future__ import annotations

import gradio as gr

from arena.config import Registry
from arena.service import BattleService
from arena.ui.battle import BattleTab

TITLE = "Open Feedback Arena"


def build_ui(
    service: BattleService, registry: Registry, *, ip_salt: str, concurrency_limit: int
) -> gr.Blocks:
    """The whole app's Blocks, ready to launch."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as blocks:
        gr.Markdown(f"# ⚔️ {TITLE}")
        demo_models = [m.display_name for m in registry.enabled if m.is_demo]
        if demo_models:
            gr.Markdown(
                "**Demo mode:** these models are canned personas of the built-in demo server, "
                f"not real language models: {', '.join(demo_models)}. "
                "Point `models.yaml` at real endpoints to run a real arena.",
                elem_id="demo-banner",
            )
        with gr.Tab("⚔️ Battle", id="battle"):
            BattleTab(service, ip_salt, concurrency_limit).render()
    return blocks
