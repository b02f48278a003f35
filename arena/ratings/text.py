"""Text pulled out of the lmsys conversation columns (lists of {"role", "content"} messages)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np
import pandas as pd

from arena.ratings.schema import RatingInputError


def role_texts(battles: pd.DataFrame, column: str, role: str) -> list[str]:
    """Per battle, the contents of ``column``'s messages from ``role`` joined by newlines.

    A missing conversation gives ""; anything but a list of messages is an error naming the row.
    """
    return [
        _join(cell, role, column, label)
        for label, cell in zip(battles.index, battles[column], strict=True)
    ]


def _join(cell: object, role: str, column: str, label: Hashable) -> str:
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return ""
    if not isinstance(cell, list | tuple | np.ndarray):
        raise RatingInputError(
            f"row {label}: {column} must be a list of {{role, content}} messages, "
            f"got {type(cell).__name__}"
        )
    try:
        return "\n".join(_contents(cell, role))
    except (TypeError, KeyError, AttributeError) as err:
        raise RatingInputError(
            f"row {label}: {column} must be a list of {{role, content}} messages ({err})"
        ) from None


def _contents(messages: Iterable[dict], role: str) -> Iterable[str]:
    for message in messages:
        if message["role"] == role:
            yield message["content"] or ""
