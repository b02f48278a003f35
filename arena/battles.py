"""Battle rules, free of I/O: drawing a pair, the limits on a prompt, and when a vote is allowed.

The service keeps one `Battle` per browser session on the server side and asks it before every
action; nothing the browser sends can move a battle into a state these rules do not allow.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from arena.config import ModelEntry
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
    """One anonymous side of a battle."""

    model: ModelEntry
    conversation_id: str
    history: list[Message] = field(default_factory=list)
    """Finished turns sent to the model, without the system prompt."""
    reply: Reply | None = None
    """The reply to the current turn (streaming or finished)."""


@dataclass
class Battle:
    """One anonymous battle as the server sees it."""

    session_id: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    phase: Phase = Phase.NEW
    sides: tuple[Side, Side] | None = None
    prompts: list[str] = field(default_factory=list)
    attempt: int = 0
    """How many times the current turn was regenerated."""
    winner: Winner | None = None

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
