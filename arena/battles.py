"""Battle rules, free of I/O: drawing a pair, the limits on a prompt, and when a vote is allowed.

Two kinds of battle follow the same rules: anonymous ones (the Battle tab), whose pair is drawn
when the first message is sent and named only after the vote, and named side-by-side ones, whose
two models the user picked, with the generation parameters they chose (`Sampling`).

The service keeps one `Battle` per browser session on the server side and asks it before every
action; nothing the browser sends can move a battle into a state these rules do not allow.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from arena.config import GenerationParameters, ModelEntry
from arena.replies import Message, Reply
from arena.votes import Winner


class BattleError(Exception):
    """An action the battle's state does not allow; the message is shown to the user."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one user may send in one battle."""

    max_prompt_chars: int = 4000
    max_turns: int = 8


class Phase(StrEnum):
    NEW = "new"  # no message sent yet: no pair drawn
    STREAMING = "streaming"
    READY = "ready"  # both replies finished without error: votable
    FAILED = "failed"  # a side failed: regenerate or start a new round
    VOTED = "voted"


def draw_pair(
    candidates: Sequence[ModelEntry], rng: random.Random
) -> tuple[ModelEntry, ModelEntry]:
    """Two different models drawn by weight; the order is random, so either may be Model A."""
    pool = [m for m in candidates if m.weight > 0]
    if len(pool) < 2:
        raise BattleError(
            "Battles need at least two enabled models with a positive weight; "
            f"the registry has {len(pool)}."
        )
    first = rng.choices(pool, weights=[m.weight for m in pool])[0]
    rest = [m for m in pool if m.name != first.name]
    second = rng.choices(rest, weights=[m.weight for m in rest])[0]
    pair = [first, second]
    rng.shuffle(pair)
    return pair[0], pair[1]


def pick_pair(
    candidates: Sequence[ModelEntry], name_a: str, name_b: str
) -> tuple[ModelEntry, ModelEntry]:
    """The two models a user named for a side-by-side battle, from the models offered there.

    An unknown, disabled or hidden name gets the same answer, so that the error does not tell
    whether a hidden (e.g. unreleased) model exists. The same model on both sides is refused:
    with one set of parameters for both, the vote would only compare two samples of one model,
    which rates nothing.
    """
    offered = {m.name: m for m in candidates if m.enabled and m.side_by_side}
    for name in (name_a, name_b):
        if name not in offered:
            raise BattleError(f"There is no model {name!r} to pick in the Side-by-side tab.")
    if name_a == name_b:
        raise BattleError("Pick two different models to compare.")
    return offered[name_a], offered[name_b]


@dataclass(frozen=True)
class Sampling:
    """Generation parameters a user chose in the Side-by-side tab, for both sides at once.

    The entry's own ``parameters`` are the defaults; a user may set temperature within
    [0, 2] and top_p within (0, 1], and lower max_new_tokens down to 1 but never above the
    entry's value, so that a model owner's cost bound holds. Its stop sequences are kept.
    """

    temperature: float
    top_p: float
    max_new_tokens: int

    @classmethod
    def defaults(cls, model_a: ModelEntry, model_b: ModelEntry) -> Sampling:
        """What the tab starts from: Model A's temperature and top_p, and the largest
        max_new_tokens both models allow."""
        return cls(
            temperature=model_a.parameters.temperature,
            top_p=model_a.parameters.top_p,
            max_new_tokens=max_new_tokens_cap(model_a, model_b),
        )

    def for_model(self, entry: ModelEntry) -> GenerationParameters:
        """The parameters of one side's requests; `BattleError` if out of bounds."""
        temperature, top_p, tokens = self.temperature, self.top_p, self.max_new_tokens
        if not (_is_number(temperature) and 0 <= temperature <= 2):
            raise BattleError(f"Temperature must be between 0 and 2, not {temperature!r}.")
        if not (_is_number(top_p) and 0 < top_p <= 1):
            raise BattleError(f"Top-p must be above 0 and at most 1, not {top_p!r}.")
        cap = entry.parameters.max_new_tokens
        if not (_is_number(tokens) and tokens == int(tokens) and 1 <= tokens <= cap):
            raise BattleError(
                f"Max new tokens must be a whole number from 1 to {cap} for "
                f"{entry.display_name}, not {tokens!r}."
            )
        return entry.parameters.model_copy(
            update={
                "temperature": float(temperature),
                "top_p": float(top_p),
                "max_new_tokens": int(tokens),
            }
        )


