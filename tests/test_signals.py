"""Implicit feedback signals: the accuracy goal on the labelled turns, and each behaviour the rules
promise (categories, negation, mixed turns, masking, evidence spans, turn mapping, pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arena.signals import (
    RULES,
    Category,
    Polarity,
    PreferencePair,
    all_signals,
    detect,
    label_turns,
    message_text,
    preference_pairs,
)

DATA = Path(__file__).parent / "data" / "signal_turns.jsonl"
LABELS = {"sat", "dsat", "none"}


def _rows() -> list[dict]:
    with DATA.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _label(text: str) -> str:
    signal = detect(text)
    return "none" if signal is None else signal.polarity.value


# --- the labelled set and the goal


def test_labelled_set_is_well_formed() -> None:
    rows = _rows()
    assert len(rows) >= 220
    assert len({r["text"] for r in rows}) == len(rows), "duplicate turns"
    for r in rows:
        assert r["label"] in LABELS, r
        assert isinstance(r["round"], int), r
        if r["label"] == "none":
            assert r["category"] is None, r
        else:
            assert Category(r["category"]).polarity.value == r["label"], r
    for round_ in {r["round"] for r in rows}:
        assert {r["label"] for r in rows if r["round"] == round_} == LABELS


def test_precision_and_recall_goal_on_the_labelled_set() -> None:
    rows = _rows()
    predicted = [_label(r["text"]) for r in rows]
    for polarity in ("sat", "dsat"):
        hits = sum(r["label"] == p == polarity for r, p in zip(rows, predicted, strict=True))
        precision = hits / sum(p == polarity for p in predicted)
        recall = hits / sum(r["label"] == polarity for r in rows)
        assert precision >= 0.85, (polarity, precision)
        assert recall >= 0.6, (polarity, recall)


# --- one example per rule family


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Thank you so much!", Category.GRATITUDE),
        ("much appreciated", Category.GRATITUDE),
        ("Brilliant, that's exactly the tone I wanted", Category.PRAISE),
        ("it works now", Category.PRAISE),
        ("oh, I didn't know that", Category.LEARNING),
        ("ok, got it", Category.ACKNOWLEDGMENT),
        ("I'll try that tonight", Category.COMPLIANCE),
        ("I'm going to use this for my grandma's birthday card", Category.PERSONAL_DETAILS),
        ("hahaha", Category.HUMOR),
        ("that's all I needed, have a nice day", Category.POSITIVE_CLOSURE),
        ("almost there", Category.GETTING_THERE),
        ("this is useless", Category.NEGATIVE_FEEDBACK),
        ("try again", Category.REVISION),
        ("that's incorrect, Pluto is not a planet", Category.FACTUAL_ERROR),
        ("Why can't you just open the link?", Category.UNREALISTIC_EXPECTATION),
        ("that's not what I asked", Category.IGNORED),
        ("the previous version was better", Category.LOWER_QUALITY),
        ("too vague", Category.INSUFFICIENT_DETAIL),
        ("way too wordy", Category.STYLE),
    ],
)
def test_each_rule_family(text: str, category: Category) -> None:
    signal = detect(text)
    assert signal is not None
    assert (signal.category, signal.polarity) == (category, category.polarity)


def test_every_category_but_no_engagement_has_a_rule() -> None:
    # No engagement needs the topic of the next turn, not its wording: no rule on purpose.
    assert {r.category for r in RULES} == set(Category) - {Category.NO_ENGAGEMENT}


def test_rules_are_written_in_lower_case() -> None:
    # Turns are lower-cased before matching, so an upper-case literal could never match.
    for rule in RULES:
        literal = rule.pattern.pattern.replace("(?P<cue>", "")
        letters = [c for i, c in enumerate(literal) if c.isupper() and literal[i - 1] != "\\"]
        assert not letters, rule.pattern.pattern


# --- negation, mixed turns, questions, mentions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not bad at all", Polarity.SAT),
        ("nothing wrong with that, thanks", Polarity.SAT),
        ("can't thank you enough", Polarity.SAT),
        ("no problem, thanks!", Polarity.SAT),
        ("couldn't have said it better myself", Polarity.SAT),
        ("not helpful", Polarity.DSAT),
        ("this isn't very useful", Polarity.DSAT),
        ("this is not what I asked", Polarity.DSAT),
        ("I don't think that's right", Polarity.DSAT),
        ("no that's still not right", Polarity.DSAT),  # "no" insists, it does not negate
        ("it doesn't compile", Polarity.DSAT),
        ("what if it doesn't work on Windows?", None),  # hypothetical, not a report
    ],
)
def test_negation(text: str, expected: Polarity | None) -> None:
    signal = detect(text)
    assert (signal and signal.polarity) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("thanks, but this is wrong", Category.FACTUAL_ERROR),
        ("Great, another wrong answer.", Category.FACTUAL_ERROR),
        ("wow, thanks for nothing", Category.NEGATIVE_FEEDBACK),
        ("lol no", Category.NEGATIVE_FEEDBACK),
        # progress outweighs a request for a change ...
        ("closer! just make the ending shorter", Category.GETTING_THERE),
        # ... but not an error
        ("much better, but the date is still wrong", Category.FACTUAL_ERROR),
        # praise and a new request: the praise stands
        ("This is good, but could you add a title?", Category.PRAISE),
    ],
)
def test_mixed_turns(text: str, expected: Category) -> None:
    signal = detect(text)
    assert signal is not None and signal.category is expected


@pytest.mark.parametrize(
    "text",
    [
        "can you explain the second step?",
        "Is it wrong to use global variables?",
        "What is the perfect temperature for green tea?",
        "Great Barrier Reef facts please",
        "Write a thank you note to my interviewer",
        "Thanksgiving dinner ideas?",
        "How do I say 'thank you' in Japanese?",  # quoted: a mention
        'Write a story where the hero says "this is useless"',
        "why does ```raise ValueError('wrong')``` crash?",
        "ok, now write a function that reverses a string",
        "No, I don't have a Mac. I'm on Linux.",
        "",
    ],
)
def test_no_signal(text: str) -> None:
    assert detect(text) is None


def test_cues_start_at_word_starts() -> None:
    # "til" (today I learned) must not match inside "until", "no" not inside "piano".
    assert detect("until") is None
    assert detect("piano") is None


# --- evidence spans


def test_evidence_is_the_matched_span_of_the_original_turn() -> None:
    text = "Thanks, but THIS IS WRONG."
    signal = detect(text)
    assert signal is not None
    assert signal.evidence == "THIS IS WRONG" == text[signal.start : signal.end]


def test_clause_cues_exclude_punctuation_and_interjections() -> None:
    signal = detect("hmm. ok, perfect!")
    assert signal is not None
    assert signal.evidence == "perfect"


def test_all_signals_lists_every_cue_in_order() -> None:
    signals = all_signals("thanks, but this is wrong")
    assert [(s.category, s.evidence) for s in signals] == [
        (Category.GRATITUDE, "thanks"),
        (Category.FACTUAL_ERROR, "this is wrong"),
    ]
    assert signals[1].as_dict() == {
        "label": "dsat",
        "category": "factual_error",
        "evidence": "this is wrong",
        "start": 12,
        "end": 25,
    }


def test_offsets_survive_characters_that_lower_case_to_two() -> None:
    text = "İstanbul? thanks"
    signal = detect(text)
    assert signal is not None
    assert text[signal.start : signal.end] == "thanks"


# --- turns of a conversation


def _conversation(*turns: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    roles = ("user", "assistant")
    messages += [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]
    return messages


def test_label_turns_maps_each_follow_up_to_the_reply_before_it() -> None:
    conversation = _conversation(
        "What is 7 x 8?", "54", "wrong, it's 56", "Sorry, 56.", "thanks!", system="Be brief."
    )
    turns = label_turns(conversation)
    assert [(t.user_index, t.assistant_index) for t in turns] == [(3, 2), (5, 4)]
    assert [t.signal and t.signal.polarity for t in turns] == [Polarity.DSAT, Polarity.SAT]


def test_label_turns_skips_user_turns_not_after_a_reply() -> None:
    conversation = [
        {"role": "user", "content": "thanks"},
        {"role": "user", "content": "wrong"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "nice"},
    ]
    assert [(t.user_index, t.assistant_index) for t in label_turns(conversation)] == [(3, 2)]


def test_gradio_content_parts_are_read() -> None:
    parts = [{"type": "text", "text": "thanks"}, {"type": "file", "path": "x.png"}]
    assert message_text(parts) == "thanks"
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
        {"role": "user", "content": parts},
    ]
    (turn,) = label_turns(conversation)
    assert turn.signal is not None and turn.signal.category is Category.GRATITUDE


# --- preference pairs


def test_pair_from_a_complaint_then_satisfaction() -> None:
    conversation = _conversation(
        "Capital of Australia?",
        "Sydney.",
        "That's wrong.",
        "Canberra.",
        "thanks!",
        system="Be brief.",
    )
    (pair,) = preference_pairs(conversation)
    assert pair.as_trl() == {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of Australia?"},
        ],
        "chosen": [{"role": "assistant", "content": "Canberra."}],
        "rejected": [{"role": "assistant", "content": "Sydney."}],
    }
    assert (pair.chosen_index, pair.rejected_index) == (4, 2)


def test_every_rejected_reply_of_the_request_is_paired_with_the_chosen_one() -> None:
    conversation = _conversation(
        "Write a slogan", "A", "too long", "B", "not funny", "C", "perfect"
    )
    pairs = preference_pairs(conversation)
    assert [(p.chosen[0]["content"], p.rejected[0]["content"]) for p in pairs] == [
        ("C", "A"),
        ("C", "B"),
    ]
    assert all(p.prompt == [{"role": "user", "content": "Write a slogan"}] for p in pairs)


def test_no_pair_across_requests() -> None:
    # The neutral turn opens a new request: its reply is not an answer to the first one.
    conversation = _conversation(
        "Capital of Australia?", "Sydney.", "wrong", "Now tell me about Peru", "Peru...", "thanks"
    )
    assert preference_pairs(conversation) == []


def test_no_pair_without_satisfaction_or_without_complaint() -> None:
    assert preference_pairs(_conversation("Q", "A", "wrong", "B", "still wrong")) == []
    assert preference_pairs(_conversation("Q", "A", "thanks", "B", "great")) == []


def test_satisfaction_closes_the_request() -> None:
    conversation = _conversation(
        "Q1", "A1", "wrong", "A1b", "thanks! and Q2?", "A2", "wrong", "A2b", "perfect"
    )
    pairs = preference_pairs(conversation)
    assert [(p.chosen[0]["content"], p.rejected[0]["content"]) for p in pairs] == [
        ("A1b", "A1"),
        ("A2b", "A2"),
    ]
    assert pairs[1].prompt[-1] == {"role": "user", "content": "thanks! and Q2?"}
    assert isinstance(pairs[0], PreferencePair)


def test_stored_reactions_replace_the_rules_reading() -> None:
    # Readings made earlier (stored labels of one source) decide, not the words of the turns.
    conversation = _conversation("Q", "A", "hmm", "B", "ok")
    reactions = {2: Polarity.DSAT, 4: Polarity.SAT}
    (pair,) = preference_pairs(conversation, reactions)
    assert (pair.chosen_index, pair.rejected_index) == (3, 1)
    assert pair.prompt == [{"role": "user", "content": "Q"}]
    assert preference_pairs(conversation, {}) == []  # no stored reading: no pair
    # A reading is only taken for a turn that follows a reply.
    assert (
        preference_pairs(_conversation("Q", "A", "wrong", "B", "thanks"), {0: Polarity.DSAT}) == []
    )


def test_the_prompt_keeps_the_turns_before_the_request() -> None:
    conversation = _conversation(
        "Hi", "Hello!", "Capital of Peru?", "Quito.", "wrong", "Lima.", "ty"
    )
    (pair,) = preference_pairs(conversation)
    assert [m["content"] for m in pair.prompt] == ["Hi", "Hello!", "Capital of Peru?"]
    assert (pair.chosen[0]["content"], pair.rejected[0]["content"]) == ("Lima.", "Quito.")
