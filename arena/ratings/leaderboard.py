"""The leaderboard: filters, Bradley-Terry ratings with bootstrap intervals, Elo, matrices and
optional style control, assembled into one result object."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from arena.ratings.aggregate import SCORE_OF_OUTCOME, EncodedBattles, count_pairs, encode_battles
from arena.ratings.bootstrap import Progress, interval, rank_upper_bound
from arena.ratings.bradley_terry import (
    POINTS_PER_UNIT,
    bootstrap_bradley_terry,
    fit_bradley_terry,
    to_rating,
)
from arena.ratings.elo import online_elo
from arena.ratings.filters import FilterConfig, FilterStep, apply_filters
from arena.ratings.schema import (
    RatingInputError,
    as_flags,
    available_categories,
    category_column,
    validate_battles,
)
from arena.ratings.style import (
    FEATURES,
    bootstrap_style,
    canonical_order,
    fit_style,
    style_counts,
    style_design,
    style_features,
)

TABLE_COLUMNS = (
    "model",
    "rating",
    "ci_lower",
    "ci_upper",
    "rank",
    "votes",
    "wins",
    "losses",
    "ties",
    "win_rate",
    "elo",
)
STYLE_COLUMNS = ("style_rating", "style_ci_lower", "style_ci_upper", "style_rank")
UNRATED_COLUMNS = ("model", "reason", "votes", "wins", "losses", "ties", "win_rate", "elo")


@dataclass(frozen=True)
class Anchor:
    """Hold ``model`` at ``score`` (in every bootstrap round too) instead of centring at 1000."""

    model: str
    score: float

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """From ``MODEL=SCORE``."""
        model, sep, score = text.rpartition("=")
        try:
            value = float(score)
        except ValueError:
            value = math.nan
        if not sep or not model.strip() or not math.isfinite(value):
            raise RatingInputError(f"anchor must look like MODEL=SCORE, got {text!r}")
        return cls(model.strip(), value)


@dataclass(frozen=True)
class Leaderboard:
    """Everything the Leaderboard tab and the command line show.

    ``table`` has one row per rated model, best first, with ``TABLE_COLUMNS`` (plus
    ``STYLE_COLUMNS`` under style control). ``win_rate`` counts ties as halves; ``votes`` are
    all the model's battles after filtering. Bounds are 95% bootstrap percentiles, infinite when
    the model won or lost every battle in enough resamples, NaN without bootstrap; ``rank`` is
    Rank (UB) (ordinal by rating without bootstrap). ``elo`` is the online Elo replay from
    1000, never anchored, for reference only. ``unrated`` lists models seen in the battles that
    cannot be rated, with the reason. The matrices cover every model seen.
    """

    table: pd.DataFrame
    unrated: pd.DataFrame
    win_fraction: pd.DataFrame
    """Row model's score against column model (ties as halves); NaN where they never met."""
    battle_count: pd.DataFrame
    filter_report: tuple[FilterStep, ...]
    battles_in: int
    """Rows of the input."""
    battles_used: int
    """Battles among rated models: what the ratings were fitted on."""
    bootstrap_rounds: int
    seed: int
    style_control: bool
    category: str | None
    anchor: Anchor | None
    style_coefficients: pd.DataFrame | None
    """Per style feature: rating points per unit (unit root mean square) of its difference,
    with its interval; None without style control."""
    computed_at: datetime | None
    notes: tuple[str, ...]

    def to_records(self) -> list[dict[str, object]]:
        """The table as JSON-ready dicts; infinite or missing numbers become None."""
        return [
            {key: _plain(value) for key, value in row.items()}
            for row in self.table.to_dict(orient="records")
        ]


