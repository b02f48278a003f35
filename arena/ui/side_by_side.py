"""The Side-by-side tab: two models the user picks by name answer the same prompt; same four votes.

Thin like the Battle tab, whose helpers it shares (panes, vote buttons, the visitor): handlers
turn Gradio events into `BattleService` calls, which check everything the browser sends (the
models offered here, the parameters' bounds, the vote). Named votes are stored with
``anony = false``, so the leaderboard leaves them out by default. Element ids start with
``sbs-``, api names with ``sbs_``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from arena.battles import Battle, BattleError, Phase, Sampling, max_new_tokens_cap
from arena.config import ModelEntry, Registry
from arena.service import BattleService
from arena.ui.battle import (
    VOTE_BUTTONS,
    VOTE_LABELS,
    ClientIdentity,
    Controls,
    ShownControls,
    VotingTab,
    kept,
    pane,
    rendered,
    visitor_for,
)
from arena.ui.consent import ConsentNotice


class SideBySideTab(VotingTab):
    """Builds the tab's components and wires their events to the service."""

    def __init__(
        self,
        service: BattleService,
        registry: Registry,
        identity: ClientIdentity,
        concurrency_limit: int,
        consent: ConsentNotice,
    ) -> None:
        self._service = service
        self._consent = consent.for_side_by_side()
        self._offered = registry.side_by_side
        self._identity = identity
        self._concurrency_limit = concurrency_limit

    def render(self) -> None:
        if len(self._offered) < 2:
            gr.Markdown(
                "The Side-by-side tab needs at least two enabled models with "
                "`side_by_side: true` in `models.yaml`.",
                elem_id="sbs-unavailable",
            )
            return
        gr.Markdown(
            "Pick two models and compare their answers, names shown. The vote is kept, marked as "
            "named: the leaderboard counts only anonymous battles. Changing a model starts a new "
            "round, and resets the parameters to the models' defaults."
        )
        model_a, model_b = self._offered[0], self._offered[1]
        choices = [(m.display_name, m.name) for m in self._offered]
        self.battle = gr.State(None)
        self._consent.render(self.battle)
        with gr.Row():
            self.model_a = gr.Dropdown(
                choices, value=model_a.name, label="Model A", elem_id="sbs-model-a"
            )
            self.model_b = gr.Dropdown(
                choices, value=model_b.name, label="Model B", elem_id="sbs-model-b"
            )
        defaults = Sampling.defaults(model_a, model_b)
        with gr.Row():
            self.temperature = gr.Slider(
                0.0,
                2.0,
                value=defaults.temperature,
                step=0.05,
                label="Temperature",
                info="0 always picks the likeliest token",
                elem_id="sbs-temperature",
            )
            self.top_p = gr.Slider(
                0.01,
                1.0,
                value=defaults.top_p,
                step=0.01,
                label="Top-p",
                info="1 samples from every token",
                elem_id="sbs-top-p",
            )
            self.max_new_tokens = gr.Slider(
                1,
                defaults.max_new_tokens,
                value=defaults.max_new_tokens,
                step=1,
                precision=0,
                label="Max new tokens",
                info="up to the lower of the two models' limits",
                elem_id="sbs-max-new-tokens",
            )
        with gr.Row():
            self.chatbot_a = gr.Chatbot(
                label=model_a.display_name, elem_id="sbs-chatbot-a", height=480
            )
            self.chatbot_b = gr.Chatbot(
                label=model_b.display_name, elem_id="sbs-chatbot-b", height=480
            )
        with gr.Row():
            self.votes = [
                gr.Button(label, elem_id=f"sbs-{elem_id}", interactive=False)
                for elem_id, label, _ in VOTE_BUTTONS
            ]
        self.result = gr.Markdown(elem_id="sbs-vote-result")
        self.notice = gr.Markdown(elem_id="sbs-notice")
        with gr.Row():
            self.prompt = gr.Textbox(
                elem_id="sbs-prompt",
                show_label=False,
                placeholder="Ask both models anything and press Enter",
                max_lines=8,
                scale=8,
            )
            self.send = gr.Button("Send", elem_id="sbs-send", variant="primary", scale=1)
        with gr.Row():
            self.regenerate = gr.Button(
                "🔄 Regenerate", elem_id="sbs-regenerate", interactive=False
            )
            self.new_round = gr.Button("🎲 New round", elem_id="sbs-new-round")
        self._wire()

    @property
    def _sampling_inputs(self) -> list[Any]:
        return [self.temperature, self.top_p, self.max_new_tokens]

    @property
    def _outputs(self) -> list[Any]:
        return [
            self.battle,
            self.model_a,
            self.model_b,
            self.chatbot_a,
            self.chatbot_b,
            self.prompt,
            self.send,
            *self.votes,
            self.regenerate,
            self.result,
            self.notice,
        ]

    def _controls(self, battle: Battle, phase: Phase, prompt: str) -> tuple[Controls, Controls]:
        """The model pickers (showing the battle's models), then the prompt box (showing
        ``prompt``) and the buttons, in this phase (see `BattleTab._controls`)."""
        assert battle.models is not None
        model_a, model_b = (model.name for model in battle.models)
        can_type = phase in (Phase.NEW, Phase.READY)
        # Picking another model mid-stream would race the stream for the battle state.
        can_pick = phase is not Phase.STREAMING
        pickers: Controls = {self.model_a: (model_a, can_pick), self.model_b: (model_b, can_pick)}
        rest: Controls = {
            self.prompt: (prompt, can_type),
            self.send: (self.send.value, can_type),
            **{vote: (vote.value, phase is Phase.READY) for vote in self.votes},
            self.regenerate: (self.regenerate.value, phase in (Phase.READY, Phase.FAILED)),
        }
        return pickers, rest

    def _panes(self, battle: Battle | None) -> tuple[list[Any], list[Any]]:
        side_a, side_b = battle.sides if battle and battle.sides else (None, None)
        return (
            rendered(self.chatbot_a, pane(side_a, battle) if battle else []),
            rendered(self.chatbot_b, pane(side_b, battle) if battle else []),
        )

    @staticmethod
    def _labels(battle: Battle | None) -> tuple[str, str]:
        if battle and battle.models:
            return battle.models[0].display_name, battle.models[1].display_name
        return "Model A", "Model B"

    def _view(
        self, battle: Battle | None, *, clear_prompt: bool = False, notice: str = ""
    ) -> list[Any]:
        """Every output and property of the tab for this battle state, for single updates (see
        `BattleTab._view`). Without a battle (the picked models were refused)
        the panes are empty and unnamed, and the pickers keep their choice."""
        phase = battle.phase if battle else Phase.NEW
        label_a, label_b = self._labels(battle)
        pane_a, pane_b = self._panes(battle)
        can_type = phase in (Phase.NEW, Phase.READY)
        return [
            battle,
            gr.update(interactive=phase is not Phase.STREAMING),
            gr.update(interactive=phase is not Phase.STREAMING),
            gr.update(value=pane_a, label=label_a),
            gr.update(value=pane_b, label=label_b),
            # An update without a value leaves the text alone.
            gr.update(value="", interactive=can_type)
            if clear_prompt
            else gr.update(interactive=can_type),
            gr.update(interactive=can_type),
            *[gr.update(interactive=phase is Phase.READY) for _ in self.votes],
            gr.update(interactive=phase in (Phase.READY, Phase.FAILED)),
            _thanks(battle) if battle and phase is Phase.VOTED else "",
            notice,
        ]

    async def _stream(
        self,
        first: Battle,
        updates: AsyncIterator[Battle],
        prompt: str,
        before: Phase,
        *,
        renamed: bool = False,
    ) -> AsyncIterator[list[Any]]:
        """The views of a stream from its first update, in a tab last shown in phase
        ``before``; the prompt box shows ``prompt`` all along. The panes go as plain values
        (see `BattleTab._stream`), but with their labels on the first update if ``renamed``
        (the battle's models are not the ones the tab showed)."""
        pickers, rest = self._controls(first, before, prompt)
        shown_pickers, shown_rest = ShownControls(pickers), ShownControls(rest)
        battle: Battle | None = first
        while battle is not None:
            pickers, rest = self._controls(battle, battle.phase, prompt)
            pane_a, pane_b = self._panes(battle)
            if renamed:
                label_a, label_b = self._labels(battle)
                pane_a = gr.update(value=pane_a, label=label_a)
                pane_b = gr.update(value=pane_b, label=label_b)
                renamed = False
            yield [
                kept(battle, battle is first),
                *shown_pickers.view(pickers),
                pane_a,
                pane_b,
                *shown_rest.view(rest),
                "",
                "",
            ]
            battle = await anext(updates, None)

    def _wire(self) -> None:
        # postprocess=False: the handlers send what the browser takes (see `rendered`).
        plain = {"outputs": self._outputs, "postprocess": False}
        streaming = {"concurrency_limit": self._concurrency_limit, **plain}
        gr.on(
            [self.model_a.input, self.model_b.input],
            self._on_models,
            inputs=[self.model_a, self.model_b, self.battle],
            outputs=[*self._outputs, *self._sampling_inputs],
            api_name="sbs_models",
            postprocess=False,
        )
        gr.on(
            [self.send.click, self.prompt.submit],
            self._on_send,
            inputs=[
                self.prompt,
                self.model_a,
                self.model_b,
                *self._sampling_inputs,
                self.battle,
                self._consent.choice,
            ],
            api_name="sbs_send",
            **streaming,
        )
        # The prompt box keeps its text while a regeneration streams: the handler sends it back
        # as a plain value (see `ShownControls`).
        self.regenerate.click(
            self._on_regenerate,
            inputs=[*self._sampling_inputs, self.battle, self.prompt],
            api_name="sbs_regenerate",
            **streaming,
        )
        for button, (_, _, winner) in zip(self.votes, VOTE_BUTTONS, strict=True):
            button.click(
                self._vote_handler(winner),
                inputs=[self.battle],
                api_name=f"sbs_vote_{winner.name.lower()}",
                **plain,
            )
        self.new_round.click(
            self._on_new_round,
            inputs=[self.model_a, self.model_b, self.battle],
            api_name="sbs_new",
            **plain,
        )
        self._consent.delete_button.click(
            self._on_delete, inputs=[self.battle], api_name="sbs_delete_contributions", **plain
        )

    def _on_models(
        self, model_a: str, model_b: str, battle: Battle | None, request: gr.Request
    ) -> list[Any]:
        visitor = visitor_for(battle, request, self._identity)
        try:
            fresh = self._service.new_side_by_side(visitor, model_a, model_b)
        except BattleError as error:
            return [*self._view(None, notice=f"⚠️ {error}"), gr.Slider(), gr.Slider(), gr.Slider()]
        assert fresh.models is not None
        notice = "The models changed, so a new round started." if battle and battle.turns else ""
        defaults = Sampling.defaults(*fresh.models)
        return [
            *self._view(fresh, notice=notice),
            gr.Slider(value=defaults.temperature),
            gr.Slider(value=defaults.top_p),
            gr.Slider(maximum=max_new_tokens_cap(*fresh.models), value=defaults.max_new_tokens),
        ]

    async def _on_send(
        self,
        prompt: str,
        model_a: str,
        model_b: str,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        battle: Battle | None,
        consent: bool | None,
        request: gr.Request,
    ) -> AsyncIterator[list[Any]]:
        if not prompt or not prompt.strip():
            yield self._view(battle)
            return
        visitor = visitor_for(battle, request, self._identity)
        renamed = battle is None or _names(battle.models) != (model_a, model_b)
        try:
            if renamed:
                # Other models than the battle's (a raw call, or a refused pick): a new round.
                battle = self._service.new_side_by_side(visitor, model_a, model_b)
            before = battle.phase
            # The session may have got its id from a model pick after the choice: a round's
            # first message records it with the battle, unless the session has one by then (a
            # choice made later is recorded when it is made).
            updates = self._service.send(
                battle,
                prompt,
                visitor,
                Sampling(temperature, top_p, max_new_tokens),
                share=consent,
            )
            first = await anext(updates)
        except BattleError as error:
            # Keep the text in the box: nothing was sent.
            yield self._view(battle, notice=f"⚠️ {error}")
            return
        async for view in self._stream(first, updates, "", before, renamed=renamed):
            yield view

    async def _on_regenerate(
        self,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        battle: Battle | None,
        # Optional, so that an API call may leave it out, as before the box was an input.
        prompt: str | None = None,
        request: gr.Request | None = None,
    ) -> AsyncIterator[list[Any]]:
        if battle is None:
            raise gr.Error("Nothing to regenerate yet: send a message first.")
        visitor = visitor_for(battle, request, self._identity)
        sampling = Sampling(temperature, top_p, max_new_tokens)
        before = battle.phase
        try:
            updates = self._service.regenerate(battle, visitor, sampling)
            first = await anext(updates)
        except BattleError as error:
            raise gr.Error(str(error)) from None
        async for view in self._stream(first, updates, prompt or "", before):
            yield view

    def _on_new_round(
        self, model_a: str, model_b: str, battle: Battle | None, request: gr.Request
    ) -> list[Any]:
        visitor = visitor_for(battle, request, self._identity)
        try:
            fresh = self._service.new_side_by_side(visitor, model_a, model_b)
        except BattleError as error:
            return self._view(None, clear_prompt=True, notice=f"⚠️ {error}")
        return self._view(fresh, clear_prompt=True)


def _names(models: tuple[ModelEntry, ModelEntry] | None) -> tuple[str, str] | None:
    return (models[0].name, models[1].name) if models else None


def _thanks(battle: Battle) -> str:
    assert battle.winner is not None
    return (
        f"Your vote: **{VOTE_LABELS[battle.winner]}**. Thank you! It is kept as a named vote, "
        "outside the leaderboard.\n\nPress **New round** to compare again."
    )
