"""The data-sharing notice above the battle (and the direct chat): share or don't share, and
delete what was shared.

Nothing a visitor writes is published unless the session chose "share" under the current terms;
before any choice the session counts as "don't share". The choice waits in server-side state
until the session has an id (its first message), and is recorded at once if it already has one.
Element ids ``consent-share`` and ``consent-private`` are stable, for tests and automation; a
notice made by `ConsentNotice.for_direct_chat` has the same ids prefixed ``chat-`` (and api names
prefixed ``chat_``), and wording about chats and feedback instead of battles and votes; one made
by `ConsentNotice.for_side_by_side`, the battle wording with ids prefixed ``sbs-``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from arena.export.terms import TERMS_VERSION
from arena.store import Store


def terms(license_id: str, *, direct_chat: bool = False) -> str:
    """The notice shown before the first message (of a battle, or of a direct chat)."""
    if direct_chat:
        return (
            "**Help build an open dataset.** If you choose **Share**, your messages, the model's "
            "replies, and your feedback on them (likes, dislikes, edits, regenerations, comments) "
            "are published in a public dataset on the Hugging Face Hub under the "
            f"**{license_id}** licence, for anyone to train and evaluate models on, and you can "
            "give others a read-only link to your chat. Before publishing, emails, phone "
            "numbers, IP addresses, card numbers, IBANs, keys and tokens are replaced by "
            "placeholders such as `<EMAIL>`; your IP address, session and username are never "
            "published.\n\n"
            "If you choose **Don't share** (or choose nothing), you can still chat and give "
            "feedback: none of it is ever published. "
            f"Terms version {TERMS_VERSION}."
        )
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

    def __init__(
        self, store: Store, license_id: str, *, ids: str = "", direct_chat: bool = False
    ) -> None:
        self._store = store
        self._license_id = license_id
        self._direct_chat = direct_chat
        self._ids = ids
        """Prefix of element ids (and, with ``_`` for ``-``, of api names)."""

    def for_direct_chat(self) -> ConsentNotice:
        """The same notice for the Direct chat tab: its own ids, wording and state."""
        return ConsentNotice(self._store, self._license_id, ids="chat-", direct_chat=True)

    def for_side_by_side(self) -> ConsentNotice:
        """The same notice for the Side-by-side tab (a battle, named): its own ids and state."""
        return ConsentNotice(self._store, self._license_id, ids="sbs-")

    def render(self, battle: gr.State) -> None:
        """Build the notice; ``battle`` is the tab's state (a battle or a direct chat, or None),
        read for its ``session_id``."""
        ids, api = self._ids, self._ids.replace("-", "_")
        self.choice = gr.State(None)
        """The session's choice (True: share) until it has an id to record it under."""
        with gr.Accordion(_label(None), open=True, elem_id=f"{ids}consent") as self.box:
            gr.Markdown(terms(self._license_id, direct_chat=self._direct_chat))
            with gr.Row():
                share = gr.Button("🤝 Share", elem_id=f"{ids}consent-share", variant="primary")
                private = gr.Button("🔒 Don't share", elem_id=f"{ids}consent-private")
            what = "chats" if self._direct_chat else "battles"
            gr.Markdown(
                f"Changed your mind? Deleting removes your {what} of this browser session (all "
                "of your sessions when you are logged in) from the arena at once, and from the "
                "published dataset at its next compaction."
            )
            self.delete_button = gr.Button(
                "🗑️ Delete my contributions", elem_id=f"{ids}delete-contributions", size="sm"
            )
        for button, value in ((share, True), (private, False)):
            button.click(
                self._chooser(value),
                inputs=[battle],
                outputs=[self.choice, self.box],
                api_name=f"{api}consent_{'share' if value else 'private'}",
            )

    def _chooser(self, share: bool) -> Any:
        def choose(state: Any) -> tuple[bool, gr.Accordion]:
            if state is not None:
                self.record(state.session_id, share)
            return share, gr.Accordion(label=_label(share), open=False)

        return choose

    def delete(self, session_id: str, username: str | None) -> str:
        """Delete the visitor's contributions; returns the notice to show."""
        count = self._store.delete_contributions(session_id=session_id, username=username)
        if self._direct_chat:
            return (
                "🗑️ Deleted your chats of this session"
                + (f" and {count} battle(s)" if count else "")
                + " from the arena. Chats that were published are listed as deleted in the next "
                "export and disappear from the published dataset at its next compaction."
            )
        if not count:
            return "🗑️ There was nothing of yours to delete."
        return (
            f"🗑️ Deleted {count} battle(s) from the arena. They are listed as deleted in the "
            "next export and disappear from the published dataset at its next compaction."
        )

    def record(self, session_id: str, share: bool | None) -> None:
        """Record a choice (None: no choice, nothing to do). The battle tabs pass a choice made
        before the session had an id to `BattleService.send` instead, which writes it with the
        session's battle."""
        if share is not None:
            self._store.record_consent(session_id, share=share, terms_version=TERMS_VERSION)
