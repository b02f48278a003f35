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
    args = parser.parse_args(argv)
    return Settings(
        models_path=Path(args.models),
        data_dir=Path(args.data_dir),
        limits=Limits(max_prompt_chars=args.max_prompt_chars, max_turns=args.max_turns),
        demo_token_latency_ms=args.demo_token_latency_ms,
        concurrency_limit=args.concurrency_limit,
        proxy_hops=args.proxy_hops,
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
