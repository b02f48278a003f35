"""What one model reply is, as streamed, shown, stored and exported."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict


class Message(TypedDict):
    """One chat turn, in the OpenAI/TGI chat format."""

    role: str  # "system", "user" or "assistant"
    content: str


class ErrorKind(StrEnum):
    """Why a reply failed, as stored; users read ReplyError.message instead."""

    CONNECTION = "connection"  # refused, reset, DNS failure, TLS
    HTTP_STATUS = "http_status"  # a 4xx/5xx answer (other than 429)
    OVERLOADED = "overloaded"  # HTTP 429, or TGI's "overloaded" error event
    STREAM_ERROR = "stream_error"  # an error event inside an HTTP 200 stream
    MALFORMED = "malformed"  # an event that is not the protocol's JSON
    INCOMPLETE = "incomplete"  # the stream ended without its final event
    STALL = "stall"  # no token for longer than the stall timeout
    DEADLINE = "deadline"  # the whole reply took longer than the total timeout


@dataclass(frozen=True)
class ReplyError:
    kind: ErrorKind
    message: str
    """A sentence a user can read in the chat pane."""
    status: int | None = None
    """The HTTP status or the status carried by an error event, when there is one."""


@dataclass
class Reply:
    """A reply being streamed. Clients update it in place and yield it after every token."""

    model: str
    text: str = ""
    tokens: int = 0
    ttft_s: float | None = None
    """Seconds from sending the request to the first token."""
    total_s: float | None = None
    """Seconds from sending the request to the end of the stream (set when finished)."""
    finish_reason: str | None = None
    """As the server reported it: "length", "eos_token", "stop", "stop_sequence"..."""
    error: ReplyError | None = None
    finished: bool = False
    """No more updates will come: the stream ended, failed, or was cancelled."""

    @property
    def ok(self) -> bool:
        """Finished without an error: the reply can be voted on."""
        return self.finished and self.error is None
