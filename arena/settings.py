"""Runtime settings from command-line flags and environment variables (flags win).

Gradio's own GRADIO_SERVER_NAME and GRADIO_SERVER_PORT are read by Gradio itself at launch.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from arena.battles import Limits


@dataclass(frozen=True)
class Settings:
    models_path: Path
    data_dir: Path
    limits: Limits
    demo_token_latency_ms: float
    """Delay per token of the built-in demo server, so demo replies visibly stream."""
    concurrency_limit: int
    """Streaming events allowed to run at once across all users (Gradio queues the rest)."""
    proxy_hops: int
    """Trusted reverse proxies in front of the app; their X-Forwarded-For entries give the IP."""
    export: ExportSettings


@dataclass(frozen=True)
class ExportSettings:
    """Where and how often the feedback dataset is published (see `scheduler`)."""

    hub_repo: str | None
    """Hub dataset repo id (``owner/name``); None: write the dataset to ``<data-dir>/dataset``."""
    hub_private: bool
    """Create the repo private if it is missing."""
    hub_endpoint: str | None
    """Another Hub server (tests, mirrors); None: huggingface_hub's default."""
    hub_timeout_s: float
    """Longest wait for one Hub HTTP request: the client has no timeout of its own."""
    license: str
    """The dataset's licence, named in the consent notice and the dataset card."""
    push_interval_s: int
    """Seconds between exports; the default, 600, makes at most 6 commits an hour."""
    refresh_interval_s: int
    """Seconds between leaderboard recomputations (each stores a snapshot the push publishes)."""
    compact_interval_s: int
    """Seconds between compactions (merging shards, dropping deleted battles): daily."""
    signals_interval_s: int
    """Seconds between labelling passes (SAT/DSAT of new user turns; push labels first too)."""


def parse_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from flags, then ARENA_* environment variables, then defaults."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="app.py", description="Open Feedback Arena: a chat arena with a human-feedback loop."
    )
    parser.add_argument(
        "--models",
        default=env.get("ARENA_MODELS", "models.yaml"),
        help="models file (env ARENA_MODELS; default models.yaml)",
    )
    parser.add_argument(
        "--data-dir",
        default=env.get("ARENA_DATA_DIR", "data"),
        help="folder for the DuckDB store (env ARENA_DATA_DIR; default ./data)",
    )
    parser.add_argument(
        "--max-prompt-chars",
        type=_positive_int,
        default=env.get("ARENA_MAX_PROMPT_CHARS", "4000"),
        help="longest user message accepted (env ARENA_MAX_PROMPT_CHARS; default 4000)",
    )
    parser.add_argument(
        "--max-turns",
        type=_positive_int,
        default=env.get("ARENA_MAX_TURNS", "8"),
        help="user turns per battle before a vote is due (env ARENA_MAX_TURNS; default 8)",
    )
    parser.add_argument(
        "--demo-token-latency-ms",
        type=_non_negative_float,
        default=env.get("ARENA_DEMO_TOKEN_LATENCY_MS", "25"),
        help="delay per token of the built-in demo models (env ARENA_DEMO_TOKEN_LATENCY_MS)",
    )
    parser.add_argument(
        "--concurrency-limit",
        type=_positive_int,
        default=env.get("ARENA_CONCURRENCY_LIMIT", "256"),
        help="streaming events run at once (env ARENA_CONCURRENCY_LIMIT; default 256)",
    )
    parser.add_argument(
        "--proxy-hops",
        type=_non_negative_int,
        default=env.get("ARENA_PROXY_HOPS", "0"),
        help="trusted reverse proxies in front of the app, e.g. 1 on a Space (env "
        "ARENA_PROXY_HOPS; default 0: the socket peer is the client)",
    )
    parser.add_argument(
        "--hub-repo",
        default=env.get("ARENA_HUB_REPO") or None,
        help="Hub dataset repo to publish the feedback to, with the token in HF_TOKEN (env "
        "ARENA_HUB_REPO; default: none, the dataset is written to <data-dir>/dataset)",
    )
    parser.add_argument(
        "--hub-private",
        action=argparse.BooleanOptionalAction,
        default=env.get("ARENA_HUB_PRIVATE", "").lower() in ("1", "true", "yes"),
        help="create the Hub repo private (env ARENA_HUB_PRIVATE=1; default public)",
    )
    parser.add_argument(
        "--hub-endpoint",
        default=env.get("ARENA_HUB_ENDPOINT") or None,
        help="Hub server URL (env ARENA_HUB_ENDPOINT; default huggingface_hub's, or HF_ENDPOINT)",
    )
    parser.add_argument(
        "--hub-timeout-s",
        type=_positive_float,
        default=env.get("ARENA_HUB_TIMEOUT_S", "60"),
        help="longest wait for one Hub request (env ARENA_HUB_TIMEOUT_S; default 60)",
    )
    parser.add_argument(
        "--dataset-license",
        default=env.get("ARENA_DATASET_LICENSE", "cc-by-4.0"),
        help="licence of the published dataset (env ARENA_DATASET_LICENSE; default cc-by-4.0)",
    )
    parser.add_argument(
        "--push-interval-s",
        type=_interval,
        default=env.get("ARENA_PUSH_INTERVAL_S", "600"),
        help="seconds between dataset exports (env ARENA_PUSH_INTERVAL_S; default 600, at "
        "least 60: the Hub allows about 128 commits an hour)",
    )
    parser.add_argument(
        "--refresh-interval-s",
        type=_interval,
        default=env.get("ARENA_REFRESH_INTERVAL_S", "600"),
        help="seconds between leaderboard refreshes (env ARENA_REFRESH_INTERVAL_S; default 600)",
    )
    parser.add_argument(
        "--compact-interval-s",
        type=_interval,
        default=env.get("ARENA_COMPACT_INTERVAL_S", "86400"),
        help="seconds between compactions of the dataset, which also drop deleted battles "
        "(env ARENA_COMPACT_INTERVAL_S; default 86400)",
    )
    parser.add_argument(
        "--signals-interval-s",
        type=_positive_int,
        default=env.get("ARENA_SIGNALS_INTERVAL_S", "300"),
        help="seconds between labelling passes, which read satisfaction signals from new user "
        "turns (env ARENA_SIGNALS_INTERVAL_S; default 300; every push labels first too)",
    )
    args = parser.parse_args(argv)
    return Settings(
        models_path=Path(args.models),
        data_dir=Path(args.data_dir),
        limits=Limits(max_prompt_chars=args.max_prompt_chars, max_turns=args.max_turns),
        demo_token_latency_ms=args.demo_token_latency_ms,
        concurrency_limit=args.concurrency_limit,
        proxy_hops=args.proxy_hops,
        export=ExportSettings(
            hub_repo=args.hub_repo,
            hub_private=args.hub_private,
            hub_endpoint=args.hub_endpoint,
            hub_timeout_s=args.hub_timeout_s,
            license=args.dataset_license,
            push_interval_s=args.push_interval_s,
            refresh_interval_s=args.refresh_interval_s,
            compact_interval_s=args.compact_interval_s,
            signals_interval_s=args.signals_interval_s,
        ),
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number above 0, got 0")
    return value


def _interval(text: str) -> int:
    value = _positive_int(text)
    if value < 60:
        raise argparse.ArgumentTypeError(
            f"expected at least 60 seconds, got {value}: the Hub allows about 128 commits an hour"
        )
    return value
