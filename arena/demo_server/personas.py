"""What the demo "models" answer, and how their text is cut into tokens.

Everything here is a pure function of its input: the reply to a conversation depends only on the
last user message (through a SHA-256 digest, never Python's per-process ``hash()``), so a demo
battle replays identically and tests can compare exact texts.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

PERSONAS: tuple[str, ...] = ("concise", "verbose", "markdown", "coder")

_VOCAB_SIZE = 32_000
_FIRST_ORDINARY_ID = 3  # ids 0-2 are reserved for special tokens, as in most tokenizers


@dataclass(frozen=True)
class Token:
    """One generated token, in TGI's ``Token`` shape."""

    id: int
    text: str
    logprob: float
    special: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "special": self.special}


EOS = Token(id=2, text="<|im_end|>", logprob=-0.0625, special=True)
"""Ends every natural reply. TGI streams it like any token (``special: true``) but leaves it out of
``generated_text``: clients that concatenate token texts must skip special tokens."""

# Newline runs are tokens of their own (so stop sequences like "\n\n" can match, as with real
# tokenizers); other tokens are words carrying their leading spaces or indentation.
_TOKEN_PATTERN = re.compile(r"\n+|[^\S\n]*\S+|[^\S\n]+")


def tokenize(text: str) -> list[Token]:
    """Word-piece tokens whose texts concatenate back to ``text`` exactly, with stable ids."""
    return list(_tokens(text))


def _tokens(text: str) -> Iterator[Token]:
    """`tokenize`, one token at a time: generation stops at ``max_new_tokens``, often long
    before a verbose reply's end."""
    return (_token(match.group()) for match in _TOKEN_PATTERN.finditer(text))


@functools.lru_cache(maxsize=1 << 16)
def _token(piece: str) -> Token:
    # The personas reuse a small vocabulary: a cached token saves its hash and its dataclass
    # (a 100-token reply of the verbose persona: 370 µs before, 63 µs with it).
    digest = int.from_bytes(hashlib.blake2b(piece.encode(), digest_size=8).digest(), "big")
    token_id = _FIRST_ORDINARY_ID + digest % (_VOCAB_SIZE - _FIRST_ORDINARY_ID)
    logprob = -((digest >> 32) % 2000) / 1000
    return Token(id=token_id, text=piece, logprob=logprob)


_CHATML_USER_TURN = re.compile(r"<\|im_start\|>user\n(.*?)(?:<\|im_end\|>|$)", re.DOTALL)


def last_user_turn(prompt: str) -> str:
    """The last user message of a ChatML prompt, or the whole prompt when it is not ChatML."""
    turns = _CHATML_USER_TURN.findall(prompt)
    return turns[-1] if turns else prompt


def render_chatml(messages: Sequence[tuple[str, str]]) -> str:
    """The prompt a ChatML model would see for ``(role, content)`` messages."""
    turns = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return turns + "<|im_start|>assistant\n"


@dataclass(frozen=True)
class Generation:
    """The tokens a request will stream, in order, and why generation stopped after the last."""

    tokens: list[Token]
    finish_reason: str
    """TGI's ``FinishReason``: "length", "eos_token" or "stop_sequence"."""

    @property
    def text(self) -> str:
        """TGI's ``generated_text``: the tokens' texts without special tokens."""
        return "".join(token.text for token in self.tokens if not token.special)


def generate(persona: str, user_text: str, max_new_tokens: int, stop: Sequence[str]) -> Generation:
    """Run the persona's "model" with TGI's stopping criteria, checked in TGI's order."""
    generated: list[Token] = []
    text = ""
    for token in itertools.chain(_tokens(reply(persona, user_text)), [EOS]):
        generated.append(token)
        if len(generated) >= max_new_tokens:
            return Generation(generated, "length")
        if token.special:
            return Generation(generated, "eos_token")
        text += token.text
        # TGI matches stop sequences against the end of the decoded output after each token.
        if any(sequence and text.endswith(sequence) for sequence in stop):
            return Generation(generated, "stop_sequence")
    raise AssertionError("unreachable: every reply ends with EOS")


def reply(persona: str, user_text: str) -> str:
    """The full reply of ``persona`` to a user message."""
    return _COMPOSERS[persona](_Prompt(user_text))


