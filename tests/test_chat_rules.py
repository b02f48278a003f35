"""Direct-chat rules without I/O: folding the feedback log, what may be sent, regenerated and
given feedback on, and the notices for bad input."""

from __future__ import annotations

import pytest

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
from arena.config import ModelEntry
from arena.replies import ErrorKind, Reply, ReplyError

MODEL = ModelEntry.model_validate(
    {"name": "m", "display_name": "M", "organization": "o", "endpoint": "http://x"}
)
LIMITS = ChatLimits(max_prompt_chars=50, max_turns=3, max_attempts=2, max_comment_chars=20)


def reply(text: str, *, error: bool = False) -> Reply:
    failure = ReplyError(ErrorKind.STREAM_ERROR, "boom") if error else None
    return Reply(model="m", text=text, finished=True, error=failure)


def chat(*turns: tuple[str, list[str]], failed_last: bool = False) -> Chat:
    """A ready chat: each turn a prompt and its replies' texts; message ids t<turn>a<attempt>."""
    made = Chat(session_id="s", model=MODEL, conversation_id="c", phase=ChatPhase.READY)
    for t, (prompt, texts) in enumerate(turns):
        attempts = [Attempt(reply(text), message_id=f"t{t}a{a}") for a, text in enumerate(texts)]
        made.turns.append(Turn(prompt, attempts))
    if failed_last:
        made.turns[-1].attempts[-1].reply = reply("", error=True)
    return made


# -- the log ------------------------------------------------------------------------------------


def test_fold_keeps_the_latest_event_of_each_aspect_per_message():
    events = [
        FeedbackEvent("x", Aspect.RATING, "like"),
        FeedbackEvent("x", Aspect.COMMENT, "nice"),
        FeedbackEvent("y", Aspect.RATING, "dislike"),
        FeedbackEvent("x", Aspect.RATING, "dislike"),  # changed
        FeedbackEvent("x", Aspect.COMMENT, None),  # withdrawn
        FeedbackEvent("y", Aspect.EDIT, "better"),
    ]
    assert fold(events) == {
        "x": Feedback(rating=Rating.DISLIKE),
        "y": Feedback(rating=Rating.DISLIKE, edit="better"),
    }
    assert fold(
        [FeedbackEvent("x", Aspect.RATING, "like"), FeedbackEvent("x", "rating", None)]
    ) == {"x": Feedback()}


def test_like_and_dislike_are_toggles():
    assert rating_after_press(None, Rating.LIKE) is Rating.LIKE
    assert rating_after_press(Rating.LIKE, Rating.LIKE) is None
    assert rating_after_press(Rating.LIKE, Rating.DISLIKE) is Rating.DISLIKE


# -- what the model sees ------------------------------------------------------------------------


def test_the_next_request_carries_earlier_turns_as_they_ended_edits_included():
    made = chat(("hi", ["first", "second"]), ("more", ["third"]))
    made.apply_feedback("t0a1", Aspect.EDIT, "edited")
    assert made.request_messages() == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "edited"},  # the edit, not the latest attempt
        {"role": "user", "content": "more"},
    ]


# -- sending and regenerating -------------------------------------------------------------------


def test_sending_is_refused_while_streaming_after_the_end_and_beyond_the_limits():
    made = chat(("a", ["x"]))
    made.check_can_send("fine", LIMITS)
    with pytest.raises(ChatError, match="51 characters long; the limit is 50"):
        made.check_can_send("z" * 51, LIMITS)
    made.phase = ChatPhase.STREAMING
    with pytest.raises(ChatError, match="Wait for the reply"):
        made.check_can_send("fine", LIMITS)
    made.phase = ChatPhase.ENDED
    with pytest.raises(ChatError, match="ended"):
        made.check_can_send("fine", LIMITS)
    full = chat(("a", ["x"]), ("b", ["y"]), ("c", ["z"]))
    with pytest.raises(ChatError, match="limit of 3 turns"):
        full.check_can_send("fine", LIMITS)


def test_a_failed_reply_must_be_regenerated_or_edited_before_going_on():
    made = chat(("a", ["x"]), failed_last=True)
    with pytest.raises(ChatError, match="last reply failed"):
        made.check_can_send("next", LIMITS)
    made.apply_feedback("t0a0", Aspect.EDIT, "what I wanted")
    made.check_can_send("next", LIMITS)