def compute_leaderboard(
    battles: pd.DataFrame,
    *,
    bootstrap_rounds: int = 1000,
    seed: int = 0,
    style_control: bool = False,
    category: str | None = None,
    anchor: Anchor | None = None,
    filters: FilterConfig | None = None,
    computed_at: datetime | None = None,
    progress: Progress | None = None,
) -> Leaderboard:
    """Rate the battles. Pure: no I/O, no clock (``computed_at`` is only carried along), and
    the same input, seed and options always give the same result, whatever the row order.

    Raises ``RatingInputError`` for unusable input (missing column, bad value, unknown category,
    anchor model not rated).
    """
    if bootstrap_rounds < 0:
        raise RatingInputError(f"bootstrap rounds must be >= 0, got {bootstrap_rounds}")
    validated = validate_battles(battles)
    kept, report = _select(validated, filters or FilterConfig(), category)
    encoded = encode_battles(kept)
    self_play = int(encoded.self_play.sum())
    report = (*report, FilterStep("self_play", True, self_play, "a model against itself"))
    pairs = count_pairs(encoded)
    fit = fit_bradley_terry(pairs)
    rated = fit.rated
    anchor_index = _anchor_index(encoded, rated, anchor)
    rating = _anchored(to_rating(fit.strength), anchor_index, anchor)
    samples = _anchored(
        to_rating(bootstrap_bradley_terry(pairs, fit, bootstrap_rounds, seed, progress)),
        anchor_index,
        anchor,
    )
    lower, upper = interval(samples)
    tallies = pairs.tallies()
    elo = _elo(kept, encoded)
    columns: dict[str, np.ndarray] = {
        "model": np.array(encoded.models, dtype=object),
        "rating": rating,
        "ci_lower": lower,
        "ci_upper": upper,
        "rank": _rank(rating, lower, upper, rated, bootstrap_rounds),
        **_tally_columns(tallies),
        "elo": elo,
    }
    coefficients = None
    if style_control:
        style, coefficients = _style_columns(
            kept, encoded, rated, bootstrap_rounds, seed, anchor_index, anchor, progress
        )
        columns.update(style)
    frame = pd.DataFrame(columns)
    table = (
        frame[rated]
        .sort_values(["rating", "model"], ascending=[False, True], kind="stable")
        .reset_index(drop=True)
    )
    reasons = [str(s) for s, r in zip(fit.standing, rated, strict=True) if not r]
    unrated = frame[~rated].assign(reason=reasons)
    unrated = unrated.sort_values(["votes", "model"], ascending=[False, True], kind="stable")
    order = [*table["model"], *unrated["model"]]
    count, fraction = pairs.matrices()
    models = pd.Index(encoded.models, name="model")
    return Leaderboard(
        table=table.astype({"rank": int}),
        unrated=unrated.loc[:, list(UNRATED_COLUMNS)].reset_index(drop=True),
        win_fraction=pd.DataFrame(fraction, index=models, columns=models).loc[order, order],
        battle_count=pd.DataFrame(count, index=models, columns=models).loc[order, order],
        filter_report=report,
        battles_in=len(validated),
        battles_used=int(pairs.total[rated[pairs.i] & rated[pairs.j]].sum()),
        bootstrap_rounds=bootstrap_rounds,
        seed=seed,
        style_control=style_control,
        category=category,
        anchor=anchor,
        style_coefficients=coefficients,
        computed_at=computed_at,
        notes=_notes(len(kept) - self_play, rated, unrated),
    )


def category_ratings(
    battles: pd.DataFrame,
    *,
    categories: list[str] | None = None,
    filters: FilterConfig | None = None,
    anchor: Anchor | None = None,
) -> pd.DataFrame:
    """Point ratings overall and per category (``is_<category>`` columns; all by default).

    One row per model seen, one column per category ("overall" first); NaN where a model is
    not rated in that category, and for a whole category whose battles leave the anchor model
    unrated (its ratings cannot be put on the anchored scale). No bootstrap: use
    ``compute_leaderboard(category=...)`` for intervals.
    """
    validated = validate_battles(battles)
    names = available_categories(validated) if categories is None else categories
    columns = {name: category_column(validated, name) for name in names}
    kept, _ = apply_filters(validated, filters or FilterConfig())
    out = {}
    for name, column in {"overall": None, **columns}.items():
        subset = kept if column is None else kept[as_flags(kept[column], column).to_numpy()]
        encoded = encode_battles(subset)
        fit = fit_bradley_terry(count_pairs(encoded))
        rating = to_rating(fit.strength)
        if anchor is not None:
            # Overall, an unrated anchor is the caller's error; per category it only blanks
            # that category.
            index = (_anchor_index if column is None else _optional_anchor)(
                encoded, fit.rated, anchor
            )
            rating = _anchored(rating, index, anchor) if index is not None else rating * np.nan
        out[name] = pd.Series(rating, index=list(encoded.models))
    return pd.DataFrame(out).rename_axis("model").sort_values("overall", ascending=False)


def _select(
    battles: pd.DataFrame, filters: FilterConfig, category: str | None
) -> tuple[pd.DataFrame, tuple[FilterStep, ...]]:
    column = None if category is None else category_column(battles, category)
    kept, report = apply_filters(battles, filters)
    if column is None:
        return kept, (*report, FilterStep("category", False, 0))
    inside = as_flags(kept[column], column).to_numpy()
    step = FilterStep("category", True, int((~inside).sum()), f"{column} is true")
    return kept[inside], (*report, step)


def _anchor_index(encoded: EncodedBattles, rated: np.ndarray, anchor: Anchor | None) -> int | None:
    if anchor is None:
        return None
    index = _optional_anchor(encoded, rated, anchor)
    if index is None:
        raise RatingInputError(f"anchor model {anchor.model!r} is not among the rated models")
    return index


