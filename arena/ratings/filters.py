"""Battle filters applied before rating; each is switchable and reports how many rows it removed.

Filters that need a column the frame lacks remove nothing and say so in their note. Choices
that need randomness (which repeats of a prompt to keep) use a seeded hash of each row's
content, so they do not depend on row order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import chi2

from arena.ratings.aggregate import encode_battles
from arena.ratings.schema import SECONDS_PER_DAY, as_flags
from arena.ratings.text import role_texts
from arena.votes import Winner

IDENTITY_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"gpt|openai|^o\d", ("openai", "chatgpt", "gpt")),
    (r"claude|anthropic", ("anthropic", "claude")),
    (r"gemini|gemma|bard|palm", ("google", "deepmind", "gemini", "gemma", "bard", "palm")),
    (r"llama", ("meta ai", "llama")),
    (r"vicuna", ("vicuna", "lmsys")),
    (r"koala", ("koala", "berkeley")),
    (r"alpaca", ("alpaca", "stanford")),
    (r"oasst|open-?assistant", ("open assistant", "openassistant", "laion")),
    (r"chatglm|glm-", ("chatglm", "zhipu", "tsinghua")),
    (r"qwen", ("qwen", "tongyi", "qianwen", "alibaba")),
    (r"mistral|mixtral|codestral", ("mistral", "mixtral")),
    (r"deepseek", ("deepseek",)),
    (r"(^|[^a-z])yi-", ("01.ai", "01-ai")),
    (r"command|aya|cohere", ("cohere",)),
    (r"dbrx", ("dbrx", "databricks")),
    (r"(^|[^a-z])phi-", ("microsoft",)),
    (r"grok", ("grok", "xai")),
    (r"zephyr", ("zephyr",)),
    (r"falcon", ("falcon",)),
    (r"wizardlm", ("wizardlm",)),
)
"""(pattern on the lower-cased model name, words that reveal that model or its maker)."""


@dataclass(frozen=True)
class FilterConfig:
    """Which filters run, and their settings. The defaults follow Chatbot Arena's leaderboard."""

    anonymous_only: bool = True
    """Keep battles with ``anony`` true (named side-by-side votes are not rated)."""
    drop_failed: bool = True
    """Drop battles with ``has_error`` or ``moderated`` (or an ``openai_moderation`` flag)."""
    identity_leak: bool = True
    """Drop battles where a reply names its own model or maker."""
    identity_terms: Mapping[str, Sequence[str]] | None = None
    """Extra words per model name (e.g. display name, organisation) for the identity filter."""
    dedup_prompts: bool = True
    """Subsample prompts seen more often than the ``prompt_quantile`` of per-prompt counts."""
    prompt_quantile: float = 0.9999
    max_prompt_repeats: int | None = None
    """Fixed cap on repeats of one prompt, instead of the quantile."""
    daily_vote_cap: int | None = None
    """Keep at most this many votes per ``judge`` per UTC day (the earliest)."""
    anomalous_users: bool = False
    """Drop every vote of users whose votes are improbable given each pair's other votes."""
    anomaly_alpha: float = 0.05
    """Family-wise error rate of the anomaly test (Bonferroni over the users tested)."""
    anomaly_min_votes: int = 5
    seed: int = 0


@dataclass(frozen=True)
class FilterStep:
    """What one filter did."""

    name: str
    enabled: bool
    removed: int
    note: str = ""


def apply_filters(
    battles: pd.DataFrame, config: FilterConfig
) -> tuple[pd.DataFrame, tuple[FilterStep, ...]]:
    """The battles that pass every enabled filter, and a report per filter, in order."""
    steps = []
    for name, enabled, rule in (
        ("anonymous_only", config.anonymous_only, _anonymous),
        ("failed_or_moderated", config.drop_failed, _failed),
        ("identity_leak", config.identity_leak, _identity_leak),
        ("repeated_prompts", config.dedup_prompts, _repeated_prompts),
        ("daily_vote_cap", config.daily_vote_cap is not None, _daily_cap),
        ("anomalous_users", config.anomalous_users, _anomalous_users),
    ):
        if not enabled:
            steps.append(FilterStep(name, False, 0))
            continue
        keep, note = rule(battles, config)
        steps.append(FilterStep(name, True, int((~keep).sum()), note))
        battles = battles[keep]
    return battles, tuple(steps)


