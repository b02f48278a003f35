"""The leaderboard service (cache, snapshots) and the tab's rendering, on a real store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import pandas as pd
import pytest

from arena.config import Registry
from arena.leaderboards import LeaderboardService, View
from arena.replies import Reply
from arena.store import Store
from arena.ui.leaderboard import ALL_CATEGORIES, LeaderboardTab, display_table, summary
from arena.votes import Winner

REGISTRY = Registry.model_validate(
    {
        "models": [
            {
                "name": name,
                "display_name": name.title(),
                "organization": f"{name} labs",
                "endpoint": "http://x",
                "url": f"https://example.org/{name}" if name == "alpha" else None,
                "license": "mit",
            }
            for name in ("alpha", "beta", "gamma")
        ]
    }
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def vote(store: Store, ids: count, model_a: str, model_b: str, winner: Winner) -> None:
    session, battle = f"s{next(ids)}", f"b{next(ids)}"
    store.record_session(session, ip_hash=f"ip{session}", username=None)
    conversations = store.start_battle(
        battle_id=battle, session_id=session, model_a=model_a, model_b=model_b
    )
    for conversation, model in zip(conversations, (model_a, model_b), strict=True):
        store.add_user_message(conversation, turn=0, content=f"question {battle}")
        reply = Reply(model=model, text=f"answer {battle}", tokens=2, finished=True)
        store.add_reply(conversation, turn=0, attempt=0, reply=reply, parameters={})
    store.record_vote(
        battle_id=battle, session_id=session, winner=winner, username=None, ip_hash=None
    )


def round_robin(store: Store, ids: count, rounds: int) -> None:
    """alpha beats beta beats gamma most of the time; everyone both wins and loses."""
    for _ in range(rounds):
        vote(store, ids, "alpha", "beta", Winner.MODEL_A)
        vote(store, ids, "beta", "gamma", Winner.MODEL_A)
        vote(store, ids, "alpha", "gamma", Winner.MODEL_A)
    vote(store, ids, "gamma", "alpha", Winner.MODEL_A)
    vote(store, ids, "gamma", "beta", Winner.TIE)
    vote(store, ids, "beta", "alpha", Winner.BOTH_BAD)


@pytest.fixture
def service(store):
    return LeaderboardService(store, REGISTRY, bootstrap_rounds=50, clock=Clock())


def test_no_leaderboard_before_the_first_vote(service):
    assert service.leaderboard(View()) is None
    assert service.refresh() == []


def test_recomputes_only_when_votes_arrive_and_keeps_each_as_a_snapshot(store, service):
    ids = count()
    round_robin(store, ids, 4)
    first = service.leaderboard(View())
    assert list(first.table["model"]) == ["alpha", "beta", "gamma"]
    assert service.leaderboard(View()) is first  # cached: no new votes
    assert len(service.history(View())) == 1

    vote(store, ids, "gamma", "alpha", Winner.MODEL_A)
    second = service.leaderboard(View())
    assert second is not first and second.battles_in == first.battles_in + 1
    history = service.history(View())
    assert [s["battles_used"] for s in history] == [first.battles_used, second.battles_used]
    assert history[0]["computed_at"] < history[1]["computed_at"]
    assert {r["model"] for r in history[1]["records"]} == {"alpha", "beta", "gamma"}


def test_refresh_recomputes_every_view_seen(store, service):
    round_robin(store, count(), 3)
    service.leaderboard(View(style_control=True))
    refreshed = service.refresh()
    assert sorted(lb.style_control for lb in refreshed) == [False, True]
    assert len(service.history(View(style_control=True))) == 2


def test_table_shows_rank_interval_link_and_style_column(store, service):
    round_robin(store, count(), 5)
    plain = display_table(service.leaderboard(View()), REGISTRY)
    top = plain.iloc[0]
    assert top["Model"] == "[Alpha](https://example.org/alpha)"
    assert top["Rank (UB)"] == 1 and top["Organisation"] == "alpha labs"
    assert top["95% CI"].startswith("+") and "/-" in top["95% CI"]
    assert plain["Votes"].sum() == 2 * (5 * 3 + 3)
    assert "Score without style control" not in plain.columns

    styled = display_table(service.leaderboard(View(style_control=True)), REGISTRY)
    assert "Score without style control" in styled.columns
    assert styled.iloc[0]["Model"] == "[Alpha](https://example.org/alpha)"


def test_summary_names_votes_filters_and_unrated_models(store, service):
    ids = count()
    round_robin(store, ids, 2)
    vote(store, ids, "delta", "alpha", Winner.MODEL_A)  # delta never lost: unbounded
    text = summary(service.leaderboard(View()), REGISTRY)
    assert "from **10** votes" in text
    assert "Not rated yet: delta" in text
    assert summary(None, REGISTRY).startswith("No votes yet")


def test_tab_update_renders_everything_and_writes_downloads(store, service, tmp_path):
    round_robin(store, count(), 3)
    tab = LeaderboardTab(service, REGISTRY, tmp_path)
    dropdown, note, table, ratings, history, wins, battles, csv, js = tab.update(
        ALL_CATEGORIES, False
    )
    assert "votes" in note
    assert dropdown.choices[0][0] == ALL_CATEGORIES
    assert list(table.value["headers"])[:3] == ["Rank (UB)", "Model", "Score"]
    assert len(ratings.data) == 1 and len(history.data) == 3  # one line per model
    assert wins.data[0].z.shape == (3, 3) and battles.data[0].z.sum() == 2 * 12
    downloaded = pd.read_csv(csv.value["path"])
    assert list(downloaded["model"]) == ["alpha", "beta", "gamma"]
    records = json.loads(Path(js.value["path"]).read_text())
    assert {"model", "rating", "ci_lower", "ci_upper", "rank", "votes", "win_rate"} <= set(
        records[0]
    )


def test_tab_update_before_any_vote_says_so(service, tmp_path):
    tab = LeaderboardTab(service, REGISTRY, tmp_path)
    outputs = tab.update(ALL_CATEGORIES, False)
    assert outputs[1].startswith("No votes yet") and outputs[2] is None
