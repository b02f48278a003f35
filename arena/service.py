"""The arena service: what the UI calls. It runs battles against the model clients and the store.

The UI holds one `Battle` per browser session (server-side Gradio state) and passes it in; every
rule about what may happen next lives in `arena.battles`, and every write goes through
`arena.store`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from arena.battles import Battle, BattleError, Limits, Phase, Sampling, Side, draw_pair, pick_pair
from arena.categories import categorize
from arena.config import GenerationParameters, Registry
from arena.replies import Message, Reply
from arena.store import Store, VoteRejected
from arena.votes import Winner

log = logging.getLogger(__name__)

UPDATE_INTERVAL_S = 0.05
"""At most 20 UI updates a second per battle: tokens arriving faster are coalesced."""


class StreamingClient(Protocol):
    def stream(
        self, messages: list[Message], parameters: GenerationParameters | None = None
    ) -> AsyncIterator[Reply]: ...


@dataclass(frozen=True)
class Visitor:
    """Who acts: the arena's own session id, a salted hash of the IP, the logged-in user if any."""

    session_id: str
    ip_hash: str | None = None
    username: str | None = None


class BattleService:
    """Battles: draw a pair (anonymous) or take the user's (named side-by-side), stream both
    replies at once, take one vote. Both kinds are stored and voted on alike; only anonymous
    ones are rated by default (the store keeps ``anony``)."""

    def __init__(
        self,
        registry: Registry,
        store: Store,
        clients: Mapping[str, StreamingClient],
        limits: Limits,
        rng: random.Random | None = None,
        update_interval_s: float = UPDATE_INTERVAL_S,
    ) -> None:
        playing = {m.name for m in [*registry.battle_candidates, *registry.side_by_side]}
        missing = sorted(playing - set(clients))
        if missing:
            raise ValueError(f"no client for battle models {missing}")
        self._registry = registry
        self._store = store
        self._clients = clients
        self.limits = limits
        self._rng = rng or random.SystemRandom()
        self._update_interval_s = update_interval_s

    def new_battle(self, visitor: Visitor) -> Battle:
        """An empty anonymous battle; its pair is drawn when the first message is sent."""
        return Battle(session_id=visitor.session_id)

    def new_side_by_side(self, visitor: Visitor, model_a: str, model_b: str) -> Battle:
        """An empty named battle of the two models the user picked (by name); `BattleError`
        unless both are offered in the Side-by-side tab. Stored when the first message is sent."""
        pair = pick_pair(self._registry.side_by_side, model_a, model_b)
        return Battle(session_id=visitor.session_id, models=pair)

    async def send(
        self, battle: Battle, prompt: str, visitor: Visitor, sampling: Sampling | None = None
    ) -> AsyncIterator[Battle]:
        """Send a user message to both sides and stream their replies.

        ``sampling`` is the user's choice of generation parameters, for named battles only.
        Raises `BattleError` before the first update if the battle cannot take this message.
        """
        self._check_owner(battle, visitor)
        battle.check_can_send(prompt, self.limits)
        parameters = self._parameters_for(battle, sampling)
        if battle.sides is None:
            await asyncio.to_thread(self._open, battle, visitor)
        else:
            for side in battle.sides:
                side.history.append({"role": "user", "content": battle.prompts[-1]})
                side.history.append({"role": "assistant", "content": side.reply.text})
        battle.prompts.append(prompt)
        battle.attempt = 0
        turn = battle.turns - 1
        for side in battle.sides:
            await asyncio.to_thread(
                self._store.add_user_message, side.conversation_id, turn=turn, content=prompt
            )
        async for update in self._stream_both(battle, parameters):
            yield update

    async def regenerate(
        self, battle: Battle, visitor: Visitor, sampling: Sampling | None = None
    ) -> AsyncIterator[Battle]:
        """Ask both sides again for the current turn; the replaced replies stay in the store.

        ``sampling`` as for `send`: a named battle may regenerate with other parameters."""
        self._check_owner(battle, visitor)
        battle.check_can_regenerate()
        parameters = self._parameters_for(battle, sampling)
        battle.attempt += 1
        async for update in self._stream_both(battle, parameters):
            yield update

    def vote(self, battle: Battle, winner: Winner, visitor: Visitor) -> Battle:
        """Record the one vote of this battle; committed to disk before this returns."""
        self._check_owner(battle, visitor)
        battle.check_can_vote()
        try:
            self._store.record_vote(
                battle_id=battle.id,
                session_id=visitor.session_id,
                winner=winner,
                username=visitor.username,
                ip_hash=visitor.ip_hash,
            )
        except VoteRejected as rejected:
            # Two concurrent requests of one session can both pass the in-memory check.
            raise BattleError(str(rejected)) from None
        battle.winner = winner
        battle.phase = Phase.VOTED
        self._tag(battle)
        return battle

    def _tag(self, battle: Battle) -> None:
        """Store the battle's categories for the leaderboard; the vote stands even if this fails."""
        assert battle.sides is not None
        try:
            per_side = [categorize(_transcript(battle, side)) for side in battle.sides]
            self._store.tag_battle(
                battle.id,
                tags=per_side[0].tags | per_side[1].tags,
                language=per_side[0].language,
            )
        except Exception:
            log.exception("could not tag battle %s; it is rated without categories", battle.id)

    @staticmethod
    def _check_owner(battle: Battle, visitor: Visitor) -> None:
        if battle.session_id != visitor.session_id:
            raise BattleError("This battle belongs to another session.")

    @staticmethod
    def _parameters_for(
        battle: Battle, sampling: Sampling | None
    ) -> tuple[GenerationParameters, GenerationParameters] | None:
        """Each side's parameters for the next replies (None: the entries' own), checked."""
        if sampling is None:
            return None
        if battle.models is None:
            raise BattleError("Anonymous battles use each model's own generation parameters.")
        return sampling.for_model(battle.models[0]), sampling.for_model(battle.models[1])

    def _open(self, battle: Battle, visitor: Visitor) -> None:
        if battle.models is None:
            model_a, model_b = draw_pair(self._registry.battle_candidates, self._rng)
        else:
            model_a, model_b = battle.models
        self._store.record_session(
            visitor.session_id, ip_hash=visitor.ip_hash, username=visitor.username
        )
        conversation_a, conversation_b = self._store.start_battle(
            battle_id=battle.id,
            session_id=visitor.session_id,
            model_a=model_a.name,
            model_b=model_b.name,
            anony=battle.anony,
        )
        battle.sides = (Side(model_a, conversation_a), Side(model_b, conversation_b))

    async def _stream_both(
        self,
        battle: Battle,
        parameters: tuple[GenerationParameters, GenerationParameters] | None,
    ) -> AsyncIterator[Battle]:
        """Stream both sides concurrently, yielding the battle at most every update interval."""
        assert battle.sides is not None
        for side, chosen in zip(battle.sides, parameters or (None, None), strict=True):
            side.parameters = chosen
        battle.phase = Phase.STREAMING
        turn, attempt = battle.turns - 1, battle.attempt
        prompt: Message = {"role": "user", "content": battle.prompts[-1]}
        changed = asyncio.Event()
        recorded: set[int] = set()

        async def pump(index: int, side: Side) -> None:
            side.reply = Reply(model=side.model.name)
            client = self._clients[side.model.name]
            async for reply in client.stream([*side.history, prompt], side.parameters):
                side.reply = reply
                changed.set()
            recorded.add(index)
            await asyncio.to_thread(self._record_reply, side, turn, attempt)

        tasks = [asyncio.create_task(pump(i, side)) for i, side in enumerate(battle.sides)]
        try:
            while pending := [task for task in tasks if not task.done()]:
                waiter = asyncio.create_task(changed.wait())
                await asyncio.wait([waiter, *pending], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                changed.clear()
                yield battle
                await asyncio.sleep(self._update_interval_s)
            for task in tasks:
                task.result()
            battle.settle()
            yield battle
        finally:
            for task in tasks:
                task.cancel()
            # A reader who leaves mid-stream still leaves a record of what was generated.
            for index, side in enumerate(battle.sides):
                if index not in recorded:
                    self._record_reply(side, turn, attempt)
            if battle.phase is Phase.STREAMING:
                battle.phase = Phase.FAILED

    def _record_reply(self, side: Side, turn: int, attempt: int) -> None:
        assert side.reply is not None
        self._store.add_reply(
            side.conversation_id,
            turn=turn,
            attempt=attempt,
            reply=side.reply,
            parameters=_parameters(side),
        )


def _transcript(battle: Battle, side: Side) -> list[Message]:
    """The side's whole conversation, current turn included."""
    assert side.reply is not None
    return [
        *side.history,
        {"role": "user", "content": battle.prompts[-1]},
        {"role": "assistant", "content": side.reply.text},
    ]


def _parameters(side: Side) -> dict[str, object]:
    """The parameters a reply was generated with, as stored with it."""
    parameters = side.parameters or side.model.parameters
    return {"model_id": side.model.model_id, **parameters.model_dump()}