def identity_pattern(model: str, extra: Sequence[str] = ()) -> re.Pattern[str]:
    """Words revealing ``model``: its name, its family's and maker's names, and ``extra``,
    matched case-insensitively as whole words ("palm" does not match "napalm")."""
    terms = {model.lower(), *(t.lower() for t in extra if t.strip())}
    for name_pattern, words in IDENTITY_FAMILIES:
        if re.search(name_pattern, model.lower()):
            terms.update(words)
    alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _anonymous(battles: pd.DataFrame, config: FilterConfig) -> tuple[np.ndarray, str]:
    if "anony" not in battles.columns:
        return _all(battles), "no anony column: every battle taken as anonymous"
    return as_flags(battles["anony"], "anony").to_numpy(), ""


def _failed(battles: pd.DataFrame, config: FilterConfig) -> tuple[np.ndarray, str]:
    bad = np.zeros(len(battles), dtype=bool)
    used = []
    for column in ("has_error", "moderated"):
        if column in battles.columns:
            bad |= as_flags(battles[column], column).to_numpy()
            used.append(column)
    if "moderated" not in battles.columns and "openai_moderation" in battles.columns:
        bad |= battles["openai_moderation"].map(_flagged).to_numpy(dtype=bool)
        used.append("openai_moderation")
    note = f"from {', '.join(used)}" if used else "no has_error/moderated column"
    return ~bad, note


def _flagged(moderation: object) -> bool:
    return isinstance(moderation, dict) and bool(moderation.get("flagged"))


def _identity_leak(battles: pd.DataFrame, config: FilterConfig) -> tuple[np.ndarray, str]:
    if not {"conversation_a", "conversation_b"} <= set(battles.columns):
        return _all(battles), "no conversation columns"
    extra = config.identity_terms or {}
    patterns: dict[str, re.Pattern[str]] = {}
    leaked = np.zeros(len(battles), dtype=bool)
    for side in "ab":
        models = battles[f"model_{side}"].astype(str).tolist()
        replies = role_texts(battles, f"conversation_{side}", "assistant")
        for row, (model, reply) in enumerate(zip(models, replies, strict=True)):
            if model not in patterns:
                patterns[model] = identity_pattern(model, extra.get(model, ()))
            if not leaked[row] and patterns[model].search(reply):
                leaked[row] = True
    return ~leaked, "a reply names its own model or maker"


def _repeated_prompts(battles: pd.DataFrame, config: FilterConfig) -> tuple[np.ndarray, str]:
    if "conversation_a" not in battles.columns:
        return _all(battles), "no conversation_a column"
    prompts = pd.Series(
        [" ".join(t.lower().split()) for t in role_texts(battles, "conversation_a", "user")]
    )
    codes, _ = pd.factorize(prompts)
    codes[prompts.to_numpy() == ""] = -1
    counts = np.bincount(codes[codes >= 0]) if (codes >= 0).any() else np.zeros(0, dtype=int)
    if config.max_prompt_repeats is not None:
        cutoff = float(config.max_prompt_repeats)
    else:
        cutoff = float(np.quantile(counts, config.prompt_quantile)) if counts.size else 1.0
    # As Chatbot Arena: prompts seen more often than the cutoff keep int(cutoff) battles.
    cap = max(1, int(cutoff))
    frequent = np.flatnonzero(counts > cutoff)
    priority = _row_hash(battles, config.seed)
    rank = _rank_within(codes, priority)
    keep = (codes < 0) | ~np.isin(codes, frequent) | (rank < cap)
    return keep, f"{frequent.size} prompt(s) seen more than {cutoff:g} times cut to {cap}"


