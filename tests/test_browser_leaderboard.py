"""The Leaderboard tab in a real browser: a vote just cast shows up when the tab is opened."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.test_browser import PROMPT, TIMEOUT_MS, browser, open_battle, page  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]


def test_opening_the_tab_shows_the_vote_just_cast(launch_arena, write_models, page: Page):  # noqa: F811
    models = write_models("concise", "verbose")
    running = launch_arena("--models", str(models), "--demo-token-latency-ms", "5")
    open_battle(page, running.url)
    page.get_by_role("tab", name="Leaderboard").click()
    expect(page.locator("#lb-note")).to_contain_text("No votes yet")

    page.get_by_role("tab", name="Battle").click()
    page.locator("#prompt textarea").fill(PROMPT)
    page.locator("#send").click()
    # A tie gives each model a half win and a half loss, so both are rated at once.
    page.locator("#vote-tie").click(timeout=TIMEOUT_MS)
    expect(page.locator("#vote-result")).to_contain_text("Your vote")

    page.get_by_role("tab", name="Leaderboard").click()
    table = page.locator("#leaderboard-table")
    for entry in running.arena.registry.enabled:
        expect(table).to_contain_text(entry.display_name)
    expect(page.locator("#lb-note")).not_to_contain_text("No votes yet")
