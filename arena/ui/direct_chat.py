"""The Direct chat tab: chat with one model picked by name, and give feedback on every reply.

Thin like the battle tabs: handlers turn Gradio events into `ChatService` calls, which check
everything the browser sends against the session's own chat (`arena.chat_rules`). Refusals show
as a notice under the chat, and leave what the user typed where it was. Element ids start with
``chat-``, api names with ``chat_``. A page opened with ``?conversation=<id>`` shows that chat
read-only above the tab, if its owner chose to share it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlencode, urlsplit, urlunsplit

import gradio as gr

from arena.battles import Battle
from arena.chat import ChatService, SharedChat
from arena.chat_rules import Aspect, Chat, ChatError, ChatPhase, Rating, Turn
from arena.service import Visitor
from arena.ui.battle import ClientIdentity, visitor_for
from arena.ui.consent import ConsentNotice

QUERY_PARAMETER = "conversation"
TAB_LABEL = "Direct chat"

# Opens this tab when the page was opened with a share link (the tab buttons have role "tab").
_OPEN_TAB_JS = f"""
() => {{
    if (!new URLSearchParams(window.location.search).has("{QUERY_PARAMETER}")) return;
    const tab = [...document.querySelectorAll("button[role='tab']")]
        .find((button) => button.textContent.includes("{TAB_LABEL}"));
    if (tab) tab.click();
}}
"""

_MARKS = {Rating.LIKE: "👍 liked", Rating.DISLIKE: "👎 disliked"}


def chat_messages(chat: Chat | None) -> list[dict[str, str]]:
    """The chat pane: each turn's prompt and reply (the edit, if any), with its feedback."""
    if chat is None:
        return []
    messages: list[dict[str, str]] = []
    for number, turn in enumerate(chat.turns, start=1):
        messages.append({"role": "user", "content": turn.prompt})
        latest = turn.latest
        if latest is None:
            continue
        text = chat.final_text(turn)
        if latest.reply.error is not None:
            text = f"{text}\n\n⚠️ **Error:** {latest.reply.error.message}".lstrip()
        if latest.message_id is not None:  # done streaming
            text = f"{text}\n\n*{_footer(chat, turn, number)}*"
        messages.append({"role": "assistant", "content": text})
    return messages


def _footer(chat: Chat, turn: Turn, number: int) -> str:
    assert turn.latest is not None
    feedback = chat.feedback_of(turn.latest.message_id)
    marks = [f"Reply {number}"]
    if turn.latest.stopped:
        marks.append("⏹️ stopped")
    if len(turn.attempts) > 1:
        marks.append(f"🔄 attempt {len(turn.attempts)}")
    if feedback.rating is not None:
        marks.append(_MARKS[feedback.rating])
    if feedback.edit is not None:
        marks.append("✏️ edited (the original is kept)")
    if feedback.comment is not None:
        marks.append("💬 commented")
    return " · ".join(marks)


def shared_messages(shared: SharedChat) -> list[dict[str, str]]:
    """The read-only view of a shared chat."""
    messages = []
    for message in shared.messages:
        content = message.content
        marks = [_MARKS[message.rating]] if message.rating is not None else []
        if message.edited:
            marks.append("✏️ edited by the user")
        if marks:
            content = f"{content}\n\n*{' · '.join(marks)}*"
        messages.append({"role": message.role, "content": content})
    return messages


def share_url(referer: str | None, conversation_id: str) -> str:
    """The page's address with ``?conversation=<id>``; relative when the page is unknown."""
    query = urlencode({QUERY_PARAMETER: conversation_id})
    if referer:
        parts = urlsplit(referer)
        if parts.scheme in ("http", "https") and parts.netloc:
            return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))
    return f"?{query}"


