"""arena.export.lists: a batch's battle configs, built in Arrow from its messages in any order."""

from __future__ import annotations

import random

import pyarrow as pa

from arena.export import lists

MESSAGES = pa.schema(
    [
        ("position", pa.int32()),
        ("turn", pa.int32()),
        ("reply", pa.bool_()),
        ("attempt", pa.int32()),
        ("role", pa.string()),
        ("content", pa.string()),
        ("finished", pa.bool_()),
        ("error_kind", pa.string()),
        ("tstamp", pa.float64()),
    ]
)


def sides(battles: int) -> pa.Table:
    """Two conversations per battle, side a at even positions, as `export_sides` numbers them."""
    count = 2 * battles
    return pa.table(
        {
            "conversation_id": [f"c{i}" for i in range(count)],
            "question_id": [f"q{i // 2}" for i in range(count)],
            "mode": ["battle"] * count,
            "side": ["a", "b"] * battles,
            "model": ["alpha", "beta"] * battles,
            "judge": ["arena_judge"] * count,
            "battle_winner": ["model_a"] * count,
            "language": pa.nulls(count, pa.string()),
            "tstamp": [float(i // 2) for i in range(count)],
            "text_shared": [True] * count,
        }
    )


def votes(battles: int) -> pa.Table:
    return pa.table(
        {
            "question_id": [f"q{i}" for i in range(battles)],
            "model_a": ["alpha"] * battles,
            "model_b": ["beta"] * battles,
            "winner": ["model_a"] * battles,
            "judge": ["arena_judge"] * battles,
            "position_a": pa.array([2 * i for i in range(battles)], pa.int64()),
            "position_b": pa.array([2 * i + 1 for i in range(battles)], pa.int64()),
            "anony": [True] * battles,
            "language": pa.nulls(battles, pa.string()),
            "tstamp": [float(i) for i in range(battles)],
            "category_tags": pa.array([[] for _ in range(battles)], pa.list_(pa.string())),
            "text_shared": [True] * battles,
        }
    )


def two_turns(position: int) -> list[dict[str, object]]:
    """A conversation of two turns whose replies were each regenerated once, in stored order."""
    return [
        {
            "position": position,
            "turn": turn,
            "reply": role == "assistant",
            "attempt": attempt,
            "role": role,
            "content": f"{position}/{turn}/{role}/{attempt}",
            "finished": True if role == "assistant" else None,
            "error_kind": None,
            "tstamp": float(turn),
        }
        for turn in range(2)
        for role, attempts in (("user", 1), ("assistant", 2))
        for attempt in range(attempts)
    ]


def shuffled(rows: list[dict[str, object]]) -> pa.Table:
    """The rows in random order and in two chunks, as DuckDB's two threads hand them over."""
    rows = random.Random(7).sample(rows, len(rows))
    half = len(rows) // 2
    return pa.concat_tables(
        [pa.Table.from_pylist(part, schema=MESSAGES) for part in (rows[:half], rows[half:])]
    )


def test_each_conversation_lists_its_messages_by_turn_user_first_then_attempt():
    stored = [row for position in range(6) for row in two_turns(position)]

    built = lists.BattleLists(sides(3), shuffled(stored)).conversations()

    listed = built.column("messages").to_pylist()
    for position, messages in enumerate(listed):
        expected = [row["content"] for row in two_turns(position)]
        assert [message["content"] for message in messages] == expected
        assert [message["latest"] for message in messages] == [True, False, True] * 2


def test_a_battle_shows_the_latest_attempt_of_each_turn():
    stored = [row for position in range(4) for row in two_turns(position)]

    battles = lists.BattleLists(sides(2), shuffled(stored)).battles(votes(2)).table()

    side_a = battles.column("conversation_a").to_pylist()[1]
    assert [message["content"] for message in side_a] == [
        "2/0/user/0",
        "2/0/assistant/1",
        "2/1/user/0",
        "2/1/assistant/1",
    ]
    assert battles.column("turn").to_pylist() == [2, 2]
