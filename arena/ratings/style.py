"""Style control: ratings fitted jointly with how long and how formatted the replies were.

Per side we count reply length (characters; tokens when read from Chatbot Arena's
``conv_metadata``), markdown headers, list items and bold spans, all with fenced code blocks
removed, as Chatbot Arena does. Each feature enters the logit as
(a - b) / (a + b + 1), scaled to unit root mean square; the scale is not centred, because the
model has no intercept and centring would make the fit depend on which side is called A. The
ratings and the four coefficients are fitted together with Chatbot Arena's small L2 penalty
(0.5 on ratings in log10 units and on the coefficients), and the bootstrap resamples battles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from arena.ratings.bootstrap import CountResampler, Progress, round_generators
from arena.ratings.logistic import Design, chord, hessian, newton
from arena.ratings.schema import RatingInputError
from arena.ratings.text import role_texts

FEATURES = ("length", "headers", "lists", "bold")
COUNT_COLUMNS = MappingProxyType(
    {
        "length": ("length_a", "length_b"),
        "headers": ("header_count_a", "header_count_b"),
        "lists": ("list_count_a", "list_count_b"),
        "bold": ("bold_count_a", "bold_count_b"),
    }
)
"""Precomputed per-side counts the frame may carry instead of conversations."""
_METADATA_KEYS = MappingProxyType(
    {
        "length": "sum_assistant_{side}_tokens",
        "headers": "header_count_{side}",
        "lists": "list_count_{side}",
        "bold": "bold_count_{side}",
    }
)
"""Keys of the ``conv_metadata`` column of the public Chatbot Arena releases (dict values are
summed, e.g. h1..h6)."""
PENALTY = 0.5
_CODE_BLOCK = r"```[^`]*```"
_HEADER = r"(?m)^#{1,6}\s"
_LIST_ITEM = r"(?m)^\s*(?:\d+\.|[-*+])\s"
_BOLD = (r"\*\*[^*\n]+\*\*", r"__[^_\n]+__")
_ELEMENTS_PER_CHUNK = 4_000_000


@dataclass(frozen=True)
class StyleFit:
    """Strengths (natural-log units, per model) and coefficients (logit per unit feature)."""

    strength: np.ndarray
    coefficients: np.ndarray


def style_counts(battles: pd.DataFrame) -> np.ndarray:
    """Per battle and side, the four style counts: shape (battles, 2, 4) (side A first).

    Taken from the ``*_a``/``*_b`` count columns if all are present, else from ``conv_metadata``,
    else computed from ``conversation_a``/``conversation_b``.
    """
    columns = [c for pair in COUNT_COLUMNS.values() for c in pair]
    if all(c in battles.columns for c in columns):
        return _from_columns(battles)
    if "conv_metadata" in battles.columns:
        return _from_metadata(battles)
    if {"conversation_a", "conversation_b"} <= set(battles.columns):
        return np.stack(
            [reply_counts(role_texts(battles, f"conversation_{s}", "assistant")) for s in "ab"],
            axis=1,
        )
    raise RatingInputError(
        "style control needs the count columns "
        f"({', '.join(columns)}), a conv_metadata column, or conversation_a/conversation_b"
    )


def reply_counts(texts: list[str]) -> np.ndarray:
    """(length, headers, list items, bold spans) per text, code blocks removed; (n, 4)."""
    array = pa.array(texts, type=pa.large_string())
    with_code = np.flatnonzero(pc.match_substring(array, "```").to_numpy(zero_copy_only=False))
    if with_code.size:
        # Replacing only where a fence occurs keeps the common case a plain scan.
        cleaned = pc.replace_substring_regex(array.take(with_code), _CODE_BLOCK, "").to_pylist()
        patched = list(texts)
        for at, text in zip(with_code.tolist(), cleaned, strict=True):
            patched[at] = text
        array = pa.array(patched, type=pa.large_string())
    counts = [
        pc.utf8_length(array),
        pc.count_substring_regex(array, _HEADER),
        pc.count_substring_regex(array, _LIST_ITEM),
    ]
    bold = [pc.count_substring_regex(array, pattern) for pattern in _BOLD]
    counts.append(pc.add(*bold))
    return np.stack([c.to_numpy(zero_copy_only=False) for c in counts], axis=1).astype(float)


def style_features(counts: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b + 1) per feature, scaled to unit root mean square; shape (battles, 4)."""
    a, b = counts[:, 0, :], counts[:, 1, :]
    ratio = (a - b) / (a + b + 1.0)
    rms = np.sqrt(np.mean(ratio**2, axis=0))
    return ratio / np.where(rms > 0, rms, 1.0)