class _Prompt:
    """The user message with the bits a reply template needs."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.subject = _subject(text)
        self.quoted = f'"{self.subject}"'
        self._digest = hashlib.sha256(" ".join(text.split()).encode()).digest()

    def pick(self, slot: int, options: Sequence[str]) -> str:
        """A variant chosen by byte ``slot`` of the digest, so choices vary independently."""
        return options[self._digest[slot] % len(options)]


_LEAD_INS = re.compile(
    r"^(?:please|hey|hi|hello|ok|so|can you|could you|would you|will you|tell me about|explain"
    r"|describe|write|give me|show me|help me|how (?:do|can|should|would) (?:i|you|we|one)"
    r"|what (?:is|are)|what's|why (?:is|are|do|does))\b[\s,!]*",
    re.IGNORECASE,
)
_MAX_SUBJECT_WORDS = 12


def _subject(text: str) -> str:
    """The topic of a message, short enough to quote: lead-ins like "can you explain" dropped."""
    subject = " ".join(text.split())
    while (shorter := _LEAD_INS.sub("", subject, count=1)) != subject:
        subject = shorter
    words = subject.rstrip(" ?!.").split()
    if len(words) > _MAX_SUBJECT_WORDS:
        return " ".join(words[:_MAX_SUBJECT_WORDS]) + "..."
    return " ".join(words) or "your question"


_ANGLES = (
    "getting the fundamentals right",
    "a clear goal and one quick test",
    "the trade-off between simplicity and flexibility",
    "understanding why it works, not just how",
    "checking your assumptions before optimizing",
    "small, verifiable steps",
)


def _concise(p: _Prompt) -> str:
    return p.pick(
        0,
        (
            "Short answer: {q} mostly comes down to {angle}. Start small and check the result.",
            "For {q}, focus on {angle} first; the details follow from there.",
            "In a nutshell, {q} is about {angle}.",
            "Keep it simple: for {q}, start with {angle} and build from there.",
        ),
    ).format(q=p.quoted, angle=p.pick(1, _ANGLES))


def _verbose(p: _Prompt) -> str:
    paragraphs = (
        p.pick(
            0,
            (
                "That is a great question, and {q} deserves a careful answer, because the short "
                "version tends to hide the parts that matter in practice. Let me walk through it "
                "step by step: first the underlying idea, then the practical details, and finally "
                "the caveats that usually trip people up.",
                "Let's take {q} slowly and thoroughly. There is a quick answer, but it only makes "
                "sense once the context is clear, so I will explain the background first, then go "
                "through the approach in detail, and close with a few pitfalls worth keeping in "
                "mind.",
            ),
        ),
        p.pick(
            1,
            (
                "To begin with, it helps to see {q} as a goal combined with a set of constraints. "
                "The goal is usually simple to state, but the constraints, such as time, "
                "resources, correctness and the people who depend on the result, decide which "
                "approach is sensible. Most confusion comes from mixing these two layers, so it is "
                "worth naming them explicitly before doing anything else.",
                "The first thing to understand is where {q} comes from. Topics like this grew out "
                "of a concrete problem that people kept running into, and the usual advice answers "
                "that problem rather than following arbitrary rules. Once you know the original "
                "problem, the recommended practices stop looking like a list to memorize and start "
                "looking like consequences of a single idea.",
            ),
        ),
        p.pick(
            2,
            (
                "In practice, the most reliable path is to proceed in small increments. Start with "
                "{angle}, write down what you expect to happen, and verify it with the simplest "
                "possible example. If the result matches, extend the example one step at a time; "
                "if it does not, you have learned precisely where your mental model and reality "
                "disagree, which is far more valuable than a vague sense that something is off.",
                "Concretely, I would approach it in three stages. First, clarify the question "
                "until you could explain it to a colleague in two sentences. Second, concentrate "
                "on {angle}, because that is where most of the leverage is. Third, review the "
                "outcome critically: compare it with your expectations, note the differences, and "
                "decide whether they are acceptable or call for another iteration.",
            ),
        ),
        p.pick(
            3,
            (
                "A few caveats are worth mentioning. Advice about {q} is often given without "
                "context, so a recommendation that is perfect in one setting can be "
                "counterproductive in another. Be wary of absolute statements, keep an eye on edge "
                "cases, and remember that a solution you fully understand usually beats a clever "
                "one you cannot explain.",
                "Finally, there is rarely a single correct answer here. Reasonable people weigh "
                "the trade-offs differently, and what works at a small scale may need rethinking "
                "later. If you write down why you chose a particular approach to {q}, you will "
                "find it much easier to revisit the decision when circumstances change.",
            ),
        ),
    )
    angle = p.pick(4, _ANGLES)
    return "\n\n".join(paragraph.format(q=p.quoted, angle=angle) for paragraph in paragraphs)


def _markdown(p: _Prompt) -> str:
    angle = p.pick(0, _ANGLES)
    check = p.pick(1, ("test it on a tiny example", "compare it with a known-good reference"))
    tip = p.pick(
        2,
        (
            "write the expected result down *before* you start.",
            "when stuck, shrink the problem until the answer is obvious.",
            "keep notes; your future self will thank you.",
        ),
    )
    return (
        f"## {p.subject[0].upper()}{p.subject[1:]}\n\n"
        f"**Short answer:** it mostly comes down to {angle}.\n\n"
        "### Key points\n\n"
        f"- **Goal:** be clear about what {p.quoted} should achieve.\n"
        f"- **Approach:** start from {angle}, then iterate.\n"
        f"- **Check:** {check}.\n\n"
        "### Steps\n\n"
        "1. Define the expected result.\n"
        "2. Try the smallest example that could work.\n"
        "3. Compare, adjust and repeat.\n\n"
        f"> **Tip:** {tip}"
    )


_STOPWORD_TEXT = """a an and are as at be by code do for from function how i in into is it
javascript js me my of on or please program python script the this to typescript use using what
when with write you your"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _coder(p: _Prompt) -> str:
    words = [w for w in re.findall(r"[a-z][a-z0-9]*", p.subject.lower()) if w not in _STOPWORDS]
    words = words[:3] or ["solve"]
    if re.search(r"\b(?:javascript|js|typescript|node|react)\b", p.text, re.IGNORECASE):
        name = words[0] + "".join(word.capitalize() for word in words[1:])
        language, code = "javascript", _JS_SNIPPETS
        intro = p.pick(1, ("Here is a JavaScript sketch for {q}:", "A small JS take on {q}:"))
    else:
        name, language, code = "_".join(words), "python", _PYTHON_SNIPPETS
        intro = p.pick(1, ("Here is a Python sketch for {q}:", "A small Python take on {q}:"))
    explanation = p.pick(
        2,
        (
            "`{name}` walks through the input once and builds a new result, so the original data "
            "stays untouched. Replace the loop body with the exact rule you need for {q}.",
            "`{name}` keeps the logic in one small, testable function; call it with your own data "
            "and extend it step by step as {q} requires.",
        ),
    )
    return (
        f"{intro.format(q=p.quoted)}\n\n```{language}\n"
        f"{p.pick(0, code).format(name=name)}\n```\n\n"
        f"{explanation.format(name=name, q=p.quoted)}"
    )


_PYTHON_SNIPPETS = (
    "def {name}(items: list[str]) -> list[str]:\n"
    "    result = []\n"
    "    for item in items:\n"
    "        if item not in result:\n"
    "            result.append(item)\n"
    "    return result\n\n\n"
    'print({name}(["a", "b", "a"]))',
    "from collections import Counter\n\n\n"
    "def {name}(words: list[str]) -> dict[str, int]:\n"
    "    return dict(Counter(word.lower() for word in words))\n\n\n"
    'print({name}(["Arena", "arena", "vote"]))',
)
_JS_SNIPPETS = (
    "function {name}(items) {{\n"
    "  return [...new Set(items)];\n"
    "}}\n\n"
    'console.log({name}(["a", "b", "a"]));',
    "function {name}(words) {{\n"
    "  const counts = {{}};\n"
    "  for (const word of words) {{\n"
    "    counts[word] = (counts[word] ?? 0) + 1;\n"
    "  }}\n"
    "  return counts;\n"
    "}}\n\n"
    'console.log({name}(["arena", "vote", "arena"]));',
)

_COMPOSERS: dict[str, Callable[[_Prompt], str]] = {
    "concise": _concise,
    "verbose": _verbose,
    "markdown": _markdown,
    "coder": _coder,
}
