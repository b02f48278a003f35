"""Implicit feedback: satisfaction signals in the user's next turn, and preference pairs from them.

WildFeedback (and SPUR before it) reads the user's reply to an assistant message for satisfaction
(SAT) or dissatisfaction (DSAT). This module does it with readable rules instead of an LLM: each
rule is one line of ``_RULES``, a WildFeedback category and a regular expression, and the category
fixes the polarity, so a rule cannot contradict its own category.

API: ``detect(turn)`` gives the one signal a user turn carries (or None) and ``all_signals(turn)``
every cue found, for inspection; ``label_turns(conversation)`` reads each user turn that follows
an assistant reply and names that reply; ``preference_pairs(conversation)`` builds TRL-style
chosen/rejected pairs from the readings. ``Signal.as_dict()`` is what to store on the reply.

How a turn is read:

* Quoted text and code are masked first: ``How do I say 'thank you' in Japanese?`` mentions
  gratitude, it does not express it.
* A match is dropped when a negator or a hypothetical ("not", "n't", "no", "never", "if",
  "whether", ...) stands among the three words before it in the same clause. The negated meaning is
  then caught by its own rule, so "not bad" is praise and "not helpful" negative feedback. A bare
  "no" before a complaint insists rather than negates: "no, that's still not right".
* A turn with both polarities is DSAT ("thanks, but this is wrong", "great, another wrong answer"),
  except that "getting there" beats the mild DSAT categories (revision, style, insufficient detail):
  "closer! just make the ending shorter" is progress, not a complaint.
* Cues must refer to the reply: "that's wrong" or a turn that opens with "wrong" is DSAT, "is it
  wrong to use globals?" is a new question and carries no signal.

Categories without rules: no engagement (needs the topic of the next turn, not its wording).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Polarity(StrEnum):
    """Whether a user turn shows satisfaction or dissatisfaction with the reply before it."""

    SAT = "sat"
    DSAT = "dsat"


class Category(StrEnum):
    """The WildFeedback signal categories; the first nine are SAT, the rest DSAT."""

    GRATITUDE = "gratitude"
    LEARNING = "learning"
    COMPLIANCE = "compliance"
    PRAISE = "praise"
    PERSONAL_DETAILS = "personal_details"
    HUMOR = "humor"
    ACKNOWLEDGMENT = "acknowledgment"
    POSITIVE_CLOSURE = "positive_closure"
    GETTING_THERE = "getting_there"
    NEGATIVE_FEEDBACK = "negative_feedback"
    REVISION = "revision"
    FACTUAL_ERROR = "factual_error"
    UNREALISTIC_EXPECTATION = "unrealistic_expectation"
    NO_ENGAGEMENT = "no_engagement"
    IGNORED = "ignored"
    LOWER_QUALITY = "lower_quality"
    INSUFFICIENT_DETAIL = "insufficient_detail"
    STYLE = "style"

    @property
    def polarity(self) -> Polarity:
        return Polarity.SAT if self in _SAT_CATEGORIES else Polarity.DSAT


_SAT_CATEGORIES = frozenset(
    {
        Category.GRATITUDE,
        Category.LEARNING,
        Category.COMPLIANCE,
        Category.PRAISE,
        Category.PERSONAL_DETAILS,
        Category.HUMOR,
        Category.ACKNOWLEDGMENT,
        Category.POSITIVE_CLOSURE,
        Category.GETTING_THERE,
    }
)
# DSAT categories that ask for a change rather than reject the reply: "getting there" outweighs
# them.
_MILD_DSAT = frozenset({Category.REVISION, Category.STYLE, Category.INSUFFICIENT_DETAIL})


@dataclass(frozen=True, slots=True)
class Signal:
    """One matched cue: its category and polarity, and the evidence span in the user turn."""

    polarity: Polarity
    category: Category
    evidence: str
    start: int
    end: int

    def as_dict(self) -> dict[str, Any]:
        """The fields to store on the assistant message the signal refers to."""
        return {
            "label": self.polarity.value,
            "category": self.category.value,
            "evidence": self.evidence,
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True, slots=True)
class TurnSignal:
    """The reading of the user turn at ``user_index``, which answers ``assistant_index``."""

    user_index: int
    assistant_index: int
    signal: Signal | None


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """Two replies to one request, in TRL's conversational layout (lists of role/content dicts).

    ``chosen_index`` and ``rejected_index`` point into the source conversation, for provenance.
    """

    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]
    chosen_index: int
    rejected_index: int

    def as_trl(self) -> dict[str, list[dict[str, str]]]:
        """The row TRL's DPO-style trainers read: prompt, chosen, rejected."""
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