def max_new_tokens_cap(model_a: ModelEntry, model_b: ModelEntry) -> int:
    """The most new tokens a user may ask of both models at once."""
    return min(model_a.parameters.max_new_tokens, model_b.parameters.max_new_tokens)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def prompt_problem(prompt: str, turns_done: int, limits: Limits) -> str | None:
    """Why a prompt cannot be sent, or None if it can. Empty prompts are the caller's to ignore."""
    if turns_done >= limits.max_turns:
        return (
            f"This battle has reached its limit of {limits.max_turns} turns. "
            "Vote, or start a new round."
        )
    if len(prompt) > limits.max_prompt_chars:
        return (
            f"Your message is {len(prompt):,} characters long; the limit is "
            f"{limits.max_prompt_chars:,}. Shorten it and send again (nothing was sent)."
        )
    return None


@dataclass
class Side:
    """One side of a battle."""

    model: ModelEntry
    conversation_id: str
    parameters: GenerationParameters | None = None
    """The generation parameters the user chose for the current turn (side-by-side battles);
    None: the entry's own."""
    history: list[Message] = field(default_factory=list)
    """Finished turns sent to the model, without the system prompt."""
    reply: Reply | None = None
    """The reply to the current turn (streaming or finished)."""


@dataclass
class Battle:
    """One battle as the server sees it: anonymous, or named side-by-side."""

    session_id: str
    models: tuple[ModelEntry, ModelEntry] | None = None
    """The two models a user picked for a named side-by-side battle (A, B); None for an
    anonymous battle, whose pair is drawn when the first message is sent."""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    phase: Phase = Phase.NEW
    sides: tuple[Side, Side] | None = None
    prompts: list[str] = field(default_factory=list)
    attempt: int = 0
    """How many times the current turn was regenerated."""
    winner: Winner | None = None

    @property
    def anony(self) -> bool:
        """Anonymous (names hidden until the vote, rated) rather than named side-by-side."""
        return self.models is None

    @property
    def turns(self) -> int:
        return len(self.prompts)

    def check_can_send(self, prompt: str, limits: Limits) -> None:
        if self.phase is Phase.VOTED:
            raise BattleError("You already voted on this battle. Start a new round to chat again.")
        if self.phase is Phase.STREAMING:
            raise BattleError("Wait for both replies to finish before sending another message.")
        if self.phase is Phase.FAILED:
            raise BattleError("A reply failed. Regenerate it, or start a new round.")
        problem = prompt_problem(prompt, self.turns, limits)
        if problem:
            raise BattleError(problem)

    def check_can_regenerate(self) -> None:
        if self.phase is Phase.VOTED:
            raise BattleError("You already voted on this battle. Start a new round.")
        if self.phase is Phase.STREAMING:
            raise BattleError("Wait for both replies to finish before regenerating.")
        if self.phase is Phase.NEW:
            raise BattleError("Nothing to regenerate yet: send a message first.")

    def check_can_vote(self) -> None:
        if self.phase is Phase.VOTED:
            raise BattleError("This battle already has your vote. Start a new round to vote again.")
        if self.phase is Phase.NEW:
            raise BattleError("There is nothing to vote on yet: send a message first.")
        if self.phase is Phase.STREAMING:
            raise BattleError("Wait for both replies to finish before voting.")
        if self.phase is Phase.FAILED:
            raise BattleError(
                "A reply failed, so this battle cannot be voted on. "
                "Regenerate or start a new round."
            )

    def settle(self) -> None:
        """Move out of STREAMING once both replies have finished."""
        assert self.sides is not None
        replies = [side.reply for side in self.sides]
        if all(r is not None and r.ok for r in replies):
            self.phase = Phase.READY
        else:
            self.phase = Phase.FAILED
