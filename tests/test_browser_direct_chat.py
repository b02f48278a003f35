"""The Direct chat tab in a real browser: pick a model, stream, like, edit, regenerate and stop,
then open the share link; each step checked in the DuckDB store.

Uses the browser fixtures and helpers of tests/test_browser.py (Debian's Chromium through
Playwright) and the arenas of tests/conftest.py.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.test_browser import PROMPT, REPO, TIMEOUT_MS, browser, page  # noqa: F401 (fixtures)
from tests.test_browser_side_by_side import pick

pytestmark = [
    pytest.mark.browser,
    # Gradio's queue calls pandas APIs that pandas 3 deprecates: not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]

EDIT = "Mix flour, water, salt and yeast; knead, let it rise, bake at 230 °C."


def type_until_kept(tab: Page, box: Locator, text: str) -> None:
    """Type ``text`` into ``box``, leave it as a person would, and wait until it stays. Just after
    the accordion holding the box opens, Gradio's frontend sometimes applies the tab's latest
    update to the box once more, replacing what was typed (in 2 to 4 of 8 runs here, with the
    text typed at once or key by key); a person starts typing later than that."""
    for _ in range(5):
        box.fill(text)
        box.blur()  # in one full-suite run the click sent the text before this, not yet handed on
        tab.wait_for_timeout(300)
        if box.input_value() == text:
            return
    raise AssertionError(f"the box kept replacing {text!r} with {box.input_value()!r}")


def rows(running, sql: str) -> list[tuple]:
    with running.store.cursor() as cursor:
        return cursor.execute(sql).fetchall()


def test_chat_stream_like_edit_regenerate_stop_and_share(
    launch_arena,
    page: Page,  # noqa: F811 (the fixture imported above)
):
    running = launch_arena("--models", str(REPO / "models.yaml"), "--demo-token-latency-ms", "40")
    page.goto(running.url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Direct chat").click()
    expect(page.locator("#chat-prompt textarea")).to_be_editable()
    for button in ("#chat-like", "#chat-dislike", "#chat-regenerate", "#chat-stop"):
        expect(page.locator(button)).to_be_disabled()  # nothing to act on yet
    page.locator("#chat-consent-share").click()
    pick(page, "#chat-model", "Verbose (demo)")
    expect(page.locator("#chat-chatbot [data-testid='block-label']")).to_have_text("Verbose (demo)")

    page.locator("#chat-prompt textarea").fill(PROMPT)
    page.locator("#chat-send").click()

    # While it streams, Stop is the only way on; then the reply takes feedback.
    bot = page.locator("#chat-chatbot [data-testid='bot']")
    expect(page.locator("#chat-stop")).to_be_enabled()
    expect(page.locator("#chat-send")).to_be_disabled()
    expect(page.locator("#chat-like")).to_be_enabled(timeout=TIMEOUT_MS)
    expect(page.locator("#chat-stop")).to_be_disabled()
    expect(bot.last).to_contain_text("Reply 1")
    ((conversation, model, share),) = rows(
        running,
        "SELECT c.id, c.model, k.share FROM conversations c "
        "JOIN consents k ON k.session_id = c.session_id",
    )
    assert (model, share) == ("demo-verbose", True)

    page.locator("#chat-like").click()
    expect(page.locator("#chat-feedback-status")).to_contain_text("liked")
    expect(page.locator("#chat-like")).to_have_text(re.compile("Liked"))
    expect(bot.last).to_contain_text("liked")

    page.locator("#chat-more").get_by_text("Edit or").click()
    edit_box = page.locator("#chat-edit-text textarea")
    expect(edit_box).to_have_value(re.compile(r"\S"))  # mounted, holding the reply to edit
    type_until_kept(page, edit_box, EDIT)
    page.locator("#chat-edit").click()
    expect(page.locator("#chat-notice")).to_contain_text("Your edit is saved")
    expect(bot.last).to_contain_text(EDIT)
    expect(bot.last).to_contain_text("edited")

    page.locator("#chat-regenerate").click()
    expect(page.locator("#chat-stop")).to_be_enabled()
    expect(bot.last).not_to_contain_text(EDIT)  # the new reply, streaming
    page.locator("#chat-stop").click()
    expect(bot.last).to_contain_text("stopped", timeout=TIMEOUT_MS)
    expect(bot.last).to_contain_text("attempt 2")
    expect(page.locator("#chat-like")).to_be_enabled()
    expect(page.locator("#chat-send")).to_be_enabled()

    assert rows(running, "SELECT aspect, value FROM feedback_events ORDER BY seq") == [
        ("rating", "like"),
        ("edit", EDIT),
    ]
    replies = rows(
        running,
        "SELECT attempt, finished, finish_reason FROM messages WHERE role = 'assistant' "
        "ORDER BY attempt",
    )
    assert [r[:2] for r in replies] == [(0, True), (1, False)]
    assert replies[1][2] == "stopped" and replies[0][2] != "stopped"

    page.locator("#chat-share-link").click()
    link = page.locator("#chat-share-url a")
    expect(link).to_have_attribute("href", re.compile(f"\\?conversation={conversation}$"))
    href = link.get_attribute("href")
    assert href is not None

    # Anyone with the link sees the chat read-only, in the Direct chat tab.
    viewer = page.context.new_page()
    viewer.goto(href, wait_until="domcontentloaded")
    expect(viewer.locator("#chat-shared-notice")).to_contain_text("Verbose (demo)")
    shared = viewer.locator("#chat-shared-chatbot")
    expect(shared.locator("[data-testid='user']")).to_have_text(PROMPT)
    expect(shared.locator("[data-testid='bot']")).to_have_count(1)
    expect(viewer.locator("#chat-prompt textarea")).to_be_visible()  # the tab was opened

    viewer.goto(f"{running.url}?conversation=not-a-chat", wait_until="domcontentloaded")
    expect(viewer.locator("#chat-shared-notice")).to_contain_text("no shared chat at this link")
    expect(viewer.locator("#chat-shared-chatbot")).to_be_hidden()
