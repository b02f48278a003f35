"""The direct-chat service: one model, many turns, per-message feedback. What the Direct chat tab
calls.

The UI holds one `Chat` per browser session (server-side Gradio state) and passes it in; every
rule about what may happen next lives in `arena.chat_rules`, and every write goes through
`arena.store`, which checks ownership once more in the statement that writes. Replies stream
from the same `arena.clients.ModelClient` as battles; Stop ends a stream and keeps what arrived.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing, suppress
from dataclasses import dataclass, field

from arena.chat_rules import (
    Aspect,
    Attempt,
    Chat,
    ChatError,
    ChatLimits,
    ChatPhase,
    Feedback,
    FeedbackEvent,
    Rating,
    Turn,
    fold,
    rating_after_press,
)
from arena.config import ModelEntry, Registry
from arena.pii import scrub
from arena.replies import Reply
from arena.service import UPDATE_INTERVAL_S, StreamingClient, Visitor
from arena.store import RecordRejected, Store

log = logging.getLogger(__name__)

STOPPED = "stopped"
"""The stored finish_reason of a reply the user stopped (stored with finished false)."""


@dataclass(frozen=True)
class SharedMessage:
    role: str
    content: str
    """Scrubbed of personal data, as the dataset publishes it; an edited reply reads as edited."""
    rating: Rating | None = None
    edited: bool = False


@dataclass(frozen=True)
class SharedChat:
    """A direct chat as its read-only link shows it."""

    conversation_id: str
    model: str
    """The model's display name (its id if it left the registry)."""
    messages: list[SharedMessage] = field(default_factory=list)


