"""The vote vocabulary shared by the store, the battle UI, the exports and the rating engine.

The values are those of the public lmsys arena datasets (``lmsys/chatbot_arena_conversations``),
so our exports and the public data can be rated by the same code.
"""

from enum import StrEnum


class Winner(StrEnum):
    """Outcome of one battle, as stored and exported."""

    MODEL_A = "model_a"
    MODEL_B = "model_b"
    TIE = "tie"
    BOTH_BAD = "tie (bothbad)"

    @property
    def score_a(self) -> float:
        """Model A's share of the win: 1, 0, or a half for both kinds of tie."""
        return {Winner.MODEL_A: 1.0, Winner.MODEL_B: 0.0}.get(self, 0.5)