def test_regenerating_needs_a_turn_and_stops_at_the_attempt_limit():
    with pytest.raises(ChatError, match="send a message first"):
        Chat(session_id="s", model=MODEL).check_can_regenerate(LIMITS)
    chat(("a", ["x"])).check_can_regenerate(LIMITS)
    with pytest.raises(ChatError, match="generated 2 times"):
        chat(("a", ["x", "y"])).check_can_regenerate(LIMITS)


# -- feedback -----------------------------------------------------------------------------------


def test_feedback_only_reaches_replies_the_chat_shows():
    made = chat(("a", ["old", "new"]), ("b", ["later"]))
    assert made.check_feedback("t0a1", Aspect.RATING, "like", LIMITS) == "like"
    with pytest.raises(ChatError, match="replaced by a regenerated one"):
        made.check_feedback("t0a0", Aspect.RATING, "like", LIMITS)
    with pytest.raises(ChatError, match="no such reply"):
        made.check_feedback("someone-elses", Aspect.RATING, "like", LIMITS)
    with pytest.raises(ChatError, match="not a rating"):
        made.check_feedback("t1a0", Aspect.RATING, "love", LIMITS)
    with pytest.raises(ChatError, match="not a kind of feedback"):
        made.check_feedback("t1a0", "vote", "x", LIMITS)
    assert made.reply_id(1) == "t0a1" and made.reply_id(2) == "t1a0"
    for number in (0, 3, "1", True):
        with pytest.raises(ChatError, match="no reply"):
            made.reply_id(number)


def test_no_feedback_while_streaming_or_after_the_end():
    made = chat(("a", ["x"]))
    for phase in (ChatPhase.STREAMING, ChatPhase.ENDED):
        made.phase = phase
        with pytest.raises(ChatError):
            made.check_feedback("t0a0", Aspect.RATING, "like", LIMITS)


def test_edits_are_checked_and_only_the_latest_reply_takes_one():
    made = chat(("a", ["first"]), ("b", ["second reply"]))
    with pytest.raises(ChatError, match="Only the latest reply"):
        made.check_feedback("t0a0", Aspect.EDIT, "changed", LIMITS)
    with pytest.raises(ChatError, match="cannot be empty"):
        made.check_feedback("t1a0", Aspect.EDIT, "  \n ", LIMITS)
    with pytest.raises(ChatError, match="51 characters long"):
        made.check_feedback("t1a0", Aspect.EDIT, "e" * 51, LIMITS)
    with pytest.raises(ChatError, match="same as the reply"):
        made.check_feedback("t1a0", Aspect.EDIT, " second reply ", LIMITS)
    with pytest.raises(ChatError, match="no edit of yours to withdraw"):
        made.check_feedback("t1a0", Aspect.EDIT, None, LIMITS)
    assert made.check_feedback("t1a0", Aspect.EDIT, "better", LIMITS) == "better"
    made.apply_feedback("t1a0", Aspect.EDIT, "better")
    with pytest.raises(ChatError, match="already your edit"):
        made.check_feedback("t1a0", Aspect.EDIT, "better", LIMITS)
    assert made.check_feedback("t1a0", Aspect.EDIT, None, LIMITS) is None


def test_comments_are_trimmed_bounded_and_an_empty_one_withdraws():
    made = chat(("a", ["x"]))
    assert made.check_feedback("t0a0", Aspect.COMMENT, "  too terse  ", LIMITS) == "too terse"
    with pytest.raises(ChatError, match="21 characters long; the limit is 20"):
        made.check_feedback("t0a0", Aspect.COMMENT, "c" * 21, LIMITS)
    with pytest.raises(ChatError, match="Write a comment first"):
        made.check_feedback("t0a0", Aspect.COMMENT, "", LIMITS)
    made.apply_feedback("t0a0", Aspect.COMMENT, "too terse")
    assert made.check_feedback("t0a0", Aspect.COMMENT, " ", LIMITS) is None
    with pytest.raises(ChatError, match="already your comment"):
        made.check_feedback("t0a0", Aspect.COMMENT, "too terse", LIMITS)


def test_rating_changes_and_withdrawals_are_changes_repeats_are_not():
    made = chat(("a", ["x"]))
    made.apply_feedback("t0a0", Aspect.RATING, "like")
    assert made.check_feedback("t0a0", Aspect.RATING, "dislike", LIMITS) == "dislike"
    assert made.check_feedback("t0a0", Aspect.RATING, None, LIMITS) is None
    with pytest.raises(ChatError, match="already your rating"):
        made.check_feedback("t0a0", Aspect.RATING, "like", LIMITS)
    assert made.feedback_of("t0a0") == Feedback(rating=Rating.LIKE)