def style_design(
    first: np.ndarray, second: np.ndarray, n_models: int, features: np.ndarray
) -> Design:
    """Rows are battles; the penalty is Chatbot Arena's, converted to natural-log strengths."""
    ridge = np.concatenate(
        [np.full(n_models, PENALTY / math.log(10.0) ** 2), np.full(features.shape[1], PENALTY)]
    )
    return Design(first, second, n_models, features=features, ridge=ridge)


def fit_style(design: Design, score: np.ndarray) -> StyleFit:
    """Penalised maximum likelihood, one row per battle (score: 1, 0 or 0.5 for A)."""
    params, ok = newton(design, score, np.ones(score.size), np.zeros(design.n_params))
    if not ok:
        raise RuntimeError("the style-controlled fit did not converge")
    return StyleFit(params[: design.n_models], params[design.n_models :])


def bootstrap_style(
    design: Design,
    score: np.ndarray,
    fit: StyleFit,
    rounds: int,
    seed: int,
    progress: Progress | None = None,
) -> np.ndarray:
    """Parameters refitted on ``rounds`` resamples of the battles: (rounds, models + features).

    Rows must be in a canonical order (see ``canonical_order``) for the result not to depend
    on the input's row order.
    """
    samples = np.empty((rounds, design.n_params))
    if rounds == 0:
        return samples
    start = np.concatenate([fit.strength, fit.coefficients])
    inverse = np.linalg.inv(hessian(design, start, np.ones(score.size)))
    resampler = CountResampler(np.ones(score.size, dtype=np.int64))
    generators = round_generators(seed, rounds, stream=1)
    batch = int(np.clip(_ELEMENTS_PER_CHUNK // max(score.size, 1), 1, 256))
    # Reused across batches: fresh arrays this size would be page-faulted in every time.
    weight, weighted_score = np.empty((2, score.size, min(batch, rounds)))
    for begin in range(0, rounds, batch):
        chunk = generators[begin : begin + batch]
        if len(chunk) != weight.shape[1]:
            weight, weighted_score = np.empty((2, score.size, len(chunk)))
        resampler.draw(chunk, out=weight)
        np.multiply(weight, score[:, None], out=weighted_score)
        params, ok = chord(design, weighted_score, weight, start, inverse)
        for col in np.flatnonzero(~ok):
            params[:, col], done = newton(design, weighted_score[:, col], weight[:, col], start)
            if not done:
                raise RuntimeError("a style-controlled bootstrap fit did not converge")
        samples[begin : begin + len(chunk)] = params.T
        if progress is not None:
            progress(len(chunk))
    return samples


def canonical_order(
    first: np.ndarray, second: np.ndarray, score: np.ndarray, features: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows oriented lower model first and sorted, so swapped sides or shuffled rows give the
    same resamples."""
    flip = first > second
    sign = np.where(flip, -1.0, 1.0)
    first, second = np.where(flip, second, first), np.where(flip, first, second)
    score = np.where(flip, 1.0 - score, score)
    features = features * sign[:, None]
    order = np.lexsort((*features.T[::-1], score, second, first))
    return first[order], second[order], score[order], features[order]


def _from_columns(battles: pd.DataFrame) -> np.ndarray:
    out = np.empty((len(battles), 2, len(FEATURES)))
    for f, feature in enumerate(FEATURES):
        for side, column in enumerate(COUNT_COLUMNS[feature]):
            values = pd.to_numeric(battles[column], errors="coerce").to_numpy(dtype=float)
            bad = ~np.isfinite(values) | (values < 0)
            if bad.any():
                at = int(np.flatnonzero(bad)[0])
                raise RatingInputError(
                    f"row {battles.index[at]}: {column} must be a non-negative number, "
                    f"got {battles[column].iloc[at]!r}"
                )
            out[:, side, f] = values
    return out


def _from_metadata(battles: pd.DataFrame) -> np.ndarray:
    out = np.empty((len(battles), 2, len(FEATURES)))
    for row, (label, meta) in enumerate(zip(battles.index, battles["conv_metadata"], strict=True)):
        for side, name in enumerate("ab"):
            for f, feature in enumerate(FEATURES):
                key = _METADATA_KEYS[feature].format(side=name)
                try:
                    value = meta[key]
                    out[row, side, f] = sum(value.values()) if isinstance(value, dict) else value
                except (TypeError, KeyError):
                    raise RatingInputError(
                        f"row {label}: conv_metadata has no usable {key!r}"
                    ) from None
    return out
