"""Failure knobs of the demo server, set per persona in code or per request by HTTP header.

The knobs and their headers are described in the package docstring (``arena.demo_server``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

HEADERS: dict[str, str] = {
    "token_latency_ms": "X-Demo-Token-Latency-Ms",
    "error_at": "X-Demo-Error-At",
    "overload": "X-Demo-Overload",
    "http_status": "X-Demo-Http-Status",
    "stall_at": "X-Demo-Stall-At",
    "truncate_at": "X-Demo-Truncate-At",
    "malformed_at": "X-Demo-Malformed-At",
}
"""Request header of each ``Faults`` field that can be set per request."""


class StreamFault(StrEnum):
    """What goes wrong once a number of tokens has been sent."""

    ERROR = "error"
    STALL = "stall"
    TRUNCATE = "truncate"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Faults:
    """Misbehaviour of one persona. ``None``/``False`` fields leave the server behaving normally.

    ``*_at`` fields count generated tokens: the fault happens after that many tokens were sent
    (0: before the first). A fault whose count is not below the reply's length never fires, and
    when several are set only the earliest fires.
    """

    token_latency_ms: float | None = None
    """Sleep before each token; ``None`` uses the server's default."""
    error_at: int | None = None
    overload: bool = False
    http_status: int | None = None
    stall_at: int | None = None
    truncate_at: int | None = None
    malformed_at: int | None = None
    unhealthy: bool = False
    """``/health`` answers 503 (no header: health checks carry no test headers)."""

    def __post_init__(self) -> None:
        if self.token_latency_ms is not None and self.token_latency_ms < 0:
            raise ValueError(f"token_latency_ms must be >= 0, got {self.token_latency_ms}")
        if self.http_status is not None and not 400 <= self.http_status <= 599:
            raise ValueError(f"http_status must be a 4xx or 5xx status, got {self.http_status}")
        for kind in StreamFault:
            at = getattr(self, f"{kind}_at")
            if at is not None and at < 0:
                raise ValueError(f"{kind}_at must be >= 0, got {at}")

    def with_headers(self, headers: Mapping[str, str]) -> Faults:
        """These faults overridden by the request's ``X-Demo-*`` headers.

        Raises ``ValueError`` naming the header when a value cannot be parsed.
        """
        changes: dict[str, float | int | bool] = {}
        for field, header in HEADERS.items():
            raw = headers.get(header)
            if raw is None:
                continue
            try:
                if field == "overload":
                    changes[field] = _parse_bool(raw)
                elif field == "token_latency_ms":
                    changes[field] = float(raw)
                else:
                    changes[field] = int(raw)
            except ValueError:
                raise ValueError(f"invalid {header} header: {raw!r}") from None
        try:
            return dataclasses.replace(self, **changes) if changes else self
        except ValueError as exc:
            raise ValueError(f"invalid X-Demo-* header: {exc}") from None

    def first_stream_fault(self, n_tokens: int) -> tuple[StreamFault, int] | None:
        """The fault that fires first in a reply of ``n_tokens`` tokens, and after how many."""
        firing = [
            (at, kind)
            for kind in StreamFault
            if (at := getattr(self, f"{kind}_at")) is not None and at < n_tokens
        ]
        if not firing:
            return None
        at, kind = min(firing)
        return kind, at


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)
