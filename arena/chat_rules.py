"""Direct-chat rules, free of I/O: what may be sent, regenerated, and which feedback goes where.

A direct chat is one model, many turns. Each assistant message can be liked or disliked, edited
(the user's version becomes the preferred reply; the original stays) and commented on; the
latest reply can be regenerated (the replaced one stays as a rejected alternative). Feedback is
an append-only log of events, one per change or withdrawal; `fold` turns a log into the current
state of every message. `arena.chat` keeps one `Chat` per browser session on the server side and
asks it before every action, so nothing a browser sends can reach a message the session does not
hold, or change feedback in a way these rules do not allow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from arena.config import ModelEntry
from arena.replies import Message, Reply


class ChatError(Exception):
    """An action the chat's state does not allow; the message is shown to the user."""


@dataclass(frozen=True)
class ChatLimits:
    max_prompt_chars: int = 4000
    """Longest user message, and longest edited reply."""
    max_turns: int = 32
    max_attempts: int = 8
    """Replies to one turn, the first included: bounds what regenerating can cost."""
    max_comment_chars: int = 2000


class Aspect(StrEnum):
    RATING = "rating"  # value: "like" or "dislike"
    EDIT = "edit"  # value: the reply as the user would have it
    COMMENT = "comment"  # value: free text


class Rating(StrEnum):
    LIKE = "like"
    DISLIKE = "dislike"


@dataclass(frozen=True)
class Feedback:
    """The current feedback on one assistant message; None: not given (or withdrawn)."""

    rating: Rating | None = None
    edit: str | None = None
    comment: str | None = None

    def get(self, aspect: Aspect) -> str | None:
        return getattr(self, aspect.value)

    def with_value(self, aspect: Aspect | str, value: str | None) -> Feedback:
        aspect = Aspect(aspect)
        if aspect is Aspect.RATING and value is not None:
            return replace(self, rating=Rating(value))
        return replace(self, **{aspect.value: value})


@dataclass(frozen=True)
class FeedbackEvent:
    message_id: str
    aspect: Aspect
    value: str | None
    """None withdraws the aspect."""


def fold(events: Iterable[FeedbackEvent]) -> dict[str, Feedback]:
    """The current feedback per message id from a log of events, oldest first: the latest event
    of each (message, aspect) wins; a message whose every aspect was withdrawn keeps an empty
    `Feedback`."""
    state: dict[str, Feedback] = {}
    for event in events:
        state[event.message_id] = state.get(event.message_id, Feedback()).with_value(
            event.aspect, event.value
        )
    return state


def rating_after_press(current: Rating | None, pressed: Rating) -> Rating | None:
    """Like and dislike are toggles: pressing the current rating withdraws it."""
    return None if current is pressed else pressed


class ChatPhase(StrEnum):
    NEW = "new"  # nothing sent yet: nothing stored
    STREAMING = "streaming"
    READY = "ready"  # the latest reply ended (finished, failed or stopped)
    ENDED = "ended"  # the user left it (New chat), or it was published: read-only


@dataclass
class Attempt:
    """One reply to a turn, as streamed and stored."""

    reply: Reply
    message_id: str | None = None
    """Its id in the store, once stored; feedback needs it."""
    stopped: bool = False
    """The user pressed Stop: the text is what arrived until then."""

    @property
    def failed(self) -> bool:
        return self.reply.error is not None


