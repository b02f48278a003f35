"""The Battle tab in a real browser: Debian's Chromium driven by Playwright.

What only a browser shows: both panes filling in at the same time, the buttons locking and
unlocking as the battle moves on, the names appearing after the vote. The battle test also saves
a screenshot, to test-artifacts/battle.png or to $ARENA_SCREENSHOT (set it to docs/battle.png to
refresh the one the README shows).

Pages are awaited with ``domcontentloaded``, never ``networkidle``: Gradio keeps a heartbeat
request open for as long as the page lives.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

pytestmark = [
    pytest.mark.browser,
    # Gradio's queue calls pandas APIs that pandas 3 deprecates: not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / os.environ.get("ARENA_SCREENSHOT", "test-artifacts/battle.png")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VOTE_BUTTONS = ["#vote-a", "#vote-b", "#vote-tie", "#vote-bothbad"]
PROMPT = "How do I bake bread at home?"
TIMEOUT_MS = 30_000

# Samples the battle every 20 ms in the page itself, so no round trip can miss a state: the
# length of the reply in each pane and whether the inputs are locked.
START_SAMPLING = """
(voteIds) => {
    const reply = (pane) => {
        const bots = document.querySelectorAll(`${pane} [data-testid="bot"]`);
        return bots.length ? bots[bots.length - 1].innerText.length : 0;
    };
    window.__samples = [];
    window.__sampler = setInterval(() => window.__samples.push({
        t: performance.now(),
        a: reply("#chatbot-a"),
        b: reply("#chatbot-b"),
        votesDisabled: voteIds.map((id) => document.querySelector(id).disabled),
        sendDisabled: document.querySelector("#send").disabled,
    }), 20);
}
"""
STOP_SAMPLING = "() => { clearInterval(window.__sampler); return window.__samples; }"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Debian's Chromium is missing ({CHROMIUM}): install it with "
            "`apt-get install -y chromium` (the browser tests never download a browser)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def open_battle(page: Page, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    expect(page.locator("#prompt textarea")).to_be_editable()


def finished_at(lengths: list[int]) -> int:
    """Index of the sample from which a pane's text no longer changed."""
    index = len(lengths) - 1
    while index > 0 and lengths[index - 1] == lengths[-1]:
        index -= 1
    return index


def test_a_battle_streams_both_sides_then_reveals_the_names_after_the_vote(
    launch_arena, page: Page
):
    running = launch_arena("--models", str(REPO / "models.yaml"), "--demo-token-latency-ms", "25")
    open_battle(page, running.url)
    prompt, send = page.locator("#prompt textarea"), page.locator("#send")
    for button in VOTE_BUTTONS:
        expect(page.locator(button)).to_be_disabled()  # nothing to vote on yet

    page.evaluate(START_SAMPLING, VOTE_BUTTONS)
    prompt.fill(PROMPT)
    send.click()
    expect(page.locator("#vote-a")).to_be_enabled(timeout=TIMEOUT_MS)
    samples: list[dict[str, Any]] = page.evaluate(STOP_SAMPLING)

    a, b = [s["a"] for s in samples], [s["b"] for s in samples]
    # Both panes streamed: each grew through several lengths, not in one jump.
    for lengths in (a, b):
        assert lengths[-1] > 0 and len(set(lengths)) >= 4, lengths
    # Both were filling in at once: both had text before either had finished.
    both_done = min(finished_at(a), finished_at(b))
    assert any(s["a"] and s["b"] for s in samples[:both_done]), samples
    # While both were still streaming, nothing could be voted or sent.
    streaming = [s for s in samples[:both_done] if s["a"] or s["b"]]
    assert streaming
    for sample in streaming:
        assert all(sample["votesDisabled"]) and sample["sendDisabled"], sample
    for button in VOTE_BUTTONS:
        expect(page.locator(button)).to_be_enabled()
    expect(prompt).to_be_editable()  # a follow-up turn may be sent instead of voting

    page.locator("#vote-a").click()

    result = page.locator("#vote-result")
    expect(result).to_contain_text("Your vote", timeout=TIMEOUT_MS)
    (battle,) = running.store.battles_frame().to_dict("records")
    assert battle["winner"] == "model_a"
    registry = running.arena.registry
    name_a = registry.get(battle["model_a"]).display_name
    name_b = registry.get(battle["model_b"]).display_name
    expect(result).to_contain_text(f"Model A: {name_a}")
    expect(result).to_contain_text(f"Model B: {name_b}")
    expect(page.locator("#chatbot-a [data-testid='block-label']")).to_have_text(name_a)
    expect(page.locator("#chatbot-b [data-testid='block-label']")).to_have_text(name_b)
    # The battle is over: one vote, no more turns, until a new round.
    expect(send).to_be_disabled()
    for button in VOTE_BUTTONS:
        expect(page.locator(button)).to_be_disabled()

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    page.locator("#new-round").click()

    expect(prompt).to_be_editable()
    expect(send).to_be_enabled()
    expect(result).to_have_text("")
    expect(page.locator("#chatbot-a [data-testid='bot']")).to_have_count(0)
    expect(page.locator("#chatbot-b [data-testid='bot']")).to_have_count(0)
    expect(page.locator("#chatbot-a [data-testid='block-label']")).to_have_text("Model A")


def test_an_over_long_prompt_stays_in_the_box_with_a_notice(launch_arena, page: Page):
    running = launch_arena("--max-prompt-chars", "40")
    open_battle(page, running.url)
    too_long = "Please explain, very carefully, how yeast works."
    assert len(too_long) == 48

    page.locator("#prompt textarea").fill(too_long)
    page.locator("#send").click()

    expect(page.locator("#battle-notice")).to_contain_text("48 characters")
    expect(page.locator("#battle-notice")).to_contain_text("the limit is 40")
    expect(page.locator("#prompt textarea")).to_have_value(too_long)
    expect(page.locator("#prompt textarea")).to_be_editable()
    expect(page.locator("#chatbot-a [data-testid='user']")).to_have_count(0)
    assert running.store.battles_frame().empty


def test_the_prompt_box_is_locked_while_replies_stream_and_after_the_vote(
    launch_arena, write_models, page: Page
):
    models = write_models("markdown", "coder")
    running = launch_arena("--models", str(models), "--demo-token-latency-ms", "20")
    open_battle(page, running.url)
    prompt = page.locator("#prompt textarea")

    prompt.fill(PROMPT)
    page.locator("#send").click()

    expect(page.locator("#send")).to_be_disabled()  # the replies are streaming
    expect(prompt).to_be_disabled(timeout=1_000)
    expect(page.locator("#vote-a")).to_be_enabled()
    expect(prompt).to_be_editable()  # a follow-up turn is allowed before the vote
    page.locator("#vote-a").click()
    expect(page.locator("#vote-result")).to_contain_text("Your vote")
    expect(prompt).to_be_disabled(timeout=1_000)
    page.locator("#new-round").click()
    expect(prompt).to_be_editable()