class ChatService:
    """Direct chats with the models offered by name (those of the Side-by-side tab)."""

    def __init__(
        self,
        registry: Registry,
        store: Store,
        clients: Mapping[str, StreamingClient],
        limits: ChatLimits,
        update_interval_s: float = UPDATE_INTERVAL_S,
    ) -> None:
        self.offered = registry.side_by_side
        missing = sorted({m.name for m in self.offered} - set(clients))
        if missing:
            raise ValueError(f"no client for direct-chat models {missing}")
        self._registry = registry
        self._store = store
        self._clients = clients
        self.limits = limits
        self._update_interval_s = update_interval_s
        self._running: dict[str, _Running] = {}
        """Per session id, its running stream (what Stop signals)."""

    # -- chats ----------------------------------------------------------------------------------

    def new_chat(self, visitor: Visitor, model: str) -> Chat:
        """An empty chat with ``model`` (by name); stored when the first message is sent.

        An unknown, disabled or hidden model gets the same answer, so that the error does not
        tell whether a hidden model exists.
        """
        entry = self._entry(model)
        return Chat(session_id=visitor.session_id, model=entry)

    def _entry(self, name: object) -> ModelEntry:
        for entry in self.offered:
            if entry.name == name:
                return entry
        raise ChatError(f"There is no model {name!r} to chat with.")

    def end(self, chat: Chat, visitor: Visitor) -> None:
        """The user leaves the chat (New chat, another model): it is closed to changes and may be
        exported. A chat that is streaming is stopped first by the caller."""
        self._check_owner(chat, visitor)
        if chat.conversation_id is not None and chat.phase is not ChatPhase.STREAMING:
            self._store.end_conversation(chat.conversation_id, session_id=visitor.session_id)
        chat.phase = ChatPhase.ENDED

    async def send(self, chat: Chat, prompt: str, visitor: Visitor) -> AsyncIterator[Chat]:
        """Send a user message and stream the reply.

        Raises `ChatError` before the first update if the chat cannot take this message.
        """
        self._check_owner(chat, visitor)
        chat.check_can_send(prompt, self.limits)
        await asyncio.to_thread(self._check_not_locked, chat)
        if chat.conversation_id is None:
            await asyncio.to_thread(self._open, chat, visitor)
        assert chat.conversation_id is not None
        await asyncio.to_thread(
            self._store.add_user_message,
            chat.conversation_id,
            turn=len(chat.turns),
            content=prompt,
        )
        chat.turns.append(Turn(prompt=prompt))
        async for update in self._stream(chat):
            yield update

    async def regenerate(self, chat: Chat, visitor: Visitor) -> AsyncIterator[Chat]:
        """Ask again for the latest turn; the replaced reply stays in the store (and in the
        dataset, as a rejected alternative)."""
        self._check_owner(chat, visitor)
        chat.check_can_regenerate(self.limits)
        await asyncio.to_thread(self._check_not_locked, chat)
        async for update in self._stream(chat):
            yield update

    async def stop(self, chat: Chat, visitor: Visitor) -> bool:
        """Ask the session's running stream to stop; False if nothing is streaming."""
        self._check_owner(chat, visitor)
        running = self._running.get(visitor.session_id)
        if running is None:
            return False
        running.stop()
        return True

    # -- feedback -------------------------------------------------------------------------------

    def rate(self, chat: Chat, visitor: Visitor, message_id: str, pressed: Rating) -> Chat:
        """Like or dislike (pressing the current rating again withdraws it)."""
        current = chat.feedback_of(message_id).rating if message_id else None
        return self.feedback(
            chat, visitor, message_id, Aspect.RATING, rating_after_press(current, Rating(pressed))
        )

    def feedback(
        self,
        chat: Chat,
        visitor: Visitor,
        message_id: str,
        aspect: Aspect | str,
        value: str | None,
    ) -> Chat:
        """Store one change of feedback (``value`` None withdraws it); `ChatError` if refused."""
        self._check_owner(chat, visitor)
        value = chat.check_feedback(message_id, aspect, value, self.limits)
        assert chat.conversation_id is not None, "a chat with replies is stored"
        try:
            self._store.add_feedback(
                chat.conversation_id,
                session_id=visitor.session_id,
                message_id=message_id,
                aspect=Aspect(aspect).value,
                value=value,
            )
        except RecordRejected as rejected:
            self._check_not_locked(chat)
            raise ChatError(f"That feedback was refused: {rejected}") from None
        chat.apply_feedback(message_id, aspect, value)
        return chat

    # -- sharing --------------------------------------------------------------------------------

    def share_id(self, chat: Chat | None, visitor: Visitor) -> str:
        """The id a read-only link names, if this chat may be shown to others (its session chose
        to share); `ChatError` says why not."""
        if chat is None or chat.conversation_id is None:
            raise ChatError("Send a message first: there is no chat to share yet.")
        self._check_owner(chat, visitor)
        consent = self._store.consent_of(visitor.session_id)
        if consent is None or not consent["share"]:
            raise ChatError(
                "Only chats you share can be linked to: choose **Share** in the data-sharing "
                "notice above, then ask for the link again."
            )
        return chat.conversation_id

    def shared(self, conversation_id: object) -> SharedChat | None:
        """A shared direct chat for its read-only view, scrubbed like the dataset; None for any
        id that is not one (unknown, not a direct chat, not shared): the caller cannot tell."""
        if not isinstance(conversation_id, str) or not 0 < len(conversation_id) <= 100:
            return None
        found = self._store.shared_direct_chat(conversation_id)
        if found is None:
            return None
        state = fold(
            FeedbackEvent(e["message_id"], Aspect(e["aspect"]), e["value"])
            for e in self._store.feedback_events(conversation_id)
        )
        messages = []
        for message in found["messages"]:
            current = state.get(message["id"], Feedback())
            text = current.edit if current.edit is not None else message["content"]
            messages.append(
                SharedMessage(
                    role=message["role"],
                    content=scrub(text),
                    rating=current.rating,
                    edited=current.edit is not None,
                )
            )
        try:
            model = self._registry.get(found["model"]).display_name
        except (KeyError, ValueError):
            model = found["model"]
        return SharedChat(conversation_id, model, messages)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _check_owner(chat: Chat, visitor: Visitor) -> None:
        if chat.session_id != visitor.session_id:
            raise ChatError("This chat belongs to another session.")

    def _check_not_locked(self, chat: Chat) -> None:
        """The store may have closed the chat (exported after a long pause): say so."""
        if chat.conversation_id is None:
            return
        reason = self._store.direct_lock(chat.conversation_id, chat.session_id)
        if reason is not None:
            chat.phase = ChatPhase.ENDED
            if "published" in reason:
                raise ChatError(
                    "This chat was left unused for a while and has been published to the "
                    "dataset as it was; it takes no more changes. Start a new chat."
                )
            raise ChatError("This chat has ended and takes no more changes. Start a new chat.")

    def _open(self, chat: Chat, visitor: Visitor) -> None:
        self._store.record_session(
            visitor.session_id, ip_hash=visitor.ip_hash, username=visitor.username
        )
        chat.conversation_id = self._store.start_conversation(
            session_id=visitor.session_id, mode="direct", model=chat.model.name
        )

    async def _stream(self, chat: Chat) -> AsyncIterator[Chat]:
        """Stream a new attempt of the latest turn, yielding at most every update interval."""
        turn_index = len(chat.turns) - 1
        turn = chat.turns[turn_index]
        attempt = Attempt(Reply(model=chat.model.name))
        attempt_index = len(turn.attempts)
        messages = chat.request_messages()
        turn.attempts.append(attempt)
        chat.phase = ChatPhase.STREAMING
        running = self._running[chat.session_id] = _Running()
        client = self._clients[chat.model.name]
        started = asyncio.get_running_loop().time()

        async def pump() -> None:
            try:
                async with aclosing(client.stream(messages)) as stream:
                    async for reply in stream:
                        attempt.reply = reply
                        running.changed.set()
            finally:
                running.changed.set()  # the loop sees the stream end, even by an exception

        task = asyncio.create_task(pump())
        recorded = False
        try:
            while not task.done():
                # One wake per interval at most, whatever the number of tokens or Stops.
                await running.changed.wait()
                running.changed.clear()
                if running.stopping and not task.done():
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
                    attempt.stopped = True
                    attempt.reply = _stopped(
                        attempt.reply, asyncio.get_running_loop().time() - started
                    )
                    break
                yield chat
                await asyncio.sleep(self._update_interval_s)
            if not attempt.stopped:
                task.result()
            await asyncio.to_thread(self._record, chat, turn_index, attempt_index, attempt)
            recorded = True
        finally:
            task.cancel()  # the reader may have left mid-wait
            if self._running.get(chat.session_id) is running:
                del self._running[chat.session_id]
            if not recorded:
                # A reader who leaves mid-stream still leaves a record of what was generated.
                try:
                    self._record(chat, turn_index, attempt_index, attempt)
                except Exception:
                    log.exception("could not store the reply of chat %s", chat.conversation_id)
            chat.phase = ChatPhase.READY
        yield chat

    def _record(self, chat: Chat, turn: int, attempt_index: int, attempt: Attempt) -> None:
        assert chat.conversation_id is not None
        attempt.message_id = self._store.add_reply(
            chat.conversation_id,
            turn=turn,
            attempt=attempt_index,
            reply=attempt.reply,
            parameters={"model_id": chat.model.model_id, **chat.model.parameters.model_dump()},
        )


def _stopped(reply: Reply, elapsed_s: float) -> Reply:
    """The reply as it stood when the user pressed Stop."""
    return Reply(
        model=reply.model,
        text=reply.text,
        tokens=reply.tokens,
        ttft_s=reply.ttft_s,
        total_s=elapsed_s,
        finish_reason=STOPPED,
        error=None,
        finished=False,
    )


class _Running:
    """A session's running stream: the event its loop waits on, set by each token, by the
    stream's end and by Stop."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        self.changed.set()
