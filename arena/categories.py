"""Prompt categories of a conversation: rule-based tags for the store and the leaderboard.

Tags (each a leaderboard category, stored as an ``is_<tag>`` column):

* ``coding``: a message holds code (a fenced block, or lines that parse as code in a user turn),
  or a user turn asks for code or names programming tools. "Code" alone is not enough: "I want to
  code-switch between languages", "dress code", "zip code" are not coding.
* ``math``: a user turn states a calculation or equation (``2x + 3 = 7``, ``x^2``, ``15% of 80``,
  LaTeX) or uses mathematical vocabulary ("derivative", "prove that", "quadratic"). Mentioning the
  subject is not doing it: "write a poem about math" is creative writing only, "how do I learn
  math as an adult?" is neither.
* ``creative_writing``: a user turn asks for fiction, poetry, lyrics, jokes, scripts for the
  screen or stage, or role-play. Emails, essays and cover letters are writing, not creative
  writing; "write a script to rename files" is coding.
* ``multi_turn``: more than one user turn.
* ``long_prompt``: some user turn has at least ``long_prompt_chars`` characters.
* ``refusal``: an assistant reply opens by declining ("I'm sorry, but I can't help with that").
  Only the opening is read, so a reply that helps after a caveat is not a refusal.

``language`` is the ISO 639 code (two letters where one exists) that py3langid finds for the user
turns, without code and links, or ``"und"`` when there are too few letters or the identifier is
unsure: a short "ok thanks" says little about the language, and a wrong guess would pollute
per-language statistics. The tag rules themselves are English.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from arena.signals import message_text

TAGS = ("coding", "math", "creative_writing", "multi_turn", "long_prompt", "refusal")
UNDETERMINED = "und"
_NO_LANGUAGE = frozenset({UNDETERMINED, "zxx"})  # zxx: py3langid's "no linguistic content"
MIN_LETTERS = 12  # below this, py3langid guesses (it calls "hello there" Sesotho)
_WIDE_LETTER_WEIGHT = 3  # a Chinese, Japanese or Korean character says about as much as a word
MIN_CONFIDENCE = 0.3  # normalised probability; "Привет, как дела?" scores 0.36
_LANGUAGE_SAMPLE_CHARS = 2000  # the start of a long prompt identifies it as well as the whole
_REFUSAL_WINDOW_CHARS = 300


@dataclass(frozen=True, slots=True)
class PromptCategories:
    """The tags of one conversation and the language of its user turns."""

    tags: frozenset[str]
    language: str

    def flags(self) -> dict[str, bool]:
        """One ``is_<tag>`` boolean per known tag, as the rating engine's category columns."""
        return {f"is_{tag}": tag in self.tags for tag in TAGS}


_FENCE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"https?://\S+|www\.\S+")

_CODE_LINE = re.compile(
    r"^\s*(?:def \w+\(|class \w+[:(]|import \w+|from [\w.]+ import |#include\s*<|using namespace"
    r"|public (?:static |final )*(?:void|class|int|String)\b|function\s*\w*\s*\("
    r"|(?:const|let|var) \w+\s*=|console\.log\("
    r"|System\.out\.|printf\(|fn \w+\(|SELECT\b.+\bFROM\b|<(?:div|html|script|span)\b"
    r"|\w+(?:\.\w+)*\(.*\)\s*;\s*$|for \(|while \(|if \(.+\)\s*\{|}\s*$)",
    re.MULTILINE,
)
_CODE_WORDS = re.compile(
    r"\b(?:python|javascript|typescript|java|kotlin|c\+\+|c#|golang|php|perl|scala|haskell"
    r"|matlab|sql|mysql|postgres(?:ql)?|sqlite|html|css|regex|regular expression|bash|powershell"
    r"|shell script|react|vue\.?js|angular|node\.?js|django|flask|fastapi|numpy|pandas|pytorch"
    r"|tensorflow|docker|kubernetes|git|github|json|yaml|api|sdk|npm|compiler|debug(?:ging)?"
    r"|stack ?trace|traceback|segfault|segmentation fault|null pointer|recursion|big-?o"
    r"|time complexity|source code|codebase|programming|programmer|unit tests?)\b"
    r"|\b(?:code|coding)\b(?!-|\s+(?:of conduct|word|name|switch))(?<!dress code)"
    r"(?<!zip code)(?<!postal code)(?<!area code)(?<!morse code)(?<!promo code)"
    r"(?<!discount code)(?<!country code)(?<!vinci code)(?<!qr code)",
    re.IGNORECASE,
)
_SCREEN = r"movie|film|play|video|commercial|skit|show|episode|scene|youtube"
_CODE_REQUEST = re.compile(
    r"\b(?:write|create|implement|fix|debug|refactor|optimi[sz]e|generate|give me)\b(?: me)?"
    r"(?: an?| the| this| my| some)?(?: \w+){0,2}? (?:function|script|program|class|method"
    rf"|query|snippet|endpoint|one-?liner)\b(?! for an? (?:\w+ )?(?:{_SCREEN}))",
    re.IGNORECASE,
)

