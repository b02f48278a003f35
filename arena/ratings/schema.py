"""The battles frame: its columns, their validation and the error raised for bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd

from arena.votes import Winner

REQUIRED_COLUMNS = ("model_a", "model_b", "winner")
WINNER_VALUES = tuple(w.value for w in Winner)
FLAG_COLUMNS = ("anony", "has_error", "moderated")
CATEGORY_PREFIX = "is_"
SECONDS_PER_DAY = 86_400


class RatingInputError(ValueError):
    """The battles cannot be rated as given; the message names the column, row or value."""


def validate_battles(battles: pd.DataFrame) -> pd.DataFrame:
    """Check the columns the engine reads and return the frame with normalised dtypes.

    Model columns must hold non-empty strings and ``winner`` one of the ``Winner`` values;
    ``tstamp`` becomes float epoch seconds and the flag columns plain booleans (a missing flag
    reads as false). Other columns are passed through untouched.
    """
    if not isinstance(battles, pd.DataFrame):
        raise RatingInputError(f"battles must be a pandas DataFrame, got {type(battles).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in battles.columns]
    if missing:
        raise RatingInputError(
            f"missing column {missing[0]!r} (required: {', '.join(REQUIRED_COLUMNS)})"
        )
    for column in ("model_a", "model_b"):
        _check_model_column(battles, column)
    _check_winner(battles)
    changes: dict[str, pd.Series] = {}
    if "tstamp" in battles.columns:
        changes["tstamp"] = _epoch_seconds(battles["tstamp"])
    for column in FLAG_COLUMNS:
        if column in battles.columns:
            changes[column] = as_flags(battles[column], column)
    return battles.assign(**changes) if changes else battles


def as_flags(values: pd.Series, column: str) -> pd.Series:
    """Booleans from a bool-like column (bool, 0/1, null as false), or an error naming the row."""
    if pd.api.types.is_bool_dtype(values) and not values.isna().any():
        return values.astype(bool)
    filled = values.astype(object).where(values.notna(), False)
    ok = filled.map(lambda v: isinstance(v, bool | np.bool_) or v in (0, 1)).to_numpy(bool)
    if not ok.all():
        at = _first(~ok)
        raise RatingInputError(
            f"row {values.index[at]}: {column} must be true or false, got {filled.iloc[at]!r}"
        )
    return filled.astype(bool)


def category_column(battles: pd.DataFrame, category: str) -> str:
    """The column marking battles of ``category`` (``is_<category>``), or an error listing those
    available."""
    column = f"{CATEGORY_PREFIX}{category}"
    if column not in battles.columns:
        known = ", ".join(available_categories(battles)) or "none"
        raise RatingInputError(
            f"unknown category {category!r}: no column {column!r} (available: {known})"
        )
    return column


def available_categories(battles: pd.DataFrame) -> list[str]:
    """Category names present as ``is_<name>`` columns, sorted."""
    return sorted(
        str(c)[len(CATEGORY_PREFIX) :]
        for c in battles.columns
        if str(c).startswith(CATEGORY_PREFIX) and len(str(c)) > len(CATEGORY_PREFIX)
    )


def _first(mask: np.ndarray) -> int:
    """Position of the first true entry: messages name rows by label, values by position,
    which stays right when index labels repeat."""
    return int(np.flatnonzero(mask)[0])


def _check_model_column(battles: pd.DataFrame, column: str) -> None:
    values = battles[column]
    null = values.isna().to_numpy()
    if null.any():
        raise RatingInputError(f"row {battles.index[_first(null)]}: {column} is missing")
    # Checking the few distinct names is much cheaper than checking every row.
    for name in pd.unique(values):
        if not isinstance(name, str) or not name.strip():
            label = battles.index[_first((values == name).to_numpy())]
            shown = "is empty" if isinstance(name, str) else f"must be a model name, got {name!r}"
            raise RatingInputError(f"row {label}: {column} {shown}")


def _check_winner(battles: pd.DataFrame) -> None:
    winner = battles["winner"]
    bad = ~winner.isin(WINNER_VALUES).to_numpy()
    if bad.any():
        at = _first(bad)
        label, value = battles.index[at], winner.iloc[at]
        allowed = ", ".join(WINNER_VALUES)
        shown = "is missing" if pd.isna(value) else f"{value!r} is not one of {allowed}"
        raise RatingInputError(f"row {label}: winner {shown}")


def _epoch_seconds(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = values.dt.tz_localize("UTC") if values.dt.tz is None else values
        seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        return seconds.astype(float)
    numeric = pd.to_numeric(values, errors="coerce")
    bad = (numeric.isna() & values.notna()).to_numpy()
    if bad.any():
        at = _first(bad)
        raise RatingInputError(
            f"row {values.index[at]}: tstamp must be epoch seconds, got {values.iloc[at]!r}"
        )
    return numeric.astype(float)
