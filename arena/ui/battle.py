"""The Battle tab: two anonymous models answer the same prompt; the user votes, then names appear.

Thin by design: handlers turn Gradio events into `BattleService` calls and render the battle the
service returns. Element ids are stable for tests and automation.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from arena.battles import Battle, BattleError, Phase, Side
from arena.privacy import client_ip, hash_ip
from arena.replies import Reply
from arena.service import BattleService, Visitor
from arena.ui.consent import ConsentNotice
from arena.votes import Winner

VOTE_BUTTONS = (
    ("vote-a", "👈 A is better", Winner.MODEL_A),
    ("vote-b", "👉 B is better", Winner.MODEL_B),
    ("vote-tie", "🤝 Tie", Winner.TIE),
    ("vote-bothbad", "👎 Both are bad", Winner.BOTH_BAD),
)
VOTE_LABELS = {winner: label for _, label, winner in VOTE_BUTTONS}


@dataclass(frozen=True)
class ClientIdentity:
    """How to tell visitors apart: the store's salt, and the proxies in front of the app."""

    ip_salt: str
    proxy_hops: int = 0


def visitor_for(
    battle: Battle | None, request: gr.Request | None, identity: ClientIdentity
) -> Visitor:
    """The acting visitor. The session id lives in server-side state, never sent by the browser."""
    session_id = battle.session_id if battle else str(uuid.uuid4())
    ip = None
    username = None
    if request is not None:
        ip = client_ip(
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-for"),
            identity.proxy_hops,
        )
        username = getattr(request, "username", None)
    return Visitor(
        session_id=session_id,
        ip_hash=hash_ip(ip, identity.ip_salt) if ip else None,
        username=username,
    )


def pane(side: Side | None, battle: Battle) -> list[dict[str, str]]:
    """Chat messages of one side: finished turns, the current prompt and the reply so far."""
    if side is None:
        return []
    messages: list[dict[str, str]] = list(side.history)
    if battle.prompts:
        messages.append({"role": "user", "content": battle.prompts[-1]})
    if side.reply is not None:
        messages.append({"role": "assistant", "content": _reply_text(side.reply)})
    return messages