class DirectChatTab:
    """Builds the tab's components and wires their events to the service."""

    def __init__(
        self,
        service: ChatService,
        identity: ClientIdentity,
        concurrency_limit: int,
        consent: ConsentNotice,
    ) -> None:
        self._service = service
        self._identity = identity
        self._concurrency_limit = concurrency_limit
        self._consent = consent.for_direct_chat()

    def render(self) -> None:
        with gr.Column(visible=False, elem_id="chat-shared") as self.shared_box:
            self.shared_notice = gr.Markdown(elem_id="chat-shared-notice")
            self.shared_chatbot = gr.Chatbot(
                label="Shared chat (read-only)", elem_id="chat-shared-chatbot", height=360
            )
        if not self._service.offered:
            gr.Markdown(
                "The Direct chat tab needs at least one enabled model with "
                "`side_by_side: true` in `models.yaml`.",
                elem_id="chat-unavailable",
            )
            self._wire_load()
            return
        gr.Markdown(
            "Chat with one model, named. Rate any reply, edit the latest one into the answer you "
            "wanted, regenerate it, or leave a comment: each change is kept, and (if you share) "
            "published as training data. Changing the model starts a new chat."
        )
        self.chat = gr.State(None)
        self._consent.render(self.chat)
        choices = [(m.display_name, m.name) for m in self._service.offered]
        with gr.Row():
            self.model = gr.Dropdown(
                choices, value=choices[0][1], label="Model", elem_id="chat-model", scale=4
            )
            self.new = gr.Button("🆕 New chat", elem_id="chat-new", scale=1)
        self.chatbot = gr.Chatbot(label=choices[0][0], elem_id="chat-chatbot", height=480)
        self.notice = gr.Markdown(elem_id="chat-notice")
        with gr.Row():
            self.prompt = gr.Textbox(
                elem_id="chat-prompt",
                show_label=False,
                placeholder="Message the model and press Enter",
                max_lines=8,
                scale=8,
            )
            self.send = gr.Button("Send", elem_id="chat-send", variant="primary", scale=1)
            self.stop = gr.Button("⏹️ Stop", elem_id="chat-stop", interactive=False, scale=1)
        with gr.Group(), gr.Row():
            self.target = gr.Dropdown(
                [],
                value=None,
                label="Feedback on",
                info="or click a reply",
                elem_id="chat-target",
                allow_custom_value=True,
                scale=2,
            )
            self.like = gr.Button("👍 Like", elem_id="chat-like", interactive=False)
            self.dislike = gr.Button("👎 Dislike", elem_id="chat-dislike", interactive=False)
            self.regenerate = gr.Button(
                "🔄 Regenerate", elem_id="chat-regenerate", interactive=False
            )
        self.status = gr.Markdown(elem_id="chat-feedback-status")
        with gr.Accordion("✏️ Edit or 💬 comment on the reply", open=False, elem_id="chat-more"):
            self.edit_text = gr.Textbox(
                label="The reply as you would have wanted it (the latest reply only)",
                lines=4,
                elem_id="chat-edit-text",
                interactive=False,
            )
            with gr.Row():
                self.edit = gr.Button("✏️ Save edit", elem_id="chat-edit", interactive=False)
                self.unedit = gr.Button(
                    "↩️ Withdraw edit", elem_id="chat-edit-withdraw", interactive=False
                )
            self.comment = gr.Textbox(
                label="Comment (an empty comment removes yours)",
                lines=2,
                elem_id="chat-comment",
                interactive=False,
            )
            self.comment_save = gr.Button(
                "💬 Save comment", elem_id="chat-comment-save", interactive=False
            )
        with gr.Row():
            self.share = gr.Button("🔗 Share link", elem_id="chat-share-link", size="sm")
            self.share_out = gr.Markdown(elem_id="chat-share-url")
        self._wire()
        self._wire_load()

    # -- rendering ------------------------------------------------------------------------------

    @property
    def _outputs(self) -> list[Any]:
        return [
            self.chat,
            self.model,
            self.new,
            self.chatbot,
            self.prompt,
            self.send,
            self.stop,
            self.regenerate,
            self.notice,
            *self._target_outputs,
        ]

    @property
    def _target_outputs(self) -> list[Any]:
        return [
            self.target,
            self.like,
            self.dislike,
            self.status,
            self.edit_text,
            self.edit,
            self.unedit,
            self.comment,
            self.comment_save,
        ]

    def _view(
        self,
        chat: Chat | None,
        *,
        clear_prompt: bool = False,
        notice: str = "",
        target: int | None = None,
        keep_inputs: bool = False,
    ) -> list[Any]:
        """Every output of the tab for this chat. The feedback row shows reply ``target`` (the
        latest when None); ``keep_inputs`` leaves the edit and comment boxes as typed."""
        phase = chat.phase if chat else ChatPhase.NEW
        streaming = phase is ChatPhase.STREAMING
        can_type = not streaming  # after the end, sending starts a new chat
        label = chat.model.display_name if chat else self.chatbot.label
        return [
            chat,
            gr.Dropdown(interactive=not streaming),
            gr.Button(interactive=not streaming),
            gr.Chatbot(value=chat_messages(chat), label=label),
            gr.Textbox(value="", interactive=can_type)
            if clear_prompt
            else gr.Textbox(interactive=can_type),
            gr.Button(interactive=can_type),
            gr.Button(interactive=streaming),
            gr.Button(interactive=phase is ChatPhase.READY and bool(chat and chat.turns)),
            notice,
            *self._target_view(chat, target, keep_inputs=keep_inputs),
        ]

    def _target_view(
        self, chat: Chat | None, target: int | None, *, keep_inputs: bool = False
    ) -> list[Any]:
        """The feedback row for reply ``target`` (the latest if None or not a reply)."""
        numbers = [
            n
            for n, turn in enumerate(chat.turns if chat else [], start=1)
            if turn.latest is not None and turn.latest.message_id is not None
        ]
        if target not in numbers:
            target = numbers[-1] if numbers else None
        ready = chat is not None and chat.phase is ChatPhase.READY and target is not None
        feedback = chat.feedback_of(chat.reply_id(target)) if ready and chat and target else None
        rating = feedback.rating if feedback else None
        latest = ready and chat is not None and target == len(chat.turns)
        if feedback is None:
            status = ""
        else:
            parts = [_MARKS[rating] if rating else "not rated"]
            if feedback.edit is not None:
                parts.append("✏️ edited")
            if feedback.comment is not None:
                parts.append(f"💬 “{feedback.comment}”")
            status = f"Reply {target}: " + " · ".join(parts)
        edit_value: dict[str, Any] = {}
        comment_value: dict[str, Any] = {}
        if not keep_inputs:
            turn = chat.turns[target - 1] if chat and target else None
            edit_value = {"value": chat.final_text(turn) if chat and turn else ""}
            comment_value = {"value": (feedback.comment or "") if feedback else ""}
        return [
            gr.Dropdown(choices=[(f"Reply {n}", n) for n in numbers], value=target),
            gr.Button(
                "👍 Liked" if rating is Rating.LIKE else "👍 Like",
                interactive=ready,
                variant="primary" if rating is Rating.LIKE else "secondary",
            ),
            gr.Button(
                "👎 Disliked" if rating is Rating.DISLIKE else "👎 Dislike",
                interactive=ready,
                variant="primary" if rating is Rating.DISLIKE else "secondary",
            ),
            status,
            gr.Textbox(interactive=latest, **edit_value),
            gr.Button(interactive=latest),
            gr.Button(interactive=latest and feedback is not None and feedback.edit is not None),
            gr.Textbox(interactive=ready, **comment_value),
            gr.Button(interactive=ready),
        ]

    # -- events ---------------------------------------------------------------------------------

    def _wire(self) -> None:
        streaming = {"concurrency_limit": self._concurrency_limit, "outputs": self._outputs}
        gr.on(
            [self.send.click, self.prompt.submit],
            self._on_send,
            inputs=[self.prompt, self.model, self.chat, self._consent.choice],
            api_name="chat_send",
            **streaming,
        )
        self.regenerate.click(
            self._on_regenerate, inputs=[self.chat], api_name="chat_regenerate", **streaming
        )
        self.stop.click(
            self._on_stop,
            inputs=[self.chat],
            outputs=[self.notice],
            api_name="chat_stop",
            concurrency_limit=self._concurrency_limit,
        )
        plain = {"outputs": self._outputs, "concurrency_limit": self._concurrency_limit}
        for button, rating in ((self.like, Rating.LIKE), (self.dislike, Rating.DISLIKE)):
            button.click(
                self._rater(rating),
                inputs=[self.target, self.chat],
                api_name=f"chat_{rating.value}",
                **plain,
            )
        self.edit.click(
            self._on_edit, inputs=[self.target, self.edit_text, self.chat], api_name="chat_edit",
            **plain,
        )  # fmt: skip
        self.unedit.click(
            self._on_unedit, inputs=[self.target, self.chat], api_name="chat_edit_withdraw",
            **plain,
        )  # fmt: skip
        self.comment_save.click(
            self._on_comment,
            inputs=[self.target, self.comment, self.chat],
            api_name="chat_comment",
            **plain,
        )
        self.target.input(
            self._on_target,
            inputs=[self.target, self.chat],
            outputs=self._target_outputs,
            api_name="chat_target",
        )
        self.chatbot.select(
            self._on_select,
            inputs=[self.chat],
            outputs=self._target_outputs,
            api_visibility="private",
        )
        gr.on(
            [self.new.click, self.model.input],
            self._on_new,
            inputs=[self.model, self.chat],
            outputs=[*self._outputs, self.share_out],
            api_name="chat_new",
        )
        self.share.click(
            self._on_share, inputs=[self.chat], outputs=[self.share_out], api_name="chat_share"
        )
        self._consent.delete_button.click(
            self._on_delete,
            inputs=[self.chat],
            outputs=[*self._outputs, self.share_out],
            api_name="chat_delete_contributions",
        )

    def _wire_load(self) -> None:
        root = gr.context.Context.root_block
        assert root is not None, "render() runs inside the app's Blocks"
        root.load(
            self._on_load,
            outputs=[self.shared_box, self.shared_notice, self.shared_chatbot],
            js=_OPEN_TAB_JS,
            api_name="chat_shared",
        )

    def _visitor(self, chat: Chat | None, request: gr.Request | None) -> Visitor:
        # visitor_for reads only the state's session_id, which a Chat has like a Battle.
        return visitor_for(cast(Battle | None, chat), request, self._identity)

    async def _on_send(
        self,
        prompt: str,
        model: str,
        chat: Chat | None,
        consent: bool | None,
        request: gr.Request,
    ) -> AsyncIterator[list[Any]]:
        if not isinstance(prompt, str) or not prompt.strip():
            yield self._view(chat)
            return
        visitor = self._visitor(chat, request)
        try:
            if chat is None:
                # The session gets its id now: record the choice made before it had one.
                self._consent.record(visitor.session_id, consent)
            if chat is None or chat.model.name != model or chat.phase is ChatPhase.ENDED:
                if chat is not None and chat.phase is not ChatPhase.ENDED:
                    self._service.end(chat, visitor)
                chat = self._service.new_chat(visitor, model)
            updates = self._service.send(chat, prompt, visitor)
            first = await anext(updates)
        except ChatError as error:
            # Keep the text in the box: nothing was sent.
            yield self._view(chat, notice=f"⚠️ {error}", keep_inputs=True)
            return
        yield self._view(first, clear_prompt=True)
        async for update in updates:
            yield self._view(update)

    async def _on_regenerate(
        self, chat: Chat | None, request: gr.Request
    ) -> AsyncIterator[list[Any]]:
        if chat is None:
            yield self._view(None, notice="⚠️ Nothing to regenerate yet: send a message first.")
            return
        visitor = self._visitor(chat, request)
        try:
            updates = self._service.regenerate(chat, visitor)
            first = await anext(updates)
        except ChatError as error:
            yield self._view(chat, notice=f"⚠️ {error}", keep_inputs=True)
            return
        yield self._view(first)
        async for update in updates:
            yield self._view(update)

    async def _on_stop(self, chat: Chat | None, request: gr.Request) -> Any:
        if chat is None:
            return gr.skip()
        try:
            await self._service.stop(chat, self._visitor(chat, request))
        except ChatError as error:
            return f"⚠️ {error}"
        return gr.skip()  # the stream shows the stopped reply itself

    def _feedback(
        self,
        target: Any,
        chat: Chat | None,
        request: gr.Request,
        act: Any,
        done: str,
        *,
        refill: bool = False,
    ) -> list[Any]:
        """Run one feedback action on reply ``target``. The edit and comment boxes keep what was
        typed (a rating does not wipe an edit being written), unless ``refill`` on success."""
        number = _number(target)
        if chat is None:
            return self._view(None, notice="⚠️ There is no reply to give feedback on yet.")
        try:
            act(self._visitor(chat, request), chat.reply_id(number))
        except ChatError as error:
            return self._view(chat, notice=f"⚠️ {error}", target=number, keep_inputs=True)
        return self._view(chat, notice=done, target=number, keep_inputs=not refill)

    def _rater(self, rating: Rating) -> Any:
        def on_rate(target: Any, chat: Chat | None, request: gr.Request) -> list[Any]:
            return self._feedback(
                target,
                chat,
                request,
                lambda visitor, message: self._service.rate(chat, visitor, message, rating),
                "Thanks: your rating is saved.",
            )

        return on_rate

    def _on_edit(self, target: Any, text: str, chat: Chat | None, request: gr.Request):
        return self._feedback(
            target,
            chat,
            request,
            lambda visitor, message: self._service.feedback(
                chat, visitor, message, Aspect.EDIT, text if isinstance(text, str) else ""
            ),
            "✏️ Your edit is saved: the chat goes on from it, and the original is kept.",
            refill=True,
        )

    def _on_unedit(self, target: Any, chat: Chat | None, request: gr.Request):
        return self._feedback(
            target,
            chat,
            request,
            lambda visitor, message: self._service.feedback(
                chat, visitor, message, Aspect.EDIT, None
            ),
            "↩️ Your edit is withdrawn: the chat goes on from the model's reply.",
            refill=True,
        )

    def _on_comment(self, target: Any, text: str, chat: Chat | None, request: gr.Request):
        return self._feedback(
            target,
            chat,
            request,
            lambda visitor, message: self._service.feedback(
                chat, visitor, message, Aspect.COMMENT, text if isinstance(text, str) else None
            ),
            "💬 Your comment is saved.",
        )

    def _on_target(self, target: Any, chat: Chat | None) -> list[Any]:
        return self._target_view(chat, _number(target))

    def _on_select(self, chat: Chat | None, event: gr.SelectData) -> list[Any]:
        index = event.index if isinstance(event.index, int) else None
        return self._target_view(chat, index // 2 + 1 if index is not None else None)

    def _on_new(self, model: str, chat: Chat | None, request: gr.Request) -> list[Any]:
        notice = ""
        if chat is not None:
            visitor = self._visitor(chat, request)
            if chat.phase is ChatPhase.STREAMING:
                return [*self._view(chat, notice="⚠️ Stop the reply first."), gr.skip()]
            try:
                fresh = self._service.new_chat(visitor, model)
            except ChatError as error:
                return [*self._view(chat, notice=f"⚠️ {error}"), gr.skip()]
            if chat.turns:
                self._service.end(chat, visitor)
                notice = "A new chat started; the last one is kept."
            chat = fresh  # the same session goes on: its data-sharing choice stays
        view = self._view(chat, clear_prompt=True, notice=notice)
        if chat is None:
            label = dict((m.name, m.display_name) for m in self._service.offered).get(model)
            view[3] = gr.Chatbot(value=[], label=label or "Model")
        return [*view, ""]

    def _on_share(self, chat: Chat | None, request: gr.Request) -> str:
        try:
            conversation_id = self._service.share_id(chat, self._visitor(chat, request))
        except ChatError as error:
            return f"⚠️ {error}"
        url = share_url(request.headers.get("referer") if request else None, conversation_id)
        return f"🔗 Read-only link to this chat: [{url}]({url})"

    def _on_delete(self, chat: Chat | None, request: gr.Request) -> list[Any]:
        visitor = self._visitor(chat, request)
        notice = self._consent.delete(visitor.session_id, visitor.username)
        # The chat on screen is gone with the rest: start afresh, in a new session.
        return [*self._view(None, clear_prompt=True, notice=notice), ""]

    def _on_load(self, request: gr.Request) -> list[Any]:
        wanted = request.query_params.get(QUERY_PARAMETER) if request else None
        if wanted is None:
            return [gr.Column(visible=False), "", []]
        shared = self._service.shared(wanted)
        if shared is None:
            return [
                gr.Column(visible=True),
                "⚠️ There is no shared chat at this link: the link is wrong, or its owner "
                "did not share it (or deleted it).",
                gr.Chatbot(value=[], visible=False),
            ]
        return [
            gr.Column(visible=True),
            f"A chat with **{shared.model}**, shared by its author (read-only; personal data "
            "replaced by placeholders).",
            gr.Chatbot(value=shared_messages(shared), visible=True),
        ]


def _number(target: Any) -> int | None:
    """The reply number the dropdown (or a raw call) sent, or None."""
    if isinstance(target, bool):
        return None
    if isinstance(target, int):
        return target
    if isinstance(target, float) and target.is_integer():
        return int(target)
    if isinstance(target, str) and target.strip().isdigit():
        return int(target.strip())
    return None