@dataclass
class Turn:
    prompt: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def latest(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


@dataclass
class Chat:
    """One direct chat as the server sees it."""

    session_id: str
    model: ModelEntry
    conversation_id: str | None = None
    """Set when the first message is stored."""
    phase: ChatPhase = ChatPhase.NEW
    turns: list[Turn] = field(default_factory=list)
    feedback: dict[str, Feedback] = field(default_factory=dict)
    """Current feedback per message id (the fold of the events stored for this chat)."""

    # -- what the model sees ------------------------------------------------------------------

    def final_text(self, turn: Turn) -> str:
        """The reply of a turn as the conversation goes on from it: the edit, if any."""
        latest = turn.latest
        if latest is None:
            return ""
        edit = self.feedback_of(latest.message_id).edit
        return edit if edit is not None else latest.reply.text

    def history(self, turns: Iterable[Turn]) -> list[Message]:
        messages: list[Message] = []
        for turn in turns:
            messages.append({"role": "user", "content": turn.prompt})
            messages.append({"role": "assistant", "content": self.final_text(turn)})
        return messages

    def request_messages(self) -> list[Message]:
        """What to send for the current (last) turn: earlier turns as they ended, then its
        prompt. Regenerating sends the same."""
        *done, current = self.turns
        return [*self.history(done), {"role": "user", "content": current.prompt}]

    # -- what may happen next ------------------------------------------------------------------

    def feedback_of(self, message_id: str | None) -> Feedback:
        return self.feedback.get(message_id, Feedback()) if message_id else Feedback()

    def _check_open(self, doing: str) -> None:
        if self.phase is ChatPhase.ENDED:
            raise ChatError("This chat has ended and takes no more changes. Start a new chat.")
        if self.phase is ChatPhase.STREAMING:
            raise ChatError(f"Wait for the reply to finish (or press Stop) before {doing}.")

    def check_can_send(self, prompt: str, limits: ChatLimits) -> None:
        self._check_open("sending another message")
        if len(self.turns) >= limits.max_turns:
            raise ChatError(
                f"This chat has reached its limit of {limits.max_turns} turns. Start a new chat."
            )
        if len(prompt) > limits.max_prompt_chars:
            raise ChatError(
                f"Your message is {len(prompt):,} characters long; the limit is "
                f"{limits.max_prompt_chars:,}. Shorten it and send again (nothing was sent)."
            )
        if self.turns:
            latest = self.turns[-1].latest
            if (
                latest is not None
                and latest.failed
                and self.feedback_of(latest.message_id).edit is None
            ):
                raise ChatError(
                    "The last reply failed: regenerate it, or edit it into the reply you wanted, "
                    "before going on."
                )

    def check_can_regenerate(self, limits: ChatLimits) -> None:
        self._check_open("regenerating")
        if not self.turns:
            raise ChatError("Nothing to regenerate yet: send a message first.")
        attempts = len(self.turns[-1].attempts)
        if attempts >= limits.max_attempts:
            raise ChatError(
                f"This reply was generated {attempts} times, the limit. Edit it, or go on."
            )

    def locate(self, message_id: str) -> int:
        """The index of the turn whose current reply is ``message_id``; `ChatError` if the chat
        shows no such reply."""
        for index, turn in enumerate(self.turns):
            if turn.latest is not None and turn.latest.message_id == message_id:
                return index
            if any(a.message_id == message_id for a in turn.attempts):
                raise ChatError(
                    "That reply was replaced by a regenerated one: give feedback on the reply "
                    "shown now."
                )
        raise ChatError("There is no such reply in this chat.")

    def reply_id(self, number: int) -> str:
        """The message id of reply ``number`` (1 for the first turn's); `ChatError` if none."""
        if (
            not isinstance(number, int)
            or isinstance(number, bool)
            or not (1 <= number <= len(self.turns))
        ):
            raise ChatError(f"There is no reply {number!r} in this chat.")
        latest = self.turns[number - 1].latest
        if latest is None or latest.message_id is None:
            raise ChatError(f"Reply {number} is not ready yet.")
        return latest.message_id

    def check_feedback(
        self, message_id: str, aspect: Aspect | str, value: str | None, limits: ChatLimits
    ) -> str | None:
        """The value to store for this feedback, normalised; `ChatError` if it is not allowed,
        or changes nothing. ``value`` None withdraws the aspect."""
        self._check_open("giving feedback")
        try:
            aspect = Aspect(aspect)
        except ValueError:
            raise ChatError(f"{aspect!r} is not a kind of feedback.") from None
        if value is not None and not isinstance(value, str):
            raise ChatError("Feedback must be text.")
        index = self.locate(message_id)
        current = self.feedback_of(message_id).get(aspect)
        if aspect is Aspect.RATING:
            if value is not None and value not in (Rating.LIKE, Rating.DISLIKE):
                raise ChatError(f"{value!r} is not a rating: like or dislike.")
        elif aspect is Aspect.EDIT:
            value = self._check_edit(index, value, current, limits)
        else:
            value = self._check_comment(value, current, limits)
        if value == current:
            raise ChatError(
                _UNCHANGED[aspect] if value is not None else _NOTHING_TO_WITHDRAW[aspect]
            )
        return value

    def _check_edit(
        self, index: int, value: str | None, current: str | None, limits: ChatLimits
    ) -> str | None:
        if index != len(self.turns) - 1:
            raise ChatError(
                "Only the latest reply can be edited: the chat went on from this one as it was."
            )
        if value is None:
            return None
        if not value.strip():
            raise ChatError(
                "An edit cannot be empty: write the reply you would have wanted, or withdraw "
                "your edit."
            )
        if len(value) > limits.max_prompt_chars:
            raise ChatError(
                f"Your edit is {len(value):,} characters long; the limit is "
                f"{limits.max_prompt_chars:,}. Shorten it and save again (nothing was saved)."
            )
        latest = self.turns[index].latest
        assert latest is not None
        if value.strip() == latest.reply.text.strip():
            raise ChatError("Your edit is the same as the reply: change it, or keep the reply.")
        return value

    @staticmethod
    def _check_comment(value: str | None, current: str | None, limits: ChatLimits) -> str | None:
        if value is None or not value.strip():
            return None  # an empty comment withdraws the one given
        value = value.strip()
        if len(value) > limits.max_comment_chars:
            raise ChatError(
                f"Your comment is {len(value):,} characters long; the limit is "
                f"{limits.max_comment_chars:,}. Shorten it and save again (nothing was saved)."
            )
        return value

    def apply_feedback(self, message_id: str, aspect: Aspect | str, value: str | None) -> None:
        """Take a stored feedback event into the chat's state."""
        self.feedback[message_id] = self.feedback_of(message_id).with_value(Aspect(aspect), value)


_UNCHANGED = {
    Aspect.RATING: "That is already your rating of this reply.",
    Aspect.EDIT: "That is already your edit of this reply.",
    Aspect.COMMENT: "That is already your comment on this reply.",
}
_NOTHING_TO_WITHDRAW = {
    Aspect.RATING: "This reply has no rating of yours to withdraw.",
    Aspect.EDIT: "This reply has no edit of yours to withdraw.",
    Aspect.COMMENT: "Write a comment first (an empty one removes the comment you gave).",
}
