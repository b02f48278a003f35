"""The floor of `bench_battles.py`: a bare Gradio app with the Battle tab's endpoint and no arena.

    .venv/bin/python benchmarks/bench_battles.py --battles 100 --app benchmarks/gradio_floor_app.py

``/battle_send`` takes the prompt and answers both panes (``#chatbot-a``, ``#chatbot-b``) with the
demo persona's whole reply in its first update: no model, no store, no wait, the queue settings
of `app.py`. Whatever time to first token the benchmark measures here is Gradio's and the
benchmark's own, on this machine; no app built on Gradio can answer a burst faster. The "added"
column still subtracts the demo server's TTFT, although this app never asks it: read the raw
app TTFT beside it. It takes `app.py`'s flags and uses only ``--concurrency-limit``: the
models file and the data folder are not read, so the benchmark's store check finds no store.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import QUEUE_STATUS_INTERVAL_S
from arena.demo_server.personas import generate
from arena.settings import parse_settings

PERSONA, TOKENS = "verbose", 100
"""What `bench_battles.py` expects in both panes: the verbose persona, cut at 100 tokens."""

Pane = list[dict[str, str]]


async def battle_send(prompt: str) -> AsyncIterator[tuple[Pane, Pane]]:
    reply = generate(PERSONA, prompt, TOKENS, []).text
    pane = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    yield pane, pane


def build(concurrency_limit: int) -> gr.Blocks:
    with gr.Blocks() as blocks:
        with gr.Row():
            chatbot_a = gr.Chatbot(elem_id="chatbot-a")
            chatbot_b = gr.Chatbot(elem_id="chatbot-b")
        prompt = gr.Textbox(elem_id="prompt")
        send = gr.Button("Send", elem_id="send")
        send.click(
            battle_send,
            inputs=[prompt],
            outputs=[chatbot_a, chatbot_b],
            api_name="battle_send",
            concurrency_limit=concurrency_limit,
        )
    blocks.queue(
        default_concurrency_limit=concurrency_limit,
        status_update_rate=QUEUE_STATUS_INTERVAL_S,
    )
    return blocks


if __name__ == "__main__":
    settings = parse_settings(sys.argv[1:])
    build(settings.concurrency_limit).launch(max_threads=settings.concurrency_limit)