# --- Pattern pieces. Every rule is matched only where a word starts (``all_signals`` checks it), so
# patterns carry no leading \b, and against lower-cased text, so they are written in lower case.
# A clause is delimited by punctuation; "?" is left out on purpose: "perfect?" asks, it does not
# praise.
_START = r"(?:^|[^\w\s'?])\s*"
_END = r"(?=\s*(?:[^\w\s'?]|$))"
_INTERJECTION = r"(?:(?:oh|ah+|ok|okay|wow|yes|yeah|yay|well|hmm+|lol|haha|ugh|so|and)[\s,]+)*"
_THIS = r"(?:this|that|it|this one|that one|which)"
_REPLY_NOUN = (
    r"(?:answer|response|reply|code|script|output|result|solution|calculation|math|maths|formula"
    r"|translation|summary|date|number|example|function|query|command|explanation|story|poem"
    r"|email|essay|list|letter|plan|recipe|joke|ending|intro|title|description|song|lyrics|text"
    r"|link|source|version|draft|table|regex)"
)
# What the user can be talking about: the reply ("that", "your code", "this explanation").
_SUBJECT = rf"(?:{_THIS}|(?:this|that|your) \w+|the {_REPLY_NOUN})"
_BE = r"(?:'?s|'re| is| was| are| were| looks?| sounds?| seems?| reads?)"
_ADVERBS = (
    r"(?: (?:a|an|just|so|really|very|completely|totally|utterly|pretty|kinda|quite|absolutely"
    r"|super|truly|way|much|actually|all|still|simply|plain|such an?|also|the|exactly))*"
)
_NOT = r"(?:(?:does|do|did|is|was|are|were|wo|ca|could|would|has|have|ai)n'?t|not|cannot|never)"
_BE_NOT = rf"(?:{_BE}{_ADVERBS} not|(?: is| was| are| were)n'?t)"


def _clause(words: str) -> str:
    """A clause that is only ``words`` (after an interjection): "Perfect!", "ok, got it", "meh"."""
    return rf"{_START}{_INTERJECTION}(?P<cue>{words}){_END}"


def _turn(words: str) -> str:
    """A whole turn that is only ``words``: a bare "no" is a verdict, "no, I'm on Linux" is not."""
    return rf"^\W*{_INTERJECTION}(?P<cue>{words})\W*$"


def _clause_start(words: str) -> str:
    """``words`` opening a clause: "Love the second option!", "no no no, metric units"."""
    return rf"{_START}{_INTERJECTION}(?P<cue>{words})\b"


def _opening(words: str) -> str:
    """``words`` opening the turn: "Wrong language, I need C++", "Incorrect, it is 42"."""
    return rf"^\W*{_INTERJECTION}(?P<cue>{words})\b"


def _said_of_reply(words: str) -> str:
    """``words`` said of the reply: "that's wrong", "this is really clever", "the math is off"."""
    return rf"{_SUBJECT}{_BE}{_ADVERBS} (?:{words})\b"


def _denied_of_reply(words: str) -> str:
    """``words`` denied of the reply: "that isn't true", "this is still not right"."""
    return rf"{_SUBJECT}{_BE_NOT}{_ADVERBS} (?:{words})\b"


_GOOD = (
    r"perfect|great|awesome|excellent|amazing|brilliant|wonderful|fantastic|superb|nice|cool|neat"
    r"|lovely|beautiful|clever|smart|helpful|useful|clear|clearer|simpler|easier|cleaner|elegant"
    r"|impressive|genius|gold|good|spot on|on point|incredible|outstanding|terrific|solid"
)
_PRAISED = (
    r"one|job|work|answer|response|reply|explanation|bot|stuff|call|idea|solution|catch|summary"
    r"|breakdown"
)
_BAD = (
    r"useless|terrible|awful|horrible|garbage|rubbish|trash|nonsense|pointless|bad|boring|bland"
    r"|lame|cringe\w*|unhelpful|disappointing|mediocre|poor|weak|worthless|meaningless|a mess"
    r"|stupid|dumb|gibberish"
)
_WRONG = (
    r"wrong|incorrect|inaccurate|false|untrue|off|outdated|deprecated|broken|made up|invalid|lie"
)

