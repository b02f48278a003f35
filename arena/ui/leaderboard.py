"""The Leaderboard tab: ratings with intervals, matrices, history and downloads.

It shows what `LeaderboardService` computed; a `gr.Timer` refreshes it without a page reload
(the service recomputes only when votes arrived).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from arena.config import ModelEntry, Registry
from arena.leaderboards import LeaderboardService, View
from arena.ratings import Leaderboard

ALL_CATEGORIES = "All battles"
REFRESH_SECONDS = 30.0
TABLE_HEADERS = [
    "Rank (UB)",
    "Model",
    "Score",
    "95% CI",
    "Votes",
    "Win rate",
    "Organisation",
    "Licence",
    "Description",
]


def _interval(rating: float, lower: float, upper: float) -> str:
    if math.isnan(lower) or math.isnan(upper):
        return "n/a"

    def bound(value: float) -> str:
        return "∞" if math.isinf(value) else f"{abs(value):.0f}"

    return f"+{bound(upper - rating)}/-{bound(rating - lower)}"


def _model_cell(name: str, entry: ModelEntry | None) -> str:
    if entry is None:
        return name
    return f"[{entry.display_name}]({entry.url})" if entry.url else entry.display_name


def display_table(leaderboard: Leaderboard, registry: Registry) -> pd.DataFrame:
    """The table as shown: style-controlled scores first when style control is on."""
    entries = {m.name: m for m in registry.models}
    table = leaderboard.table
    prefix = "style_" if leaderboard.style_control else ""
    rows = []
    for row in table.itertuples(index=False):
        record = row._asdict()
        entry = entries.get(record["model"])
        rating = record[f"{prefix}rating"]
        shown = {
            "Rank (UB)": int(record[f"{prefix}rank"]),
            "Model": _model_cell(record["model"], entry),
            "Score": round(rating),
            "95% CI": _interval(rating, record[f"{prefix}ci_lower"], record[f"{prefix}ci_upper"]),
            "Votes": int(record["votes"]),
            "Win rate": f"{record['win_rate']:.0%}",
            "Organisation": entry.organization if entry else "",
        }
        shown["Licence"] = entry.license if entry else ""
        shown["Description"] = entry.description if entry else ""
        if leaderboard.style_control:
            shown["Score without style control"] = round(record["rating"])
        rows.append(shown)
    frame = pd.DataFrame(rows, columns=_headers(leaderboard.style_control))
    if leaderboard.style_control and not frame.empty:
        frame = frame.sort_values(["Rank (UB)", "Score"], ascending=[True, False])
    return frame


def _headers(style_control: bool) -> list[str]:
    return [*TABLE_HEADERS, "Score without style control"] if style_control else TABLE_HEADERS


def _datatypes(style_control: bool) -> list[str]:
    return ["markdown" if h == "Model" else "str" for h in _headers(style_control)]


def summary(leaderboard: Leaderboard | None, registry: Registry) -> str:
    if leaderboard is None:
        return "No votes yet: the leaderboard appears after the first vote in the Battle tab."
    when = leaderboard.computed_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    removed = [
        f"{step.name.replace('_', ' ')}: {step.removed}"
        for step in leaderboard.filter_report
        if step.enabled and step.removed
    ]
    lines = [
        f"Computed {when} from **{leaderboard.battles_in}** votes; "
        f"**{leaderboard.battles_used}** battles rated after filters"
        + (f" (removed: {', '.join(removed)})" if removed else "")
        + f". 95% intervals from {leaderboard.bootstrap_rounds} bootstrap rounds."
    ]
    if leaderboard.table.empty:
        lines += [f"- {note}" for note in leaderboard.notes]
    if not leaderboard.unrated.empty:
        names = {m.name: m.display_name for m in registry.models}
        unrated = ", ".join(
            f"{names.get(row.model, row.model)} ({row.reason})"
            for row in leaderboard.unrated.itertuples(index=False)
        )
        lines.append(f"- Not rated yet: {unrated}")
    return "\n".join(lines)


def ratings_plot(leaderboard: Leaderboard) -> go.Figure:
    prefix = "style_" if leaderboard.style_control else ""
    table = leaderboard.table.sort_values(f"{prefix}rating", ascending=False)
    rating = table[f"{prefix}rating"]
    finite = lambda s: s.where(s.abs() != math.inf)  # noqa: E731 (unbounded sides draw no bar)
    figure = go.Figure(
        go.Scatter(
            x=table["model"],
            y=rating,
            mode="markers",
            error_y={
                "type": "data",
                "array": finite(table[f"{prefix}ci_upper"]) - rating,
                "arrayminus": rating - finite(table[f"{prefix}ci_lower"]),
            },
        )
    )
    figure.update_layout(title="Score with 95% interval", yaxis_title="Score", height=420)
    return figure


def heatmap(matrix: pd.DataFrame, title: str, percent: bool) -> go.Figure:
    text = matrix.map(
        lambda v: "" if pd.isna(v) else (f"{v:.0%}" if percent else f"{int(v)}")
    ).to_numpy()
    figure = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(),
            x=list(matrix.columns),
            y=list(matrix.index),
            text=text,
            texttemplate="%{text}",
            colorscale="RdBu" if percent else "Blues",
            zmin=0 if percent else None,
            zmax=1 if percent else None,
        )
    )
    figure.update_layout(
        title=title,
        xaxis_title="Model B",
        yaxis_title="Model A",
        yaxis_autorange="reversed",
        height=480,
    )
    return figure


def history_plot(service: LeaderboardService, view: View) -> go.Figure:
    rows = [
        {"computed_at": snapshot["computed_at"], "model": r["model"], "rating": r[key]}
        for snapshot in service.history(view)
        for r in snapshot["records"]
        for key in (("style_rating" if view.style_control else "rating"),)
        if key in r
    ]
    figure = go.Figure()
    if rows:
        frame = pd.DataFrame(rows)
        for model, points in frame.groupby("model", sort=True):
            figure.add_trace(
                go.Scatter(
                    x=points["computed_at"], y=points["rating"], mode="lines+markers", name=model
                )
            )
    figure.update_layout(title="Score over time", yaxis_title="Score", height=420)
    return figure


class LeaderboardTab:
    def __init__(self, service: LeaderboardService, registry: Registry, export_dir: Path) -> None:
        self._service = service
        self._registry = registry
        self._export_dir = export_dir

    def render(self) -> gr.Timer:
        """Build the tab; returns its refresh timer (the app also refreshes on page load)."""
        with gr.Row():
            self.category = gr.Dropdown(
                [ALL_CATEGORIES],
                value=ALL_CATEGORIES,
                label="Category",
                elem_id="lb-category",
                scale=2,
            )
            self.style = gr.Checkbox(
                label="Style control (discount length and markdown)",
                elem_id="lb-style",
                scale=2,
            )
            self.csv = gr.DownloadButton("⬇️ CSV", elem_id="lb-csv", scale=1, interactive=False)
            self.json = gr.DownloadButton("⬇️ JSON", elem_id="lb-json", scale=1, interactive=False)
        self.note = gr.Markdown(elem_id="lb-note")
        self.table = gr.Dataframe(
            headers=TABLE_HEADERS,
            datatype=_datatypes(False),
            interactive=False,
            elem_id="leaderboard-table",
            wrap=True,
        )
        with gr.Row():
            self.ratings = gr.Plot(label="Scores")
            self.history = gr.Plot(label="Score over time")
        with gr.Row():
            self.win_fraction = gr.Plot(label="Win fraction")
            self.battle_count = gr.Plot(label="Battle count")
        timer = gr.Timer(REFRESH_SECONDS)
        outputs = [
            self.category,
            self.note,
            self.table,
            self.ratings,
            self.history,
            self.win_fraction,
            self.battle_count,
            self.csv,
            self.json,
        ]
        inputs = [self.category, self.style]
        gr.on(
            [timer.tick, self.category.change, self.style.change],
            self.update,
            inputs=inputs,
            outputs=outputs,
            api_name="leaderboard",
            show_progress="hidden",
        )
        self.refresh_inputs, self.refresh_outputs = inputs, outputs
        return timer

    def update(self, category: str, style_control: bool) -> list[Any]:
        view = View(None if category in (None, ALL_CATEGORIES) else category, bool(style_control))
        leaderboard = self._service.leaderboard(view)
        choices = [ALL_CATEGORIES, *self._service.categories()]
        dropdown = gr.Dropdown(choices=choices, value=category or ALL_CATEGORIES)
        if leaderboard is None:
            empty = gr.DownloadButton(interactive=False)
            return [
                dropdown,
                summary(None, self._registry),
                None,
                None,
                None,
                None,
                None,
                empty,
                empty,
            ]
        csv_path, json_path = self._export(leaderboard, view)
        return [
            dropdown,
            summary(leaderboard, self._registry),
            gr.Dataframe(
                value=display_table(leaderboard, self._registry),
                datatype=_datatypes(view.style_control),
            ),
            ratings_plot(leaderboard),
            history_plot(self._service, view),
            heatmap(leaderboard.win_fraction, "Fraction of A wins (ties count half)", True),
            heatmap(leaderboard.battle_count, "Battles per pair", False),
            gr.DownloadButton(value=str(csv_path), interactive=True),
            gr.DownloadButton(value=str(json_path), interactive=True),
        ]

    def _export(self, leaderboard: Leaderboard, view: View) -> tuple[Path, Path]:
        """CSV and JSON of the raw table, written atomically (other sessions may be reading)."""
        stem = f"leaderboard-{view.category or 'all'}{'-style' if view.style_control else ''}"
        paths = (self._export_dir / f"{stem}.csv", self._export_dir / f"{stem}.json")
        writers = (
            lambda path: leaderboard.table.to_csv(path, index=False),
            lambda path: Path(path).write_text(json.dumps(leaderboard.to_records(), indent=1)),
        )
        for path, write in zip(paths, writers, strict=True):
            fd, tmp = tempfile.mkstemp(dir=self._export_dir, suffix=path.suffix)
            os.close(fd)
            write(tmp)
            os.replace(tmp, path)
        return paths
