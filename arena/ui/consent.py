"""The data-sharing notice above the battle: share or don't share, and delete what was shared.

Nothing a visitor writes is published unless the session chose "share" under the current terms;
before any choice the session counts as "don't share". The choice waits in server-side state
until the session has an id (its first message), and is recorded at once if it already has one.
Element ids ``consent-share`` and ``consent-private`` are stable, for tests and automation.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from arena.battles import Battle
from arena.export.terms import TERMS_VERSION
from arena.store import Store


def terms(license_id: str) -> str:
    """The notice shown before the first message."""
    return (
        "**Help build an open dataset.** If you choose **Share**, your messages, both models' "
        "replies, your vote and its time are published in a public dataset on the Hugging Face "
        f"Hub under the **{license_id}** licence, for anyone to train and evaluate models on. "
        "Before publishing, emails, phone numbers, IP addresses, card numbers, IBANs, keys and "
        "tokens are replaced by placeholders such as `<EMAIL>`; your IP address, session and "
        "username are never published (your votes carry a pseudonym).\n\n"
        "If you choose **Don't share** (or choose nothing), you can still chat and vote: your "
        "text is never published, and your vote counts in the public leaderboard without text. "
        f"Terms version {TERMS_VERSION}."
    )


def _label(choice: bool | None) -> str:
    if choice is None:
        return "🔒 Data sharing: not chosen yet (nothing you write is published)"
    if choice:
        return "🤝 Data sharing: you share your conversations (open to change)"
    return "🔒 Data sharing: you don't share your conversations (open to change)"


class ConsentNotice:
    """The notice, its two choices, and where each choice is recorded."""

    def __init__(self, store: Store, license_id: str) -> None:
        self._store = store
        self._license_id = license_id

    def render(self, battle: gr.State) -> None:
        """Build the notice; ``battle`` is the Battle tab's state, read for the session id."""
        self.choice = gr.State(None)
        """The session's choice (True: share) until it has an id to record it under."""
        with gr.Accordion(_label(None), open=True, elem_id="consent") as self.box:
            gr.Markdown(terms(self._license_id))
            with gr.Row():
                share = gr.Button("🤝 Share", elem_id="consent-share", variant="primary")
                private = gr.Button("🔒 Don't share", elem_id="consent-private")
            gr.Markdown(
                "Changed your mind? Deleting removes your battles of this browser session (all "
                "of your sessions when you are logged in) from the arena at once, and from the "
                "published dataset at its next compaction."
            )
            self.delete_button = gr.Button(
                "🗑️ Delete my contributions", elem_id="delete-contributions", size="sm"
            )
        for button, value in ((share, True), (private, False)):
            button.click(
                self._chooser(value),
                inputs=[battle],
                outputs=[self.choice, self.box],
                api_name=f"consent_{'share' if value else 'private'}",
            )

    def _chooser(self, share: bool) -> Any:
        def choose(battle: Battle | None) -> tuple[bool, gr.Accordion]:
            if battle is not None:
                self.record(battle.session_id, share)
            return share, gr.Accordion(label=_label(share), open=False)

        return choose

    def delete(self, session_id: str, username: str | None) -> str:
        """Delete the visitor's contributions; returns the notice to show."""
        count = self._store.delete_contributions(session_id=session_id, username=username)
        if not count:
            return "🗑️ There was nothing of yours to delete."
        return (
            f"🗑️ Deleted {count} battle(s) from the arena. They are listed as deleted in the "
            "next export and disappear from the published dataset at its next compaction."
        )

    def record(self, session_id: str, share: bool | None) -> None:
        """Record a choice made before the session had an id (None: no choice, nothing to do)."""
        if share is not None:
            self._store.record_consent(session_id, share=share, terms_version=TERMS_VERSION)
