"""The arena service: what the UI calls. It runs battles against the model clients and the store.

The UI holds one `Battle` per browser session (server-side Gradio state) and passes it in; every
rule about what may happen next lives in `arena.battles`, and every write goes through
`arena.store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from arena.battles import Battle, BattleError, Limits, Phase, Sampling, Side, draw_pair, pick_pair
from arena.categories import categorize
from arena.config import GenerationParameters, ModelEntry, Registry
from arena.export.terms import TERMS_VERSION
from arena.replies import Message, Reply
from arena.store import BattleOpening, ReplyRecord, Store, VoteRejected
from arena.store.writer import BatchedWrite, StoreWriter
from arena.votes import Winner

log = logging.getLogger(__name__)

UPDATE_INTERVAL_S = 0.05
"""At most 20 UI updates a second per battle: tokens arriving faster are coalesced."""

SAVE_TIMEOUT_S = 30.0
"""How long a vote waits for the battle's replies to be written before asking to retry."""


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
    ones are rated by default (the store keeps ``anony``).

    A battle's messages and replies are written by one writer thread (`StoreWriter`, group
    commit), in the order they are submitted, while the models stream: the model requests go
    out without waiting for the store (a DuckDB commit costs milliseconds), and a reply,
    submitted after its turn, is always written after it. A battle is votable once both replies
    have streamed; the vote waits until both are committed (a burst of battles queues their
    writes, and the buttons need not wait for them), then is written by the caller's thread,
    committed before it returns.
    """

    def __init__(
        self,
        registry: Registry,
        store: Store,
        clients: Mapping[str, StreamingClient],
        limits: Limits,
        rng: random.Random | None = None,
        update_interval_s: float = UPDATE_INTERVAL_S,
        save_timeout_s: float = SAVE_TIMEOUT_S,
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
        self._writer = StoreWriter(store)
        self._opening = BatchedWrite(self._write_openings)
        self._reply = BatchedWrite(self._write_replies)
        self._save_timeout_s = save_timeout_s
        self._reply_writes: dict[str, tuple[Future[None], ...]] = {}
        """Per battle, the writes of its latest replies that have not yet succeeded."""
        self._reply_writes_lock = threading.Lock()

    def new_battle(self, visitor: Visitor) -> Battle:
        """An empty anonymous battle; its pair is drawn when the first message is sent."""
        return Battle(session_id=visitor.session_id)

    def new_side_by_side(self, visitor: Visitor, model_a: str, model_b: str) -> Battle:
        """An empty named battle of the two models the user picked (by name); `BattleError`
        unless both are offered in the Side-by-side tab. Stored when the first message is sent."""
        pair = pick_pair(self._registry.side_by_side, model_a, model_b)
        return Battle(session_id=visitor.session_id, models=pair)

    async def send(
        self,
        battle: Battle,
        prompt: str,
        visitor: Visitor,
        sampling: Sampling | None = None,
        *,
        share: bool | None = None,
    ) -> AsyncIterator[Battle]:
        """Send a user message to both sides and stream their replies.

        ``sampling`` is the user's choice of generation parameters, for named battles only.
        ``share`` is the visitor's data-sharing choice (None: none) made before the session
        had an id: a battle's first message records it with the battle, unless the session
        has a choice by then. Raises `BattleError` before the first update if the battle
        cannot take this message.
        """
        self._check_owner(battle, visitor)
        battle.check_can_send(prompt, self.limits)
        parameters = self._parameters_for(battle, sampling)
        opening = battle.sides is None
        if battle.sides is None:
            model_a, model_b = self._pair(battle)
            # The conversation ids come from the store: the writer sets them
            # (`_write_openings`) before it writes anything else of the battle.
            battle.sides = (Side(model_a, ""), Side(model_b, ""))
        else:
            for side in battle.sides:
                side.history.append({"role": "user", "content": battle.prompts[-1]})
                side.history.append({"role": "assistant", "content": side.reply.text})
        battle.prompts.append(prompt)
        battle.attempt = 0
        turn = battle.turns - 1
        if opening:
            written = self._write(battle, turn, self._opening, (battle, visitor, share))
        else:
            written = self._write(battle, turn, self._write_turn, battle, turn)
        async for update in self._stream_both(battle, parameters, written):
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
        async for update in self._stream_both(battle, parameters, None):
            yield update

    def vote(self, battle: Battle, winner: Winner, visitor: Visitor) -> Battle:
        """Record the one vote of this battle, once its replies are; committed to disk before
        this returns."""
        self._check_owner(battle, visitor)
        battle.check_can_vote()
        self._wait_for_replies(battle)
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

    def _saving_replies(self, battle: Battle, writes: tuple[Future[None], ...]) -> None:
        """Note the writes of the battle's latest replies, until they have succeeded."""
        with self._reply_writes_lock:
            self._reply_writes[battle.id] = writes

        def written(_: Future[None]) -> None:
            # In the writer thread; a regeneration may have noted newer writes meanwhile.
            if all(w.done() and w.exception() is None for w in writes):
                with self._reply_writes_lock:
                    if self._reply_writes.get(battle.id) is writes:
                        del self._reply_writes[battle.id]

        for write in writes:
            write.add_done_callback(written)

    def _wait_for_replies(self, battle: Battle) -> None:
        """A vote counts stored replies only: wait for their writes (queued behind others)."""
        try:
            for write in self._reply_writes.get(battle.id, ()):
                write.result(timeout=self._save_timeout_s)
        except TimeoutError:
            message = "The replies are still being saved. Vote again in a moment."
            raise BattleError(message) from None
        except Exception:  # logged by _write
            battle.phase = Phase.FAILED
            raise BattleError(
                "The replies could not be saved, so this battle cannot be voted on. "
                "Regenerate or start a new round."
            ) from None

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

    def _pair(self, battle: Battle) -> tuple[ModelEntry, ModelEntry]:
        if battle.models is None:
            return draw_pair(self._registry.battle_candidates, self._rng)
        return battle.models

    def _write_openings(
        self, openings: Sequence[tuple[Battle, Visitor, bool | None]]
    ) -> list[None]:
        """In the writer: new battles with their sessions, choices and first user messages, all
        at once (a burst of battles queues many)."""
        records = []
        for battle, visitor, share in openings:
            assert battle.sides is not None
            records.append(
                BattleOpening(
                    battle_id=battle.id,
                    session_id=visitor.session_id,
                    model_a=battle.sides[0].model.name,
                    model_b=battle.sides[1].model.name,
                    prompt=battle.prompts[0],
                    anony=battle.anony,
                    ip_hash=visitor.ip_hash,
                    username=visitor.username,
                    share=share,
                    terms_version=TERMS_VERSION,
                )
            )
        pairs = self._store.open_battles(records)
        for (battle, _, _), (side_a, side_b) in zip(openings, pairs, strict=True):
            assert battle.sides is not None
            battle.sides[0].conversation_id, battle.sides[1].conversation_id = side_a, side_b
        return [None] * len(openings)

    def _write_turn(self, battle: Battle, turn: int) -> None:
        """In the writer: each side's user message of a later ``turn``."""
        assert battle.sides is not None
        for side in battle.sides:
            self._store.add_user_message(
                side.conversation_id, turn=turn, content=battle.prompts[turn]
            )

    async def _stream_both(
        self,
        battle: Battle,
        parameters: tuple[GenerationParameters, GenerationParameters] | None,
        written: Future[None] | None,
    ) -> AsyncIterator[Battle]:
        """Stream both sides concurrently, yielding the battle at most every update interval.

        ``written`` is the write of this turn's user messages, if it is new: a failed write
        ends the stream with its error at once (the replies could not be written after it).
        """
        assert battle.sides is not None
        for side, chosen in zip(battle.sides, parameters or (None, None), strict=True):
            side.parameters = chosen
        battle.phase = Phase.STREAMING
        turn, attempt = battle.turns - 1, battle.attempt
        prompt: Message = {"role": "user", "content": battle.prompts[-1]}
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        records: dict[int, Future[None]] = {}

        def wake(_: Future[None]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: no stream left to wake
                loop.call_soon_threadsafe(changed.set)

        if written is not None:
            written.add_done_callback(wake)

        async def pump(index: int, side: Side) -> None:
            try:
                side.reply = Reply(model=side.model.name)
                client = self._clients[side.model.name]
                async for reply in client.stream([*side.history, prompt], side.parameters):
                    side.reply = reply
                    changed.set()
                records[index] = self._record(battle, side, turn, attempt)
            finally:
                changed.set()  # the loop sees this side end, even by an exception

        tasks = [asyncio.create_task(pump(i, side)) for i, side in enumerate(battle.sides)]
        try:
            while True:
                # One wake per interval at most, whatever the number of tokens: each token
                # only sets the event.
                await changed.wait()
                changed.clear()
                if written is not None and written.done():
                    written.result()
                if all(task.done() for task in tasks):
                    break
                yield battle
                await asyncio.sleep(self._update_interval_s)
            for task in tasks:
                task.result()
            battle.settle()
            self._saving_replies(battle, tuple(records.values()))
            yield battle
        finally:
            for task in tasks:
                task.cancel()
            if battle.phase is Phase.STREAMING:
                battle.phase = Phase.FAILED
            # A reader who leaves mid-stream still leaves a record of what was generated.
            for index, side in enumerate(battle.sides):
                if index not in records:
                    self._record(battle, side, turn, attempt)

    def flush(self) -> None:
        """Wait until the battles' writes submitted so far are committed: a stream ends as soon
        as its models do, before its turn and replies are on disk."""
        self._writer.flush()

    def close(self) -> None:
        """Wait for the writes submitted so far, then stop the writer: call it before the
        store closes. Streams still running fail to write their replies."""
        self._writer.close()

    def _write(
        self, battle: Battle, turn: int, write: Callable[..., None], *args: object
    ) -> Future[None]:
        """Submit a write to the writer. Its failure is logged, whoever waits for it (maybe no
        one: a reader may have left), so that none goes unnoticed."""

        def logged(done: Future[None]) -> None:
            if done.exception() is not None:
                log.error(
                    "battle %s, turn %d: %s failed",
                    battle.id,
                    turn,
                    write.__name__,
                    exc_info=done.exception(),
                )

        future = self._writer.submit(write, *args)
        future.add_done_callback(logged)
        return future

    def _record(self, battle: Battle, side: Side, turn: int, attempt: int) -> Future[None]:
        """Submit the write of the side's reply as it is now (a copy: the writer thread reads
        it while the stream may still change the original)."""
        assert side.reply is not None
        reply = dataclasses.replace(side.reply)
        return self._write(battle, turn, self._reply, (side, reply, turn, attempt))

    def _write_replies(self, replies: Sequence[tuple[Side, Reply, int, int]]) -> list[None]:
        """In the writer: replies, as (side, reply, turn, attempt), all at once (the replies
        of a burst of battles end together). The sides' conversation ids are set by then."""
        self._store.add_replies(
            [
                ReplyRecord(side.conversation_id, turn, attempt, reply, _parameters(side))
                for side, reply, turn, attempt in replies
            ]
        )
        return [None] * len(replies)


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