def _daily_cap(battles: pd.DataFrame, config: FilterConfig) -> tuple[np.ndarray, str]:
    if not {"judge", "tstamp"} <= set(battles.columns):
        return _all(battles), "no judge/tstamp columns"
    cap = int(config.daily_vote_cap or 0)
    judge = battles["judge"].to_numpy(dtype=object)
    stamp = battles["tstamp"].to_numpy(dtype=float)
    known = pd.notna(judge) & np.isfinite(stamp)
    day, days = pd.factorize(np.floor(np.where(known, stamp, 0.0) / SECONDS_PER_DAY))
    user, _ = pd.factorize(pd.Series(judge).astype(str))
    group = np.where(known, user * days.size + day, -1)
    # Earliest votes first; equal timestamps by seeded content hash.
    priority = np.lexsort((_row_hash(battles, config.seed), stamp))
    order_rank = np.empty(len(battles), dtype=np.int64)
    order_rank[priority] = np.arange(len(battles))
    rank = _rank_within(group, order_rank)
    keep = (group < 0) | (rank < cap)
    return keep, f"at most {cap} votes per judge per UTC day"


def _anomalous_users(battles: pd.DataFrame, config: FilterConfig) -> tuple[np.ndarray, str]:
    """Fisher-combined p-values of each user's votes against other users' votes on that pair.

    A vote's p-value is the share (with one pseudo-count) of other users' votes on that pair
    whose outcome is at most as frequent as this vote's outcome; a user is flagged when the
    combined p-value, over at least ``anomaly_min_votes`` votes, is below alpha / users tested.
    """
    if "judge" not in battles.columns:
        return _all(battles), "no judge column"
    encoded = encode_battles(battles)
    m = len(encoded.models)
    flip = encoded.a > encoded.b
    pair = np.minimum(encoded.a, encoded.b) * m + np.maximum(encoded.a, encoded.b)
    # Outcome seen from the lower model: 0 it won, 1 it lost, 2 tie, 3 both bad.
    outcome = battles["winner"].map({w.value: k for k, w in enumerate(Winner)}).to_numpy(int)
    outcome = np.where(flip & (outcome < 2), 1 - outcome, outcome)
    judge = battles["judge"].to_numpy(dtype=object)
    user, _ = pd.factorize(pd.Series(judge).astype(str))
    voting = pd.notna(judge) & (encoded.a != encoded.b)
    pairs, pair_index = np.unique(pair, return_inverse=True)
    outcomes = len(Winner)
    pair_total = _counts(pair_index[voting], outcome[voting], outcomes, pairs.size)
    user_pairs, user_pair = np.unique(user * pairs.size + pair_index, return_inverse=True)
    user_total = _counts(user_pair[voting], outcome[voting], outcomes, user_pairs.size)
    others = pair_total[pair_index] - user_total[user_pair]
    mine = np.take_along_axis(others, outcome[:, None], axis=1)
    as_rare = np.where(others <= mine, others, 0).sum(axis=1)
    p_value = (1.0 + as_rare) / (1.0 + others.sum(axis=1))
    votes = np.bincount(user[voting], minlength=user.max(initial=-1) + 1)
    statistic = np.bincount(user[voting], -2.0 * np.log(p_value[voting]), minlength=votes.size)
    tested = votes >= config.anomaly_min_votes
    combined = np.where(tested, chi2.sf(statistic, 2 * np.maximum(votes, 1)), 1.0)
    flagged = tested & (combined < config.anomaly_alpha / max(int(tested.sum()), 1))
    keep = ~(voting & flagged[user])
    return keep, f"{int(flagged.sum())} of {int(tested.sum())} users tested flagged"


def _counts(row: np.ndarray, outcome: np.ndarray, outcomes: int, rows: int) -> np.ndarray:
    flat = np.bincount(row * outcomes + outcome, minlength=rows * outcomes)
    return flat.reshape(rows, outcomes)


def _all(battles: pd.DataFrame) -> np.ndarray:
    return np.ones(len(battles), dtype=bool)


def _row_hash(battles: pd.DataFrame, seed: int) -> np.ndarray:
    """A seeded pseudo-random priority per row that depends on the row's content only."""
    columns = [
        c
        for c in ("question_id", "tstamp", "model_a", "model_b", "winner", "judge")
        if c in battles.columns
    ]
    key = f"{seed:016d}"[-16:]
    return pd.util.hash_pandas_object(
        battles[columns].astype(str), index=False, hash_key=key
    ).to_numpy()


def _rank_within(group: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """0-based rank of each row within its group, by ascending priority."""
    order = np.lexsort((priority, group))
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    position = np.arange(group.size) - np.repeat(starts, np.diff(np.r_[starts, group.size]))
    rank = np.empty(group.size, dtype=np.int64)
    rank[order] = position
    return rank
