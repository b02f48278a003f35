"""The Battle tab: two anonymous models answer the same prompt; the user votes, then names appear.

Thin by design: handlers turn Gradio events into `BattleService` calls and render the battle the
service returns. Element ids are stable for tests and automation.
"""

from __future__ import annotations

import uuid
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


class BattleTab:
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

    def _view(
        self, battle: Battle | None, *, clear_prompt: bool = False, notice: str = ""
    ) -> list[Any]:
        """Every output of the tab for this battle state; the prompt's text is kept unless
        ``clear_prompt`` (it is sent, or a new round starts)."""
        phase = battle.phase if battle else Phase.NEW
        side_a, side_b = battle.sides if battle and battle.sides else (None, None)
        label_a, label_b = _labels(battle) if battle else ("Model A", "Model B")
        can_type = phase in (Phase.NEW, Phase.READY)
        return [
            battle,
            gr.Chatbot(value=pane(side_a, battle) if battle else [], label=label_a),
            gr.Chatbot(value=pane(side_b, battle) if battle else [], label=label_b),
            gr.Textbox(value="", interactive=can_type)
            if clear_prompt
            else gr.Textbox(interactive=can_type),
            gr.Button(interactive=can_type),
            *[gr.Button(interactive=phase is Phase.READY) for _ in self.votes],
            gr.Button(interactive=phase in (Phase.READY, Phase.FAILED)),
            _reveal(battle) if battle and phase is Phase.VOTED else "",
            notice,
        ]

    def _wire(self) -> None:
        streaming = {"concurrency_limit": self._concurrency_limit, "outputs": self._outputs}
        gr.on(
            [self.send.click, self.prompt.submit],
            self._on_send,
            inputs=[self.prompt, self.battle, self._consent.choice],
            api_name="battle_send",
            **streaming,
        )
        self.regenerate.click(
            self._on_regenerate, inputs=[self.battle], api_name="battle_regenerate", **streaming
        )
        for button, (_, _, winner) in zip(self.votes, VOTE_BUTTONS, strict=True):
            button.click(
                self._vote_handler(winner),
                inputs=[self.battle],
                outputs=self._outputs,
                api_name=f"battle_vote_{winner.name.lower()}",
            )
        self.new_round.click(
            self._on_new_round, inputs=[self.battle], outputs=self._outputs, api_name="battle_new"
        )
        self._consent.delete_button.click(
            self._on_delete,
            inputs=[self.battle],
            outputs=self._outputs,
            api_name="delete_contributions",
        )

    async def _on_send(
        self, prompt: str, battle: Battle | None, consent: bool | None, request: gr.Request
    ) -> AsyncIterator[list[Any]]:
        if not prompt or not prompt.strip():
            yield self._view(battle)
            return
        visitor = visitor_for(battle, request, self._identity)
        if battle is None:
            # The session gets its id now: record the choice made before it had one.
            self._consent.record(visitor.session_id, consent)
            battle = self._service.new_battle(visitor)
        updates = self._service.send(battle, prompt, visitor)
        try:
            first = await anext(updates)
        except BattleError as error:
            # Keep the text in the box: nothing was sent, the user may shorten it.
            yield self._view(battle, notice=f"⚠️ {error}")
            return
        yield self._view(first, clear_prompt=True)
        async for update in updates:
            yield self._view(update)

    async def _on_regenerate(
        self, battle: Battle | None, request: gr.Request
    ) -> AsyncIterator[list[Any]]:
        if battle is None:
            raise gr.Error("Nothing to regenerate yet: send a message first.")
        visitor = visitor_for(battle, request, self._identity)
        try:
            async for update in self._service.regenerate(battle, visitor):
                yield self._view(update)
        except BattleError as error:
            raise gr.Error(str(error)) from None

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

    def _on_new_round(self, battle: Battle | None, request: gr.Request) -> list[Any]:
        visitor = visitor_for(battle, request, self._identity)
        return self._view(self._service.new_battle(visitor), clear_prompt=True)
