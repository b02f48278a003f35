"""``python -m arena.demo_server``: serve the demo personas until Ctrl-C."""

from __future__ import annotations

import argparse
import threading

from arena.demo_server import PERSONAS, DemoServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m arena.demo_server",
        description="Serve the arena's demo personas over the TGI protocol.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--token-latency-ms", type=float, default=20.0)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    server = DemoServer(
        args.host, args.port, token_latency_ms=args.token_latency_ms, log_level=args.log_level
    )
    with server:
        for persona in PERSONAS:
            print(f"builtin:{persona:<10} {server.base_url(persona)}")
        print("Serving; press Ctrl-C to stop.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("Stopping.")


if __name__ == "__main__":
    main()
