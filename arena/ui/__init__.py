"""The Gradio interface: one module per tab, assembled here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr

from arena.chat import ChatService
from arena.config import Registry
from arena.leaderboards import LeaderboardService
from arena.service import BattleService
from arena.ui.battle import BattleTab, ClientIdentity
from arena.ui.consent import ConsentNotice
from arena.ui.direct_chat import DirectChatTab
from arena.ui.imports import settle_missing
from arena.ui.leaderboard import LeaderboardTab
from arena.ui.sessions import install_lazy_session_state
from arena.ui.side_by_side import SideBySideTab

TITLE = "Open Feedback Arena"


def build_ui(
    battles: BattleService,
    leaderboards: LeaderboardService,
    registry: Registry,
    *,
    identity: ClientIdentity,
    concurrency_limit: int,
    export_dir: Path,
    consent: ConsentNotice,
    publish_status: Callable[[], str],
    chats: ChatService,
) -> gr.Blocks:
    """The whole app's Blocks, ready to launch; ``publish_status`` says when data was published."""
    # Two costs Gradio pays per session and per event that the arena has no use for.
    settle_missing()
    install_lazy_session_state()
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
            BattleTab(battles, identity, concurrency_limit, consent).render()
        with gr.Tab("👀 Side-by-side", id="side-by-side"):
            SideBySideTab(battles, registry, identity, concurrency_limit, consent).render()
        with gr.Tab("💬 Direct chat", id="direct-chat"):
            DirectChatTab(chats, identity, concurrency_limit, consent).render()
        with gr.Tab("🏆 Leaderboard", id="leaderboard") as leaderboard_tab:
            leaderboard = LeaderboardTab(leaderboards, registry, export_dir)
            leaderboard.render()
        status = gr.Markdown(elem_id="publish-status")
        for event in (blocks.load, gr.Timer(60).tick):
            event(publish_status, outputs=status, api_visibility="private")
        # Opening the tab shows the votes just cast, without waiting for the refresh timer.
        gr.on(
            [blocks.load, leaderboard_tab.select],
            leaderboard.update,
            inputs=leaderboard.refresh_inputs,
            outputs=leaderboard.refresh_outputs,
            api_visibility="private",
        )
    return blocks
