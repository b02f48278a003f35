"""The store's writer thread: order, group commit, and a failing write that costs no other."""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import suppress

import duckdb
import pytest

from arena.replies import Reply
from arena.store import BattleOpening, RecordRejected, Store, StoreError
from arena.store.writer import BatchedWrite, StoreWriter


def new_battle(store: Store) -> tuple[str, str]:
    session = str(uuid.uuid4())
    store.record_session(session, ip_hash=None, username=None)
    return store.start_battle(
        battle_id=str(uuid.uuid4()), session_id=session, model_a="a", model_b="b"
    )


def reply(model: str) -> Reply:
    return Reply(model=model, text="hi", finished=True, finish_reason="stop", tokens=1)


def messages_of(store: Store, conversation: str) -> list[tuple[int, str]]:
    with store.cursor() as cursor:
        return cursor.execute(
            "SELECT turn, role FROM messages WHERE conversation_id = ? ORDER BY created_at, turn",
            [conversation],
        ).fetchall()


class CountingStore:
    """A store whose batches are counted, so a test can see what was committed together."""

    def __init__(self, store: Store) -> None:
        self.store, self.batches = store, 0

    def batch(self):
        self.batches += 1
        return self.store.batch()


def held_writer(store: Store) -> tuple[StoreWriter, CountingStore, threading.Event]:
    """A writer whose first write waits for the returned event, so that writes queue behind it."""
    counting = CountingStore(store)
    writer = StoreWriter(counting)  # type: ignore[arg-type]
    release = threading.Event()
    writer.submit(release.wait)
    return writer, counting, release


def test_writes_queued_behind_a_commit_are_committed_together_in_order(store):
    a, b = new_battle(store)
    writer, counting, release = held_writer(store)
    futures = []
    for turn in range(3):
        for conversation, model in ((a, "a"), (b, "b")):
            user = writer.submit(store.add_user_message, conversation, turn=turn, content="q")
            futures.append(user)
            futures.append(
                writer.submit(
                    store.add_reply,
                    conversation,
                    turn=turn,
                    attempt=0,
                    reply=reply(model),
                    parameters={},
                )
            )
    release.set()
    ids = [future.result(timeout=30) for future in futures]
    writer.close()

    assert counting.batches == 1, "the twelve queued writes share one commit"
    assert len(set(ids)) == 12
    # Each reply went in after its turn's user message: the store checks that order itself.
    expected = sorted((turn, role) for turn in range(3) for role in ("user", "assistant"))
    assert sorted(messages_of(store, a)) == expected
    assert sorted(messages_of(store, b)) == expected


def test_a_failing_write_gets_its_error_and_the_rest_of_its_batch_is_committed(store):
    a, b = new_battle(store)
    writer, _, release = held_writer(store)
    first = writer.submit(store.add_user_message, a, turn=0, content="q")
    wrong_turn = writer.submit(store.add_user_message, b, turn=5, content="q")
    duplicate = writer.submit(store.add_user_message, a, turn=0, content="again")
    after = writer.submit(store.add_user_message, b, turn=0, content="q")
    release.set()
    writer.close()

    assert first.result() and after.result()
    with pytest.raises(RecordRejected, match="turn 0, not 5"):
        wrong_turn.result()
    with pytest.raises(RecordRejected, match="next user message is turn 1, not 0"):
        duplicate.result()
    assert messages_of(store, a) == [(0, "user")]
    assert messages_of(store, b) == [(0, "user")]


def test_a_write_that_raises_mid_batch_is_rolled_back_and_replayed_alone(store):
    a, b = new_battle(store)

    def half_written() -> None:
        store.add_user_message(a, turn=0, content="q")
        raise RuntimeError("gave up half way")

    writer, _, release = held_writer(store)
    failed = writer.submit(half_written)
    kept = writer.submit(store.add_user_message, b, turn=0, content="q")
    release.set()
    writer.close()

    with pytest.raises(RuntimeError, match="half way"):
        failed.result()
    assert kept.result()
    # Replayed on its own without a batch, the failing write commits as it goes, as it would
    # have without the writer; its batch attempt left no second copy.
    assert messages_of(store, a) == [(0, "user")]
    assert messages_of(store, b) == [(0, "user")]


def opening(battle_id: str | None = None) -> BattleOpening:
    return BattleOpening(
        battle_id=battle_id or str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        model_a="a",
        model_b="b",
        prompt="q",
    )