_MATH_EXPRESSION = re.compile(
    r"\d\s*[+*×÷^]\s*\(?-?\d|\b[a-z]\s*\^\s*\d|\b\d*[a-z]\s*[+\-]\s*\d+\s*=|\b[xyz]\s*[=<>≤≥]\s*-?\d"
    r"|\d+(?:\.\d+)?\s*%\s*of\s*\$?\d|[√∫∑∏π≤≥≠∞]|\\(?:frac|int|sum|sqrt|lim|cdot|times)\b",
    re.IGNORECASE,
)
_MATH_WORDS = re.compile(
    r"\b(?:solve for \w|equations?|integrals?|integrate|derivatives?|differentiate|calculus"
    r"|algebra|geometry|trigonometry|probability|theorem|prove that|lemma|matrices|determinant"
    r"|eigen\w*|polynomials?|factori[sz]e|logarithms?|quadratic|prime numbers?|divisible"
    r"|hypotenuse|perimeter|circumference|standard deviation|variance|arithmetic"
    r"|area of an? (?:circle|triangle|square|rectangle)|simplify the (?:expression|fraction))\b",
    re.IGNORECASE,
)

_CREATIVE_FORMS = (
    r"poems?|story|stories|haiku|limericks?|sonnets?|songs?|lyrics|rap|verses?|ballad|fable"
    r"|fairy ?tale|jokes?|riddles?|screenplay|skit|monologue|dialogue|novel"
    r"|(?:next|new|another|first|opening|final) (?:chapter|scene)"
    rf"|script for an? (?:\w+ )?(?:{_SCREEN})"
    r"|fan ?fic(?:tion)?"
)
_CREATIVE_REQUEST = re.compile(
    r"\b(?:write|compose|create|make up|come up with|tell|draft|continue|generate|give)\b"
    rf"(?: me| us)?(?: \w+){{0,3}}? (?:{_CREATIVE_FORMS})\b"
    r"|\b(?:once upon a time|role-?play|pretend (?:to be|you are)|in the style of \w+"
    r"|next chapter|continue the story)\b",
    re.IGNORECASE,
)

_REFUSAL = re.compile(
    r"\bi(?:'m| am) (?:sorry|afraid)\b[^.!?]{0,40}?\b(?:can(?:'|no)t|won'?t|unable|not able)\b"
    r"|\bi (?:can(?:'|no)t|won'?t|will not|am unable to|'m unable to|am not able to"
    r"|'m not able to) (?:help|assist|provide|comply|fulfill|create|write|generate|produce"
    r"|do that|share|give|engage|support|answer|continue)\b"
    r"|\bas an ai(?: language model)?, i (?:can(?:'|no)t|don'?t|do not|am not|'m not)\b"
    r"|\bi must (?:decline|refuse)\b|\bi(?:'m| am) not (?:comfortable|going to) (?:help|writ"
    r"|provid|creat|do)|\b(?:against|violates?) (?:my|our|the) (?:guidelines|polic(?:y|ies))",
    re.IGNORECASE,
)


def categorize(
    conversation: Sequence[Mapping[str, Any]], *, long_prompt_chars: int = 1000
) -> PromptCategories:
    """The tags and language of a conversation of ``{"role", "content"}`` messages."""
    users = [message_text(m.get("content")) for m in conversation if m.get("role") == "user"]
    replies = [message_text(m.get("content")) for m in conversation if m.get("role") == "assistant"]
    prose = [_strip_code(u) for u in users]
    tags = set()
    if any("```" in t for t in users + replies) or any(
        _is_coding(u, p) for u, p in zip(users, prose, strict=True)
    ):
        tags.add("coding")
    if any(_MATH_EXPRESSION.search(p) or _MATH_WORDS.search(p) for p in prose):
        tags.add("math")
    if any(_CREATIVE_REQUEST.search(p) for p in prose):
        tags.add("creative_writing")
    if len(users) > 1:
        tags.add("multi_turn")
    if any(len(u) >= long_prompt_chars for u in users):
        tags.add("long_prompt")
    if any(_REFUSAL.search(r[:_REFUSAL_WINDOW_CHARS]) for r in replies):
        tags.add("refusal")
    return PromptCategories(frozenset(tags), language("\n".join(prose)))


def language(text: str) -> str:
    """ISO 639 code of ``text`` (code and links ignored), or ``"und"`` when unsure."""
    sample = _URL.sub(" ", _strip_code(text))[:_LANGUAGE_SAMPLE_CHARS]
    if _letters(sample) < MIN_LETTERS:
        return UNDETERMINED
    code, confidence = _identifier().classify(sample)
    return code if confidence >= MIN_CONFIDENCE and code not in _NO_LANGUAGE else UNDETERMINED


@cache
def _identifier() -> LanguageIdentifier:
    # Loaded on first use (about half a second), not at import, so importing the app stays fast.
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _letters(text: str) -> int:
    return sum(
        _WIDE_LETTER_WEIGHT if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
        if c.isalpha()
    )


def _is_coding(text: str, prose: str) -> bool:
    return bool(_CODE_LINE.search(text) or _CODE_WORDS.search(prose) or _CODE_REQUEST.search(prose))


def _strip_code(text: str) -> str:
    return _INLINE_CODE.sub(" ", _FENCE.sub(" ", text))