def rendered(chatbot: gr.Chatbot, messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """``messages`` as the browser takes them, i.e. what Gradio's postprocess would send.

    The tabs' events run with ``postprocess=False`` and pass these: a streamed update then costs
    a dict per message, where Gradio would postprocess every output in a worker thread.
    """
    return chatbot.postprocess(messages).model_dump()


Controls = dict[gr.Component, tuple[Any, bool]]
"""A tab's prompt box, buttons and pickers: each one's value, and whether it takes input."""


class ShownControls:
    """Which controls take input in the browser, so that a stream updates only what changes.

    A property update (``gr.update``, ``gr.skip()``, a component) makes Gradio build a new
    component for the session, and its config: about 1 ms for a button, 8 ms for a chatbot. A
    plain value changes nothing but the value. So a stream sends property updates only where
    the interactivity changes: when it starts (locked) and when it ends (unlocked).
    """

    def __init__(self, controls: Controls) -> None:
        self._interactive = {component: on for component, (_, on) in controls.items()}

    def view(self, controls: Controls) -> list[Any]:
        """The outputs for ``controls``, in order; from now on the browser shows these."""
        outputs = []
        for component, (value, interactive) in controls.items():
            if self._interactive[component] == interactive:
                outputs.append(value)
            else:
                outputs.append(gr.update(value=value, interactive=interactive))
                self._interactive[component] = interactive
        return outputs


def kept(battle: Battle, first: bool) -> Battle | dict[str, Any]:
    """The battle state output of a streamed update. Gradio rebuilds a state's config each
    time it is set; the battle changes in place, so setting it when the stream starts (it may
    be a new battle) and when it ends is enough, and the updates between skip it (``gr.skip()``
    costs nothing for a state: no component is rebuilt)."""
    return battle if first or battle.phase is not Phase.STREAMING else gr.skip()


def _reply_text(reply: Reply) -> str:
    if reply.error is None:
        return reply.text
    separator = "\n\n" if reply.text else ""
    return f"{reply.text}{separator}⚠️ **Error:** {reply.error.message}"


def _reveal(battle: Battle) -> str:
    assert battle.sides is not None and battle.winner is not None
    names = []
    for label, side in zip(("A", "B"), battle.sides, strict=True):
        demo = " — demo model" if side.model.is_demo else ""
        names.append(
            f"**Model {label}: {side.model.display_name}** ({side.model.organization}{demo})"
        )
    return (
        f"Your vote: **{VOTE_LABELS[battle.winner]}**. Thank you!\n\n"
        + " · ".join(names)
        + "\n\nPress **New round** to battle again."
    )


def _labels(battle: Battle) -> tuple[str, str]:
    if battle.phase is Phase.VOTED and battle.sides is not None:
        return battle.sides[0].model.display_name, battle.sides[1].model.display_name
    return "Model A", "Model B"


class VotingTab(ABC):
    """What the Battle and Side-by-side tabs handle alike: a vote, and deleting the session's
    contributions. A subclass sets the attributes below and renders its own ``_view``."""

    _service: BattleService
    _identity: ClientIdentity
    _consent: ConsentNotice

    @abstractmethod
    def _view(
        self, battle: Battle | None, *, clear_prompt: bool = False, notice: str = ""
    ) -> list[Any]:
        """Every output of the tab for this battle state (None: a fresh start)."""

    def _vote_handler(self, winner: Winner) -> Callable[[Battle | None, gr.Request], list[Any]]:
        def on_vote(battle: Battle | None, request: gr.Request) -> list[Any]:
            if battle is None:
                raise gr.Error("There is nothing to vote on yet: send a message first.")
            try:
                self._service.vote(battle, winner, visitor_for(battle, request, self._identity))
            except BattleError as error:
                raise gr.Error(str(error)) from None
            return self._view(battle)

        return on_vote

    def _on_delete(self, battle: Battle | None, request: gr.Request) -> list[Any]:
        visitor = visitor_for(battle, request, self._identity)
        notice = self._consent.delete(visitor.session_id, visitor.username)
        # The battle on screen is gone with the rest: start afresh, in a new session.
        return self._view(None, clear_prompt=True, notice=notice)


class BattleTab(VotingTab):
    """Builds the tab's components and wires their events to the service."""

    def __init__(
        self,
        service: BattleService,
        identity: ClientIdentity,
        concurrency_limit: int,
        consent: ConsentNotice,
    ) -> None:
        self._service = service
        self._consent = consent
        self._identity = identity
        self._concurrency_limit = concurrency_limit

    def render(self) -> None:
        gr.Markdown(
            "Two anonymous models answer your prompt side by side. Chat for a few turns, then "
            "vote for the better one; their names are revealed after your vote."
        )
        self.battle = gr.State(None)
        self._consent.render(self.battle)
        with gr.Row():
            self.chatbot_a = gr.Chatbot(label="Model A", elem_id="chatbot-a", height=480)
            self.chatbot_b = gr.Chatbot(label="Model B", elem_id="chatbot-b", height=480)
        with gr.Row():
            self.votes = [
                gr.Button(label, elem_id=elem_id, interactive=False)
                for elem_id, label, _ in VOTE_BUTTONS
            ]
        self.result = gr.Markdown(elem_id="vote-result")
        self.notice = gr.Markdown(elem_id="battle-notice")
        with gr.Row():
            self.prompt = gr.Textbox(
                elem_id="prompt",
                show_label=False,
                placeholder="Ask both models anything and press Enter",
                max_lines=8,
                scale=8,
            )
            self.send = gr.Button("Send", elem_id="send", variant="primary", scale=1)
        with gr.Row():
            self.regenerate = gr.Button("🔄 Regenerate", elem_id="regenerate", interactive=False)
            self.new_round = gr.Button("🎲 New round", elem_id="new-round")
        self._wire()

    @property
    def _outputs(self) -> list[Any]:
        return [
            self.battle,
            self.chatbot_a,
            self.chatbot_b,
            self.prompt,
            self.send,
            *self.votes,
            self.regenerate,
            self.result,
            self.notice,
        ]

    def _controls(self, phase: Phase, prompt: str) -> Controls:
        """The prompt box (showing ``prompt``) and the buttons in this phase. Each one is
        disabled while replies stream."""
        can_type = phase in (Phase.NEW, Phase.READY)
        return {
            self.prompt: (prompt, can_type),
            self.send: (self.send.value, can_type),
            **{vote: (vote.value, phase is Phase.READY) for vote in self.votes},
            self.regenerate: (self.regenerate.value, phase in (Phase.READY, Phase.FAILED)),
        }

    def _panes(self, battle: Battle | None) -> tuple[list[Any], list[Any]]:
        side_a, side_b = battle.sides if battle and battle.sides else (None, None)
        return (
            rendered(self.chatbot_a, pane(side_a, battle) if battle else []),
            rendered(self.chatbot_b, pane(side_b, battle) if battle else []),
        )

    def _view(
        self, battle: Battle | None, *, clear_prompt: bool = False, notice: str = ""
    ) -> list[Any]:
        """Every output and property of the tab for this battle state, for single updates
        (votes, new rounds, refusals); the prompt's text is kept unless ``clear_prompt`` (a new
        round starts)."""
        phase = battle.phase if battle else Phase.NEW
        label_a, label_b = _labels(battle) if battle else ("Model A", "Model B")
        pane_a, pane_b = self._panes(battle)
        controls = [
            gr.update(value=value, interactive=interactive)
            for value, interactive in self._controls(phase, "").values()
        ]
        if not clear_prompt:  # an update without a value leaves the text alone
            controls[0] = gr.update(interactive=phase in (Phase.NEW, Phase.READY))
        return [
            battle,
            gr.update(value=pane_a, label=label_a),
            gr.update(value=pane_b, label=label_b),
            *controls,
            _reveal(battle) if battle and phase is Phase.VOTED else "",
            notice,
        ]

    async def _stream(
        self, first: Battle, updates: AsyncIterator[Battle], prompt: str, before: Phase
    ) -> AsyncIterator[list[Any]]:
        """The views of a stream from its first update, in a tab last shown in phase
        ``before``; the prompt box shows ``prompt`` all along. The panes go as plain values: a
        stream never renames them (only the vote and a new round do)."""
        shown = ShownControls(self._controls(before, prompt))
        battle: Battle | None = first
        while battle is not None:
            controls = shown.view(self._controls(battle.phase, prompt))
            yield [kept(battle, battle is first), *self._panes(battle), *controls, "", ""]
            battle = await anext(updates, None)

    def _wire(self) -> None:
        # postprocess=False: the handlers send what the browser takes (see `rendered`).
        plain = {"outputs": self._outputs, "postprocess": False}
        streaming = {"concurrency_limit": self._concurrency_limit, **plain}
        gr.on(
            [self.send.click, self.prompt.submit],
            self._on_send,
            inputs=[self.prompt, self.battle, self._consent.choice],
            api_name="battle_send",
            **streaming,
        )
        # The prompt box keeps its text while a regeneration streams: the handler needs it to
        # send the box as a plain value (see `ShownControls`).
        self.regenerate.click(
            self._on_regenerate,
            inputs=[self.battle, self.prompt],
            api_name="battle_regenerate",
            **streaming,
        )
        for button, (_, _, winner) in zip(self.votes, VOTE_BUTTONS, strict=True):
            button.click(
                self._vote_handler(winner),
                inputs=[self.battle],
                api_name=f"battle_vote_{winner.name.lower()}",
                **plain,
            )
        self.new_round.click(
            self._on_new_round, inputs=[self.battle], api_name="battle_new", **plain
        )
        self._consent.delete_button.click(
            self._on_delete, inputs=[self.battle], api_name="delete_contributions", **plain
        )

    async def _on_send(
        self, prompt: str, battle: Battle | None, consent: bool | None, request: gr.Request
    ) -> AsyncIterator[list[Any]]:
        if not prompt or not prompt.strip():
            yield self._view(battle)
            return
        visitor = visitor_for(battle, request, self._identity)
        if battle is None:
            battle = self._service.new_battle(visitor)
        before = battle.phase
        # The session gets its id with its first battle: the choice made before it had one is
        # written with that battle (off the first token's path, as one write of a burst).
        updates = self._service.send(battle, prompt, visitor, share=consent)
        try:
            first = await anext(updates)
        except BattleError as error:
            # Keep the text in the box: nothing was sent, the user may shorten it.
            yield self._view(battle, notice=f"⚠️ {error}")
            return
        async for view in self._stream(first, updates, "", before):
            yield view

    async def _on_regenerate(
        self,
        battle: Battle | None,
        # Optional, so that an API call may leave it out, as before the box was an input.
        prompt: str | None = None,
        request: gr.Request | None = None,
    ) -> AsyncIterator[list[Any]]:
        if battle is None:
            raise gr.Error("Nothing to regenerate yet: send a message first.")
        visitor = visitor_for(battle, request, self._identity)
        before = battle.phase
        updates = self._service.regenerate(battle, visitor)
        try:
            first = await anext(updates)
        except BattleError as error:
            raise gr.Error(str(error)) from None
        async for view in self._stream(first, updates, prompt or "", before):
            yield view

    def _on_new_round(self, battle: Battle | None, request: gr.Request) -> list[Any]:
        visitor = visitor_for(battle, request, self._identity)
        return self._view(self._service.new_battle(visitor), clear_prompt=True)