def test_queued_calls_of_a_batched_write_run_as_one_call_in_order(store):
    calls: list[list[BattleOpening]] = []

    def open_battles(openings):
        calls.append(list(openings))
        return store.open_battles(openings)

    open_many = BatchedWrite(open_battles)
    a, _ = new_battle(store)
    writer, counting, release = held_writer(store)
    first = [opening() for _ in range(3)]
    opened = [writer.submit(open_many, o) for o in first]
    between = writer.submit(store.add_user_message, a, turn=0, content="q")
    last = opening()
    opened.append(writer.submit(open_many, last))
    release.set()
    pairs = [future.result(timeout=30) for future in opened]
    writer.close()

    assert counting.batches == 1
    # A write between two runs of calls splits them: the writes keep their order.
    assert calls == [first, [last]]
    assert between.result()
    with store.cursor() as cursor:
        stored = dict(cursor.execute("SELECT id, conversation_a FROM battles").fetchall())
    assert [stored[o.battle_id] for o in [*first, last]] == [side_a for side_a, _ in pairs]


def test_a_failing_batched_call_is_replayed_item_by_item(store):
    taken = opening()
    store.open_battles([taken])
    writer, _, release = held_writer(store)
    open_many = BatchedWrite(store.open_battles)
    before = writer.submit(open_many, opening())
    duplicate = writer.submit(open_many, opening(taken.battle_id))
    after = writer.submit(open_many, opening())
    release.set()
    writer.close()

    assert len(before.result()) == 2 and len(after.result()) == 2
    with pytest.raises(RecordRejected, match="were not recorded"):
        duplicate.result()
    with store.cursor() as cursor:
        assert cursor.execute("SELECT count(*) FROM battles").fetchone() == (3,)


def test_close_runs_every_submitted_write_and_then_refuses_more(store):
    a, _ = new_battle(store)
    writer = StoreWriter(store)
    futures = [writer.submit(store.add_user_message, a, turn=t, content="q") for t in range(20)]
    writer.close()
    assert all(future.done() and future.exception() is None for future in futures)
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(store.add_user_message, a, turn=20, content="q")
    writer.close()


def test_a_batch_rolls_back_as_a_whole_and_does_not_nest(store):
    a, _ = new_battle(store)
    with pytest.raises(RecordRejected), store.batch():
        store.add_user_message(a, turn=0, content="q")
        store.add_user_message(a, turn=0, content="q")
    assert messages_of(store, a) == []
    with store.batch(), pytest.raises(StoreError, match="already open"), store.batch():
        pass


def test_a_batch_in_which_a_statement_failed_raises_instead_of_losing_its_writes(store):
    # record_session swallows a key clash; DuckDB takes the commit of a transaction aborted
    # that way as a silent rollback, so the batch must notice and say so.
    a, _ = new_battle(store)

    def swallowed_clash() -> None:
        with store._cursor() as cursor, suppress(duckdb.ConstraintException):
            cursor.execute("INSERT INTO settings VALUES ('ip_salt', 'again')")

    with pytest.raises(StoreError, match="nothing of it was written"), store.batch():
        store.add_user_message(a, turn=0, content="q")
        swallowed_clash()
    assert messages_of(store, a) == []

    writer = StoreWriter(store)
    held = writer.submit(time.sleep, 0.2)
    kept = writer.submit(store.add_user_message, a, turn=0, content="q")
    clash = writer.submit(swallowed_clash)
    writer.close()
    assert held.done() and kept.result() and clash.exception() is None
    assert messages_of(store, a) == [(0, "user")], "replayed on its own after the failed batch"


def test_a_vote_is_refused_inside_a_batch_since_it_must_commit_before_it_returns(store):
    # The vote is acknowledged to the visitor once record_vote returns, and its number must be
    # committed under the store's vote lock (see Store.vote_snapshot): a batch would commit later.
    new_battle(store)
    with store.cursor() as cursor:
        [(battle, session)] = cursor.execute("SELECT id, session_id FROM battles").fetchall()
    with store.batch(), pytest.raises(StoreError, match="outside a store batch"):
        store.record_vote(
            battle_id=battle, session_id=session, winner="tie", username=None, ip_hash=None
        )
    assert store.vote_for(battle) is None
