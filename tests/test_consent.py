"""The data-sharing choice: shown before the first message, recorded per session, never assumed.

Sessions are driven through the running app (gradio_client, one Client per browser session);
the last test clicks the two choices in Chromium by their element ids.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from arena.export.terms import TERMS_VERSION
from arena.store import Store
from tests.test_browser import browser, open_battle, page  # noqa: F401  (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")

REPO = Path(__file__).resolve().parent.parent


def battle_sessions(store: Store) -> list[str]:
    with store.cursor() as cursor:
        return [row[0] for row in cursor.execute("SELECT session_id FROM battles").fetchall()]


def test_a_choice_made_before_the_first_message_is_recorded_with_the_terms(launch_arena):
    running = launch_arena()
    sharing, private = running.client(), running.client()

    sharing.predict(api_name="/consent_share")
    private.predict(api_name="/consent_private")
    for client in (sharing, private):
        client.submit("Hello there", api_name="/battle_send").result(timeout=30)

    consents = {
        running.store.consent_of(session)["share"]  # type: ignore[index]
        for session in battle_sessions(running.store)
    }
    assert consents == {True, False}
    for session in battle_sessions(running.store):
        assert running.store.consent_of(session)["terms_version"] == TERMS_VERSION  # type: ignore[index]


def test_without_a_choice_nothing_is_shared_and_the_battle_still_works(launch_arena):
    running = launch_arena()
    client = running.client()

    client.submit("Hello there", api_name="/battle_send").result(timeout=30)
    client.predict(api_name="/battle_vote_model_a")

    [session] = battle_sessions(running.store)
    assert running.store.consent_of(session) is None  # which the export reads as "don't share"
    assert running.store.vote_count() == 1


def test_a_choice_made_mid_battle_applies_to_the_session_at_once(launch_arena):
    running = launch_arena()
    client = running.client()
    client.submit("Hello there", api_name="/battle_send").result(timeout=30)

    client.predict(api_name="/consent_share")
    [session] = battle_sessions(running.store)
    assert running.store.consent_of(session)["share"] is True  # type: ignore[index]

    client.predict(api_name="/consent_private")
    assert running.store.consent_of(session)["share"] is False  # type: ignore[index]


@pytest.mark.browser
def test_the_two_choices_have_stable_ids_and_close_the_notice(launch_arena, page):  # noqa: F811
    running = launch_arena("--models", str(REPO / "models.yaml"))
    open_battle(page, running.url)
    share, private = page.locator("#consent-share"), page.locator("#consent-private")
    assert share.is_visible() and private.is_visible()
    assert "cc-by-4.0" in page.locator("#consent").inner_text()

    private.click()

    page.locator("#consent").get_by_text("you don't share").wait_for()
    assert share.is_hidden()  # the notice folds away once chosen
    page.locator("#prompt textarea").fill("Hello there")
    page.locator("#send").click()
    page.locator("#vote-a:not([disabled])").wait_for()
    [session] = battle_sessions(running.store)
    assert running.store.consent_of(session)["share"] is False  # type: ignore[index]


def test_the_delete_button_removes_the_session_battles_and_starts_afresh(launch_arena):
    running = launch_arena()
    client = running.client()
    client.predict(api_name="/consent_share")
    client.submit("Hello there", api_name="/battle_send").result(timeout=30)
    client.predict(api_name="/battle_vote_model_a")
    [session] = battle_sessions(running.store)

    outputs = client.predict(api_name="/delete_contributions")

    assert "Deleted 1 battle" in outputs[-1]
    assert battle_sessions(running.store) == [] and running.store.vote_count() == 0
    # A new battle after the deletion is a new session, still under the choice made before.
    client.submit("Hello again", api_name="/battle_send").result(timeout=30)
    [new_session] = battle_sessions(running.store)
    assert new_session != session
    assert running.store.consent_of(new_session)["share"] is True  # type: ignore[index]
