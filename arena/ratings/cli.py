"""``python -m arena.ratings BATTLES``: rate a Parquet or JSON-lines file of battles."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from arena.ratings.filters import FilterConfig
from arena.ratings.leaderboard import Anchor, Leaderboard, compute_leaderboard
from arena.ratings.schema import RatingInputError

_PARQUET_MAGIC = b"PAR1"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 nothing rated, 2 bad input)."""
    args = _parser().parse_args(argv)
    try:
        anchor = Anchor.parse(args.anchor) if args.anchor else None
        battles = read_battles(Path(args.battles))
        rounds = args.bootstrap * (2 if args.style_control else 1)
        with tqdm(
            total=rounds,
            desc="bootstrap",
            unit="round",
            file=sys.stderr,
            delay=1.0,
            disable=rounds == 0,
        ) as bar:
            board = compute_leaderboard(
                battles,
                bootstrap_rounds=args.bootstrap,
                seed=args.seed,
                style_control=args.style_control,
                category=args.category,
                anchor=anchor,
                filters=_filters(args),
                progress=bar.update,
            )
    except RatingInputError as err:
        print(f"error: {args.battles}: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render(board, args.format))
    _summary(board)
    return 0 if len(board.table) else 1


def read_battles(path: Path) -> pd.DataFrame:
    """A battles frame from Parquet, JSON lines, or a JSON array (compression by extension)."""
    if not path.is_file():
        raise RatingInputError("no such file")
    with path.open("rb") as handle:
        head = handle.read(4)
    try:
        if head == _PARQUET_MAGIC:
            return pd.read_parquet(path)
        with pd.io.common.get_handle(path, "r", compression="infer") as handle:
            first = handle.handle.read(1024).lstrip()[:1]
        lines = first != "["
        return pd.read_json(path, lines=lines, dtype=False)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise RatingInputError(f"cannot read as Parquet or JSON lines ({err})") from None


def render(board: Leaderboard, fmt: str) -> str:
    """The table as text: "table" (aligned, for people), "json" or "csv"."""
    if fmt == "json":
        return json.dumps(board.to_records(), indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return board.table.to_csv(index=False)
    shown = pd.DataFrame(
        {
            "rank": board.table["rank"],
            "model": board.table["model"],
            "rating": board.table["rating"].map(_number),
            "95% CI": _bounds_column(board.table, ""),
            "votes": board.table["votes"],
            "win rate": board.table["win_rate"].map(lambda v: f"{100 * v:.1f}%"),
            "elo": board.table["elo"].map(_number),
        }
    )
    if "style_rating" in board.table.columns:
        shown["style"] = board.table["style_rating"].map(_number)
        shown["style CI"] = _bounds_column(board.table, "style_")
        shown["style rank"] = board.table["style_rank"]
    return shown.to_string(index=False) + "\n" if len(shown) else "(no rated models)\n"


def _number(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else str(value)


def _bounds_column(table: pd.DataFrame, prefix: str) -> list[str]:
    pairs = zip(table[f"{prefix}ci_lower"], table[f"{prefix}ci_upper"], strict=True)
    return [_bounds(lower, upper) for lower, upper in pairs]


def _bounds(lower: float, upper: float) -> str:
    if math.isnan(lower):
        return "-"
    return f"[{_number(lower)}, {_number(upper)}]"


def _summary(board: Leaderboard) -> None:
    removed = ", ".join(
        f"{step.name} -{step.removed}" + (f" ({step.note})" if step.note else "")
        for step in board.filter_report
        if step.enabled
    )
    print(
        f"{len(board.table)} models rated from {board.battles_used} battles "
        f"({board.battles_in} rows in); filters: {removed or 'none'}",
        file=sys.stderr,
    )
    for note in board.notes:
        print(f"note: {note}", file=sys.stderr)
    if len(board.unrated):
        for row in board.unrated.itertuples():
            print(f"unrated: {row.model}: {row.reason}", file=sys.stderr)
    if board.style_coefficients is not None:
        for row in board.style_coefficients.itertuples():
            print(
                f"style: {row.feature} {row.coefficient:+.1f} points per unit "
                f"{_bounds(row.ci_lower, row.ci_upper)}",
                file=sys.stderr,
            )


def _filters(args: argparse.Namespace) -> FilterConfig:
    return FilterConfig(
        anonymous_only=not args.include_named,
        drop_failed=not args.keep_failed,
        identity_leak=not args.keep_identity_leaks,
        dedup_prompts=not args.keep_repeated_prompts,
        max_prompt_repeats=args.max_prompt_repeats,
        daily_vote_cap=args.daily_vote_cap,
        anomalous_users=args.drop_anomalous_users,
        seed=args.seed,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m arena.ratings",
        description="Bradley-Terry ratings with bootstrap intervals from arena battles "
        "(lmsys arena format, e.g. the public Chatbot Arena releases).",
    )
    parser.add_argument("battles", metavar="BATTLES", help="Parquet or JSON-lines file")
    parser.add_argument("--bootstrap", type=_non_negative, default=1000, metavar="N")
    parser.add_argument("--seed", type=int, default=0, metavar="S")
    parser.add_argument("--style-control", action="store_true")
    parser.add_argument("--category", metavar="C", help="rate battles whose is_C column is true")
    parser.add_argument("--anchor", metavar="MODEL=SCORE", help="hold MODEL at SCORE")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    group = parser.add_argument_group("filters (all on by default except the last three)")
    group.add_argument("--include-named", action="store_true", help="rate non-anonymous votes")
    group.add_argument("--keep-failed", action="store_true", help="keep errored/moderated")
    group.add_argument("--keep-identity-leaks", action="store_true")
    group.add_argument("--keep-repeated-prompts", action="store_true")
    group.add_argument("--max-prompt-repeats", type=_positive, metavar="N")
    group.add_argument("--daily-vote-cap", type=_positive, metavar="N")
    group.add_argument("--drop-anomalous-users", action="store_true")
    return parser


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
