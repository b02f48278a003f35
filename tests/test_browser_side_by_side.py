"""The Side-by-side tab in a real browser: pick two models, set the parameters, stream, vote.

Uses the browser fixtures and helpers of tests/test_browser.py (Debian's Chromium through
Playwright) and the arenas of tests/conftest.py.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.test_browser import PROMPT, REPO, TIMEOUT_MS, browser, page  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.browser,
    # Gradio's queue calls pandas APIs that pandas 3 deprecates: not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]

VOTE_BUTTONS = ["#sbs-vote-a", "#sbs-vote-b", "#sbs-vote-tie", "#sbs-vote-bothbad"]


def open_side_by_side(tab: Page, url: str) -> None:
    tab.goto(url, wait_until="domcontentloaded")
    tab.get_by_role("tab", name="Side-by-side").click()
    expect(tab.locator("#sbs-prompt textarea")).to_be_editable()


def pick(tab: Page, dropdown: str, display_name: str) -> None:
    tab.locator(f"{dropdown} input").click()
    tab.locator(f"{dropdown} [role='option'][aria-label='{display_name}']").click()


def label(tab: Page, chatbot: str) -> Locator:
    return tab.locator(f"{chatbot} [data-testid='block-label']")


def test_two_picked_models_stream_with_the_chosen_limit_and_the_vote_is_stored_named(
    launch_arena,
    page: Page,  # noqa: F811 (the fixture imported above)
):
    running = launch_arena("--models", str(REPO / "models.yaml"), "--demo-token-latency-ms", "50")
    open_side_by_side(page, running.url)
    for button in VOTE_BUTTONS:
        expect(page.locator(button)).to_be_disabled()

    # Coder allows 512 new tokens, Concise 256: the slider stops at the lower limit.
    pick(page, "#sbs-model-a", "Coder (demo)")
    pick(page, "#sbs-model-b", "Concise (demo)")
    expect(label(page, "#sbs-chatbot-a")).to_have_text("Coder (demo)")
    expect(label(page, "#sbs-chatbot-b")).to_have_text("Concise (demo)")
    tokens = page.locator("#sbs-max-new-tokens input[type='number']")
    expect(page.locator("#sbs-max-new-tokens input[type='range']")).to_have_attribute("max", "256")
    tokens.fill("12")
    tokens.press("Enter")

    page.locator("#sbs-prompt textarea").fill(PROMPT)
    page.locator("#sbs-send").click()

    # While both stream, nothing can be sent, voted on, or re-picked (that would start a new
    # round under the running replies).
    expect(page.locator("#sbs-send")).to_be_disabled()
    expect(page.locator("#sbs-model-a input")).to_be_disabled(timeout=1_000)
    expect(page.locator("#sbs-vote-a")).to_be_disabled()
    expect(page.locator("#sbs-vote-b")).to_be_enabled(timeout=TIMEOUT_MS)
    for pane in ("#sbs-chatbot-a", "#sbs-chatbot-b"):
        expect(page.locator(f"{pane} [data-testid='bot']")).not_to_have_text("")
    expect(page.locator("#sbs-model-a input")).to_be_enabled()
    page.locator("#sbs-vote-b").click()

    expect(page.locator("#sbs-vote-result")).to_contain_text("Your vote", timeout=TIMEOUT_MS)
    expect(page.locator("#sbs-send")).to_be_disabled()  # locked until a new round
    expect(page.locator("#sbs-prompt textarea")).to_be_disabled()
    for button in VOTE_BUTTONS:
        expect(page.locator(button)).to_be_disabled()
    (battle,) = running.store.battles_frame().to_dict("records")
    assert (battle["model_a"], battle["model_b"]) == ("demo-coder", "demo-concise")
    assert battle["winner"] == "model_b" and not battle["anony"]
    with running.store._cursor() as cursor:
        stored = cursor.execute(
            "SELECT parameters, tokens, finish_reason FROM messages WHERE role = 'assistant'"
        ).fetchall()
    assert [(json.loads(p)["max_new_tokens"], t, f) for p, t, f in stored] == [
        (12, 12, "length")
    ] * 2

    page.locator("#sbs-new-round").click()

    expect(page.locator("#sbs-prompt textarea")).to_be_editable()
    expect(page.locator("#sbs-vote-result")).to_have_text("")
    expect(page.locator("#sbs-chatbot-a [data-testid='bot']")).to_have_count(0)
    expect(label(page, "#sbs-chatbot-a")).to_have_text("Coder (demo)")  # the same pair