def _optional_anchor(encoded: EncodedBattles, rated: np.ndarray, anchor: Anchor) -> int | None:
    try:
        index = encoded.models.index(anchor.model)
    except ValueError:
        return None
    return index if rated[index] else None


def _anchored(ratings: np.ndarray, index: int | None, anchor: Anchor | None) -> np.ndarray:
    """Shift each row of ratings so the anchor model sits at its score (when one is given)."""
    if index is None or anchor is None:
        return ratings
    with np.errstate(invalid="ignore"):
        shifted = ratings - ratings[..., index : index + 1] + anchor.score
    shifted[..., index] = anchor.score
    return shifted


def _rank(
    rating: np.ndarray, lower: np.ndarray, upper: np.ndarray, rated: np.ndarray, rounds: int
) -> np.ndarray:
    out = np.zeros(rating.size, dtype=np.int64)
    if rounds:
        out[rated] = rank_upper_bound(lower[rated], upper[rated])
    else:
        out[rated] = rank_upper_bound(rating[rated], rating[rated])
    return out


def _tally_columns(tallies: np.ndarray) -> dict[str, np.ndarray]:
    wins, losses, ties = tallies.T
    votes = tallies.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rate = np.where(votes > 0, (wins + 0.5 * ties) / votes, np.nan)
    return {"votes": votes, "wins": wins, "losses": losses, "ties": ties, "win_rate": win_rate}


def _elo(kept: pd.DataFrame, encoded: EncodedBattles) -> np.ndarray:
    """Online Elo in time order when ``tstamp`` is there (stable), else in row order."""
    order = np.arange(len(kept))
    if "tstamp" in kept.columns:
        order = np.argsort(kept["tstamp"].to_numpy(dtype=float), kind="stable")
    order = order[~encoded.self_play[order]]
    score = SCORE_OF_OUTCOME[encoded.outcome[order]]
    return online_elo(encoded.a[order], encoded.b[order], score, len(encoded.models))


def _style_columns(
    kept: pd.DataFrame,
    encoded: EncodedBattles,
    rated: np.ndarray,
    rounds: int,
    seed: int,
    anchor_index: int | None,
    anchor: Anchor | None,
    progress: Progress | None,
) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:
    """Style-controlled rating columns and the coefficient table, fitted on the battles among
    the models the plain fit could rate."""
    m = len(encoded.models)
    out = {c: np.full(m, np.nan) for c in STYLE_COLUMNS}
    rows = rated[encoded.a] & rated[encoded.b] & ~encoded.self_play
    if not rows.any():
        return out, None
    members = np.flatnonzero(rated)
    local = np.cumsum(rated) - 1
    features = style_features(style_counts(kept[rows]))
    first, second, score, features = canonical_order(
        local[encoded.a[rows]],
        local[encoded.b[rows]],
        SCORE_OF_OUTCOME[encoded.outcome[rows]],
        features,
    )
    design = style_design(first, second, members.size, features)
    fit = fit_style(design, score)
    samples = bootstrap_style(design, score, fit, rounds, seed, progress)
    full = np.full(m, np.nan)
    full[members] = fit.strength
    sample_ratings = np.full((rounds, m), np.nan)
    sample_ratings[:, members] = samples[:, : members.size]
    # The penalty centres strengths at zero, so these ratings are centred at 1000 too.
    rating = _anchored(to_rating(full), anchor_index, anchor)
    lower, upper = interval(_anchored(to_rating(sample_ratings), anchor_index, anchor))
    out.update(
        style_rating=rating,
        style_ci_lower=lower,
        style_ci_upper=upper,
        style_rank=_rank(rating, lower, upper, rated, rounds),
    )
    coef_lower, coef_upper = interval(samples[:, members.size :] * POINTS_PER_UNIT)
    coefficients = pd.DataFrame(
        {
            "feature": list(FEATURES),
            "coefficient": fit.coefficients * POINTS_PER_UNIT,
            "ci_lower": coef_lower,
            "ci_upper": coef_upper,
        }
    )
    return out, coefficients


def _notes(battles: int, rated: np.ndarray, unrated: pd.DataFrame) -> tuple[str, ...]:
    notes = []
    if battles == 0:
        notes.append("no battles between two different models left to rate")
    elif not rated.any():
        notes.append("no model can be rated yet: " + "; ".join(sorted(set(unrated["reason"]))))
    if rated.any() and len(unrated):
        notes.append(f"{len(unrated)} model(s) seen but not rated: see unrated")
    return tuple(notes)


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
