"""The rating engine: pure functions from a frame of battles to a leaderboard (no I/O, no clock).

Input is a pandas DataFrame in the lmsys arena format, one row per vote:

=====================  ===================================================================
column                 meaning
=====================  ===================================================================
model_a, model_b       model names (non-empty strings); required
winner                 an ``arena.votes.Winner`` value: "model_a", "model_b", "tie",
                       "tie (bothbad)"; required. Both ties count as half a win each.
tstamp                 vote time, float epoch seconds (datetimes accepted); orders the Elo
                       replay and the daily vote cap
judge                  pseudonymous user key; daily vote cap and anomaly filter
anony                  bool: voted before the names were shown; only these are rated by
                       default
has_error              bool: a reply errored or did not finish
moderated              bool: a moderation hit (else ``openai_moderation["flagged"]`` is used)
conversation_a, _b     lists of {"role", "content"} messages: identity-leak filter, prompt
                       deduplication, style features
is_<category>          bool, one column per category (``is_code``, ``is_hard``...);
                       ``category="code"`` rates the battles where ``is_code`` is true
length_a, length_b,    precomputed style counts per side (characters, markdown headers, list
header_count_a, _b,    items, bold spans); else ``conv_metadata`` (public Chatbot Arena
list_count_a, _b,      releases) or the conversations are used
bold_count_a, _b
question_id, ...       passed through (question_id seeds the filters' row hash)
=====================  ===================================================================

Missing optional columns switch off what needs them (the filter report says so); bad values
raise ``RatingInputError`` naming the row and column.

``compute_leaderboard`` returns a ``Leaderboard``: Bradley-Terry ratings (400 points per factor
of 10 in odds, mean 1000 or an anchor model held at a score) with seeded bootstrap intervals
and Rank (UB), votes, win rate, online Elo, win-fraction and battle-count matrices, the filter
report, and optionally style-controlled ratings. ``category_ratings`` gives point ratings per
category. ``python -m arena.ratings`` is the command-line front end.
"""

from arena.ratings.bradley_terry import Standing
from arena.ratings.filters import FilterConfig, FilterStep
from arena.ratings.leaderboard import (
    STYLE_COLUMNS,
    TABLE_COLUMNS,
    UNRATED_COLUMNS,
    Anchor,
    Leaderboard,
    category_ratings,
    compute_leaderboard,
)
from arena.ratings.schema import RatingInputError, available_categories

__all__ = [
    "STYLE_COLUMNS",
    "TABLE_COLUMNS",
    "UNRATED_COLUMNS",
    "Anchor",
    "FilterConfig",
    "FilterStep",
    "Leaderboard",
    "RatingInputError",
    "Standing",
    "available_categories",
    "category_ratings",
    "compute_leaderboard",
]