C = Category
# One rule a line: (category, pattern). A named group ``cue``, when present, is the evidence span,
# otherwise the whole match is.
_RULES: tuple[tuple[Category, str], ...] = (
    # SAT: gratitude
    (C.GRATITUDE, r"thank(?:s|\s*(?:you+|u|ya))\b(?!\s+(?:to|note|letter|card|e-?mail|message))"),
    (C.GRATITUDE, r"(?:thx|thnx|thnks|thanx|tysm|tyvm|many thanks|cheers)\b"),
    (C.GRATITUDE, _clause(r"ty")),
    (C.GRATITUDE, r"appreciated?\b(?!\s+(?:it\s+)?if\b)"),
    (C.GRATITUDE, r"can'?t thank you enough\b"),
    (C.GRATITUDE, r"(?:merci|gracias|danke|grazie|obrigad[oa]|dank je)\b|спасибо|谢谢|ありがとう"),
    # SAT: praise
    (C.PRAISE, _clause(rf"(?:really |very |so |super )?(?:{_GOOD}|wow|yay|bravo)")),
    (C.PRAISE, _clause_start(rf"(?:{_GOOD}) (?:{_PRAISED})")),
    (C.PRAISE, _clause_start(r"(?:really |very |so )?well (?:done|explained|written|put)")),
    (C.PRAISE, _said_of_reply(_GOOD)),
    (C.PRAISE, r"you(?:'?re| are) (?:an? |the )?(?:life ?saver|genius|best|star|legend)\b"),
    (C.PRAISE, r"you(?:'?re| are) (?:awesome|amazing|great|wonderful|brilliant|a champ)\b"),
    (C.PRAISE, r"(?:you )?nailed it\b|you rock\b|chef'?s kiss\b|👍|👌|🙏|🙌|💯|❤️|😍|🥰"),
    (C.PRAISE, r"(?:i |we |really )?(?:love|loved|adore) (?:it|this|that|them)\b(?! if)"),
    (C.PRAISE, rf"(?:loved|love|enjoyed|adored) (?:the|your|this|that) {_REPLY_NOUN}s?\b"),
    (C.PRAISE, r"i (?:really |much )?like (?:it|this|that)\b(?! if)"),
    (C.PRAISE, _clause_start(r"(?:i |we )?(?:really )?(?:love|loved|adore) (?:the|your|how)")),
    (C.PRAISE, r"(?:very|so|super|really|extremely|incredibly|quite) (?:helpful|useful)\b"),
    (C.PRAISE, r"(?:looks|sounds|reads) (?:really |very )?(?:good|great|perfect|awesome|lovely)\b"),
    (C.PRAISE, r"(?:i'?m|i am) (?:very |really |so )?(?:happy|satisfied|pleased) with\b"),
    (C.PRAISE, r"not (?:too |that |half )?bad\b|no (?:issues|problems|errors|complaints)\b"),
    (C.PRAISE, r"couldn'?t (?:have )?(?:said|put|done|explained|asked for) \w+ better\b"),
    (C.PRAISE, r"works? like a charm\b|(?:did|does) the trick\b"),
    (C.PRAISE, rf"{_THIS} (?:now |finally |totally )?(?:works|worked|fixed it|solved it|did it)\b"),
    (C.PRAISE, r"it'?s working\b|(?:works|runs|compiles) (?:now|great)\b"),
    (
        C.PRAISE,
        r"(?:\w+ed|works|runs|compiles) (?:now |again )?(?:fine|perfectly|smoothly|flawlessly"
        r"|without (?:any )?(?:errors?|issues|problems))\b",
    ),
    (C.PRAISE, r"(?:tests?|build) (?:pass(?:es)?|passed|is green)\b"),
    (
        C.PRAISE,
        r"(?:error|warning|issue|problem|bug|crash)s? (?:is |are )?(?:gone|fixed|solved"
        r"|resolved)\b",
    ),
    (
        C.PRAISE,
        rf"{_THIS}(?: \w+)?(?: will|'ll| is going to| should)?(?: really| definitely)? "
        r"(?:help(?:s|ed)\b|help (?:me|us|a lot|so much|a ton|tremendously)\b)",
    ),
    (
        C.PRAISE,
        r"(?:exactly|just|that'?s|that is|this is|it'?s) what i (?:needed|wanted|was looking for"
        r"|had in mind|meant)\b",
    ),
    # SAT: learning
    (C.LEARNING, r"(?:didn'?t|did not|never) (?:know|knew|reali[sz]e|thought of)\b"),
    (C.LEARNING, _clause(r"til|today i learned|good to know|interesting")),
    (C.LEARNING, r"learn(?:ed|t) something\b|(?:that'?s|how|very|really|so) interesting\b"),
    (C.LEARNING, r"so that'?s why\b|that explains\b|clears (?:it|that|things) up\b"),
    (C.LEARNING, r"now i (?:get|understand|see)\b|i (?:finally )?(?:get|understand) it now\b"),
    # SAT: acknowledgment
    (C.ACKNOWLEDGMENT, _clause(r"got it|gotcha|i see|understood|fair enough|alright|all right")),
    (C.ACKNOWLEDGMENT, _clause(r"exactly|right|noted|true|no worries|no problem|all good")),
    (C.ACKNOWLEDGMENT, r"makes? (?:a lot of |more |total |perfect )?sense\b"),
    (C.ACKNOWLEDGMENT, _said_of_reply(r"right|correct|true|accurate")),
    (C.ACKNOWLEDGMENT, r"nothing wrong with (?:it|that|this)\b|i see (?:what you mean|now)\b"),
    # SAT: compliance
    (C.COMPLIANCE, r"will do\b|sounds good\b|(?:like|as|what) you (?:said|suggested|advised)\b"),
    (
        C.COMPLIANCE,
        r"i'?ll (?:try|do|use|go with|follow|test) (?:that|it|this|your|option|the|those|these)\b",
    ),
    (C.COMPLIANCE, r"let'?s go with\b|report back\b|let you know\b"),
    # SAT: personal details (the user says what they will do with the reply)
    (
        C.PERSONAL_DETAILS,
        r"(?:i'?m going to|i'?ll|i will|gonna) (?:use|send|show|print|share|read) "
        r"(?:this|it|that) (?:for|to|with|at)\b",
    ),
    # SAT: humor
    (C.HUMOR, r"(?:ha){2,}h?\b|(?:lol|lmao|rofl)\b|😂|🤣|😆|hilarious\b"),
    (C.HUMOR, r"(?:that'?s|so|very|pretty) funny\b|cracked me up\b|made me laugh\b"),
    # SAT: positive closure
    (C.POSITIVE_CLOSURE, r"that'?s (?:all|everything|it)(?: i needed| for now)?\b(?!\s*\?)"),
    (C.POSITIVE_CLOSURE, r"have a (?:great|nice|good|lovely) (?:day|night|evening|weekend)\b"),
    (C.POSITIVE_CLOSURE, _clause(r"bye|goodbye|good night|see you|cya|ttyl")),
    (C.POSITIVE_CLOSURE, r"i(?:'?m| am) (?:good|all set|set|done) (?:for now|now|here)\b"),
    (C.POSITIVE_CLOSURE, r"you can close this\b|no more questions\b|no,? thank(?:s| you)\b"),
    # SAT: getting there
    (C.GETTING_THERE, r"(?:almost|getting|nearly) there\b|on the right track\b|getting closer\b"),
    (C.GETTING_THERE, _clause(r"(?:much |way |a lot |a bit |slightly )?(?:better|closer)")),
    (C.GETTING_THERE, rf"{_THIS}{_BE}(?: much| way| a lot| a bit| slightly| so much)? better\b"),
    # DSAT: negative feedback
    (C.NEGATIVE_FEEDBACK, _clause(rf"{_BAD}|meh|ugh|not helpful")),
    (C.NEGATIVE_FEEDBACK, _said_of_reply(_BAD)),
    (C.NEGATIVE_FEEDBACK, _turn(r"no+|nope|nah")),
    (C.NEGATIVE_FEEDBACK, rf"{_NOT}(?: \w+)? (?:help|helpful|useful)\b|not funny\b"),
    (C.NEGATIVE_FEEDBACK, r"(?:doesn'?t|does not) (?:even )?(?:rhyme|make sense|flow)\b"),
    (C.NEGATIVE_FEEDBACK, r"makes? no sense\b|thanks for nothing\b|frustrat(?:ing|ed)\b"),
    (C.NEGATIVE_FEEDBACK, r"the best you can do\b|stop apologi[sz]ing\b|yeah,? right\b"),
    (
        C.NEGATIVE_FEEDBACK,
        r"keep (?:on )?(?:repeating|saying|giving me|apologi[sz]ing|making|ignoring|forgetting"
        r"|getting|missing)\b",
    ),
    (C.NEGATIVE_FEEDBACK, r"seriously\s*\?"),
    (C.NEGATIVE_FEEDBACK, _opening(r"no(?=\s*[.!])")),
    (C.NEGATIVE_FEEDBACK, _denied_of_reply(r"it|good|great|helpful|useful")),
    (C.NEGATIVE_FEEDBACK, rf"{_NOT} (?:making|make|makes) (?:any |much )?sense\b"),
    (C.NEGATIVE_FEEDBACK, _clause_start(r"no,? no\b")),
    (
        C.NEGATIVE_FEEDBACK,
        r"(?:don'?t|do not|didn'?t|did not) (?:really )?like (?:it|this|that|the)\b",
    ),
    (C.NEGATIVE_FEEDBACK, r"you(?:'?re| are)(?: so| really)? (?:useless|stupid|dumb|hopeless)\b"),
    (
        C.NEGATIVE_FEEDBACK,
        r"are you (?:kidding|serious|joking)\b|could be (?:a lot |much )?better\b",
    ),
    (C.NEGATIVE_FEEDBACK, _clause(r"wtf|wth|smh")),
    (
        C.NEGATIVE_FEEDBACK,
        r"(?:feels|sounds|reads|seems|looks) (?:so |very |a bit |kind of |kinda |too )?"
        r"(?:rushed|flat|bland|generic|forced|awkward|cheesy|clunky|weird|lazy|repetitive)\b",
    ),
    # DSAT: factual error
    (C.FACTUAL_ERROR, _said_of_reply(_WRONG)),
    (C.FACTUAL_ERROR, _denied_of_reply(r"right|correct|true|accurate|real")),
    (C.FACTUAL_ERROR, _clause(r"(?:still |just |all |completely )?(?:wrong|incorrect)(?: again)?")),
    (C.FACTUAL_ERROR, r"#(?:value|ref|name|div/0|n/a|num|null)!?"),
    (C.FACTUAL_ERROR, _opening(r"wrong|incorrect|false|not (?:quite|true|correct|right|exactly)")),
    (C.FACTUAL_ERROR, r"you(?:'?re| are) (?:wrong|mistaken|incorrect)\b|that'?s not how\b"),
    (C.FACTUAL_ERROR, _opening(r"\w*(?:error|exception):|traceback")),
    (C.FACTUAL_ERROR, r"not even close\b|make (?:things|stuff) up\b|i doubt (?:that|it|this)\b"),
    (
        C.FACTUAL_ERROR,
        r"not (?:so |too )?sure (?:that'?s|that is|this is|it'?s|about (?:that|this))\b",
    ),
    (C.FACTUAL_ERROR, r"(?:don'?t|do not) think (?:that|this|it)(?:'?s| is) (?:right|correct)\b"),
    (
        C.FACTUAL_ERROR,
        r"(?:don'?t|do not) think \w+ (?:ever |actually |really )?(?:said|did|wrote|existed"
        r"|exists|happened)\b",
    ),
    (C.FACTUAL_ERROR, r"(?:mixed|mixing) up\b|got (?:\w+ ){0,2}(?:wrong|backwards)\b"),
    (C.FACTUAL_ERROR, r"(?:doesn'?t|does not|don'?t) (?:look|seem|sound) (?:right|correct)\b"),
    (C.FACTUAL_ERROR, r"are you sure\b|hallucinat\w*|made (?:that|this|it) up\b"),
    (
        C.FACTUAL_ERROR,
        rf"{_NOT} (?:even |really |actually )?(?:exist|compile|compiling|work|working|run"
        r"|running|build|load)\b",
    ),
    (C.FACTUAL_ERROR, r"no such (?:method|function|module|file|command|option|thing|package)\b"),
    (
        C.FACTUAL_ERROR,
        r"still (?:broken|fail\w*|crash\w*|wrong|the same|has|throws|get\w*|says|shows|gives"
        r"|returns|prints|happens)\b",
    ),
    (C.FACTUAL_ERROR, r"same (?:error|problem|issue|output|exception|result|bug|mistake)\b"),
    (C.FACTUAL_ERROR, r"another (?:wrong|incorrect|bad|useless|made-up) (?:answer|one|reply)\b"),
    (
        C.FACTUAL_ERROR,
        r"(?:getting|got|throws?|raises?|gives? me)\b[^.,;?!\n]{0,30}?\w*(?:error|exception)\b",
    ),
    (C.FACTUAL_ERROR, rf"(?:{_SUBJECT}|the (?:app|program)) (?:still |keeps? |now )?crash\w*"),
    (C.FACTUAL_ERROR, r"contradict(?:s|ing)? (?:yourself|itself|the|what|your)\b"),
    (C.FACTUAL_ERROR, r"(?:link|url)s?\b[^.?!\n]{0,25}\b(?:dead|broken|404)\b"),
    (C.FACTUAL_ERROR, r"(?:there'?s|there is|there are|you made) (?:a |some )?typos?\b"),
    # DSAT: ignored
    (
        C.IGNORED,
        r"not what (?:i|we|the question|my question)(?:'?m| am| was| were)? (?:asked|meant"
        r"|wanted|want|needed|need"
        r"|requested|expected|looking for|after)\b",
    ),
    (C.IGNORED, rf"{_NOT} (?:even |really )?(?:answer|address) (?:my|the) (?:question|request)\b"),
    (C.IGNORED, r"(?:doesn'?t|does not|didn'?t|did not) do what i (?:asked|wanted|want|said)\b"),
    (C.IGNORED, r"you(?:'?re| are)(?:n'?t| not) listening\b|just answer (?:the|my) question\b"),
    (C.IGNORED, r"i (?:already |clearly |specifically |just )?(?:said|told you|asked for)\b"),
    (C.IGNORED, r"i asked (?:in|you|about|to|specifically)\b|no,? i meant\b"),
    (C.IGNORED, r"i wanted (?:it|them|this|that|the|a|an)\b"),
    (
        C.IGNORED,
        r"you (?:didn'?t|did not|never) (?:\w+ )?(?:answer|address|read|include|follow|listen"
        r"|mention|use)\b",
    ),
    (C.IGNORED, r"you (?:\w+ )?(?:ignored|misunderstood|misread)\b|did you (?:even )?read\b"),
    (C.IGNORED, r"(?:re-?)?read (?:my|the) (?:question|prompt|message|request|instructions)\b"),
    (C.IGNORED, r"(?:irrelevant|off[- ]topic|unrelated)\b"),
    # DSAT: revision
    (C.REVISION, _opening(r"(?:please )?(?:try again|again|redo|do it again|start over)")),
    (C.REVISION, r"re-?do\b|fix (?:it|that)\b|regenerate\b"),
    # DSAT: style
    (
        C.STYLE,
        r"too (?:long|wordy|verbose|formal|informal|casual|technical|complicated|complex|dense"
        r"|flowery|stiff|dry|robotic|much (?:text|detail|info|fluff))\b",
    ),
    (
        C.STYLE,
        r"(?:make|keep) it (?:shorter|more concise|concise|brief|briefer|simpler|less \w+)\b",
    ),
    (C.STYLE, r"less (?:formal|wordy|verbose|technical|robotic|jargon)\b|simpler terms\b"),
    (
        C.STYLE,
        _clause(r"(?:shorter|more concise|simpler|less formal|more casual)(?: please| pls)?"),
    ),
    (C.STYLE, r"shorten (?:it|this|that)\b|be (?:more )?(?:concise|brief)\b|too many words\b"),
    (
        C.STYLE,
        r"(?:stop|quit|no more|without|so many|too many|not use|don'?t use|do not use)\b"
        r"[^.?!\n]{0,15}\b(?:emojis?|bullet|markdown|headings?|headers?|disclaimers?|hashtags?)",
    ),
    (C.STYLE, r"the (?:tone|style|wording) (?:is|feels|sounds|seems) (?:\w+ )?(?:too|off|weird)\b"),
    (C.STYLE, r"overcomplicat\w*|overkill\b|over-?engineer\w*"),
    (C.STYLE, r"(?:no|without|less|the) jargon\b|not an essay\b|wall of text\b"),
    (C.STYLE, r"stop (?:adding|using|saying|putting|including|writing|giving)\b"),
    (C.STYLE, r"(?:sounds|reads) like (?:a robot|an ai|a bot|a machine)\b|robotic\b"),
    (C.STYLE, r"why are you so (?:verbose|wordy|formal|long-winded|vague|robotic)\b"),
    (C.STYLE, r"(?:don'?t|didn'?t|do not|did not) (?:get|understand) (?:it|that|this|what you)\b"),
    (C.STYLE, _said_of_reply(r"confusing")),
    (C.STYLE, r"i'?m (?:so |still )?confused\b"),
    # DSAT: insufficient detail
    (
        C.INSUFFICIENT_DETAIL,
        r"too (?:vague|generic|short|brief|general|shallow|superficial|simplistic|basic"
        r"|high[- ]level)\b",
    ),
    (C.INSUFFICIENT_DETAIL, r"more specific\b|(?:more|further) (?:details?|depth)\b"),
    (C.INSUFFICIENT_DETAIL, r"(?:that'?s|is that) (?:it|all)\s*\?"),
    (C.INSUFFICIENT_DETAIL, rf"(?:{_THIS}|you)(?:'?s|'re| is| are) missing\b"),
    (
        C.INSUFFICIENT_DETAIL,
        rf"(?:{_SUBJECT}|you) (?:\w+ )?(?:misses|missed|leaves out|left out|skips|skipped|omits"
        r"|omitted|forgot|forgets)\b",
    ),
    (C.INSUFFICIENT_DETAIL, r"you (?:didn'?t|did not|never) (?:finish|complete)\b"),
    (C.INSUFFICIENT_DETAIL, r"(?:incomplete|unfinished)\b|(?:ends|stops|cuts off) abruptly\b"),
    (C.INSUFFICIENT_DETAIL, r"(?:is|was|got|gets|been) (?:cut off|truncated)\b"),
    # DSAT: lower quality
    (
        C.LOWER_QUALITY,
        r"(?:first|previous|last|original|earlier|old|other|initial) (?:one|version|answer|draft"
        r"|attempt|response|reply|try) (?:was|is|were) (?:better|nicer)\b",
    ),
    (C.LOWER_QUALITY, r"(?:getting|even|it'?s|is) worse\b|worse than (?:before|the|that)\b"),
    (C.LOWER_QUALITY, r"same (?:code|answer|thing|response|text|reply) (?:you|as|again)\b"),
    (C.LOWER_QUALITY, r"(?:already|just) said that\b|repeating yourself\b|same as before\b"),
    (C.LOWER_QUALITY, _said_of_reply(r"(?:exact |very )?same(?: \w+)?")),
    # DSAT: unrealistic expectation
    (
        C.UNREALISTIC_EXPECTATION,
        r"why can'?t you (?:just )?(?:open|access|browse|look|search|see|read|click|visit"
        r"|remember|download|check)\b",
    ),
    (C.UNREALISTIC_EXPECTATION, r"(?:every|any) other (?:tool|ai|bot|chatbot|assistant|app)\b"),
    (C.UNREALISTIC_EXPECTATION, r"you (?:should|must|ought to) (?:be able to|know)\b"),
)
del C


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled line of the rule table."""

    category: Category
    pattern: re.Pattern[str]


RULES: tuple[Rule, ...] = tuple(Rule(c, re.compile(p)) for c, p in _RULES)

# Mentions, not expressions: code, and text in quotes. An apostrophe inside a word ("it's", "I've")
# neither opens nor closes a quote.
_MASK = re.compile(
    r"```.*?(?:```|$)|`[^`\n]*`|(?<!\w)'(?=\S).*?(?<=\S)'(?!\w)|\"[^\"\n]*\"|“[^”\n]*”",
    re.DOTALL,
)
_CLAUSE_BREAK = re.compile(r"[.!?;:,\n]|\bbut\b")
_NEGATOR = re.compile(
    r"not|no|never|nothing|hardly|without|nor|cannot"
    r"|(?:do|does|did|is|was|are|were|wo|ca|could|would|should|has|have|had|ai|need)n'?t"
)
_HYPOTHETICAL = re.compile(r"if|whether|unless")
_WORD = re.compile(r"[\w']+")
_NEGATION_WINDOW = 3  # words before a cue that can negate it ("not very helpful")


def all_signals(user_turn: str) -> list[Signal]:
    """Every cue that survives masking and the negation check, in order of position."""
    text = _lower(_MASK.sub(lambda m: " " * len(m.group()), user_turn))
    found: list[Signal] = []
    for rule in RULES:
        for match in rule.pattern.finditer(text):
            span = match.span("cue") if "cue" in rule.pattern.groupindex else match.span()
            start, end = match.span()
            if not _starts_word(text, start) or _negated(text, start, end, rule.category.polarity):
                continue
            found.append(
                Signal(
                    polarity=rule.category.polarity,
                    category=rule.category,
                    evidence=user_turn[span[0] : span[1]],
                    start=span[0],
                    end=span[1],
                )
            )
    found.sort(key=lambda s: (s.start, s.end))
    return found


def detect(user_turn: str) -> Signal | None:
    """The signal the turn carries, or None: the first cue of the winning polarity.

    DSAT wins a mixed turn, unless every DSAT cue is a mild one (revision, style, insufficient
    detail) and the user also says the reply is getting there.
    """
    signals = all_signals(user_turn)
    dsat = [s for s in signals if s.polarity is Polarity.DSAT]
    sat = [s for s in signals if s.polarity is Polarity.SAT]
    progress = any(s.category is Category.GETTING_THERE for s in sat)
    if dsat and not (progress and all(s.category in _MILD_DSAT for s in dsat)):
        return dsat[0]
    return sat[0] if sat else None


def label_turns(conversation: Sequence[Mapping[str, Any]]) -> list[TurnSignal]:
    """A reading of every user turn that directly follows an assistant reply, in order.

    ``conversation`` is a list of ``{"role", "content"}`` messages; content may be a string or
    Gradio's list of ``{"type": "text", "text": ...}`` parts.
    """
    return [
        TurnSignal(i, i - 1, detect(message_text(message.get("content"))))
        for i, message in enumerate(conversation)
        if i > 0
        and message.get("role") == "user"
        and conversation[i - 1].get("role") == "assistant"
    ]


def preference_pairs(
    conversation: Sequence[Mapping[str, Any]],
    reactions: Mapping[int, Polarity | None] | None = None,
) -> list[PreferencePair]:
    """(chosen, rejected) replies to one request, read from the user's reactions.

    ``reactions``, when given, are readings made before (stored labels, of one source): the
    polarity of the user turn at each index, None or absent for no signal; the turns are then
    not read again. Without it the rules read every user turn that follows a reply.

    A request is opened by a user turn that is not a DSAT reaction. A DSAT reaction (complaint,
    correction, revision request) keeps the request open: the next reply answers the same
    underlying request, so the disliked reply joins the rejected ones. When a later reply of the
    same request gets a SAT reaction, it is chosen against each rejected reply. A neutral turn
    starts a new request and a SAT turn closes the current one, so replies are never paired across
    requests. The prompt is the conversation up to and including the opening user turn.
    """
    if reactions is None:
        read = label_turns(conversation)
        reactions = {t.user_index: t.signal and t.signal.polarity for t in read}
    pairs: list[PreferencePair] = []
    request: int | None = None
    rejected: list[int] = []
    for i, message in enumerate(conversation):
        if message.get("role") != "user":
            continue
        after_reply = i > 0 and conversation[i - 1].get("role") == "assistant"
        polarity = reactions.get(i) if after_reply else None
        if polarity is Polarity.DSAT and request is not None:
            rejected.append(i - 1)
            continue
        if polarity is Polarity.SAT and request is not None:
            prompt = _messages(conversation[: request + 1])
            chosen = _messages([conversation[i - 1]])
            pairs.extend(
                PreferencePair(prompt, chosen, _messages([conversation[r]]), i - 1, r)
                for r in rejected
            )
        request, rejected = i, []
    return pairs


def _negated(text: str, start: int, end: int, polarity: Polarity) -> bool:
    """Whether the cue at ``start:end`` is hypothetical ("if it doesn't work") or negated by one of
    the few words before it in its clause.

    A cue that is itself negative ("not what I asked") is not undone by a negator before it, and a
    bare "no" before a complaint insists rather than negates ("no that's still not right").
    """
    clause = _CLAUSE_BREAK.split(text[max(0, start - 40) : start])[-1]
    before = _WORD.findall(clause)[-_NEGATION_WINDOW:]
    if any(_HYPOTHETICAL.fullmatch(w) for w in before):
        return True
    first = _WORD.search(text, start, end)
    if first and _NEGATOR.fullmatch(first.group()):
        return False
    if polarity is Polarity.DSAT:
        before = [w for w in before if w != "no"]
    return any(_NEGATOR.fullmatch(w) for w in before)


def _lower(text: str) -> str:
    """Lower case with offsets kept: the few characters that lower to two ("İ") stay as they are."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _starts_word(text: str, i: int) -> bool:
    """The \\b that rules leave out: a match must not start inside a word ("til" in "until")."""
    return i == 0 or not _is_word(text[i]) or not _is_word(text[i - 1])


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or Gradio's list of ``{"type": "text"}`` parts
    (other parts, such as files, are skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable) and not isinstance(content, Mapping):
        return "\n".join(
            p if isinstance(p, str) else str(p.get("text", ""))
            for p in content
            if isinstance(p, str) or (isinstance(p, Mapping) and p.get("type", "text") == "text")
        )
    return "" if content is None else str(content)


def _messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [
        {"role": str(m.get("role")), "content": message_text(m.get("content"))} for m in messages
    ]
