"""Model streams through the worker process: the replies the client gives in-process, in fewer
updates; a consumer leaving stops the request; a worker that dies or cannot start."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import pytest

from arena.clients import ModelClient
from arena.config import ModelEntry, Timeouts
from arena.demo_server import DemoServer
from arena.model_worker import ModelWorker, RemoteClient, Target, WorkerError
from arena.replies import ErrorKind, Message, Reply

PROTOCOLS = ["tgi", "openai"]
ASK: list[Message] = [{"role": "user", "content": "How do I keep sourdough starter alive?"}]


def entry(name: str, protocol: str = "tgi", persona: str = "coder", **fields: Any) -> ModelEntry:
    return ModelEntry(
        name=name,
        display_name=name,
        organization="Tests",
        endpoint=f"builtin:{persona}",
        protocol=protocol,
        timeouts=Timeouts(total=10, stall=5),
        **fields,
    )


async def collect(client: ModelClient | RemoteClient, messages=ASK) -> tuple[Reply, int]:
    """The final reply and the number of updates; checks the updates' contract on the way:
    always the same object, finished only at the end."""
    finished, replies = [], set()
    async with aclosing(client.stream(messages)) as updates:
        async for reply in updates:
            finished.append(reply.finished)
            replies.add(id(reply))
    assert finished == [False] * (len(finished) - 1) + [True] and len(replies) == 1
    return reply, len(finished)


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with DemoServer(port=0, token_latency_ms=2, keepalive_interval_s=0.05) as demo:
        yield demo


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_reply_through_the_worker_is_the_one_the_client_gives_in_process(server, protocol, capfd):
    model = entry("m", protocol)
    base = server.base_url("coder")

    async def main() -> tuple[tuple[Reply, int], tuple[Reply, int]]:
        with ModelWorker({"m": Target(model, base)}) as worker:
            remote = await collect(worker.client("m"))
        async with ModelClient(model, base) as client:
            return remote, await collect(client)

    (remote, remote_updates), (direct, direct_updates) = asyncio.run(main())
    assert remote.ok and direct.ok
    assert (remote.text, remote.tokens, remote.finish_reason) == (
        direct.text,
        direct.tokens,
        direct.finish_reason,
    )
    assert remote.ttft_s is not None and remote.total_s is not None
    # Coalesced: at 2 ms a token, a 25 ms tick carries several.
    assert remote_updates < direct_updates
    # The worker writes to the app's log: not a line per request.
    assert "HTTP Request" not in capfd.readouterr().err


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_endpoint_failure_arrives_as_the_reply_s_error(server, protocol):
    target = Target(entry("m", protocol), server.base_url("coder"), {"X-Demo-Error-At": "3"})

    async def main() -> Reply:
        with ModelWorker({"m": target}) as worker:
            return (await collect(worker.client("m")))[0]

    reply = asyncio.run(main())
    assert reply.finished and reply.error is not None
    assert reply.error.kind is ErrorKind.STREAM_ERROR and reply.tokens == 3 and reply.text


def test_a_consumer_leaving_early_stops_the_request_in_the_worker():
    # Each persona serves one request at a time: the probe is refused until the held stream,
    # stalled after two tokens, is closed by the worker.
    with DemoServer(port=0, max_concurrent_requests=1, keepalive_interval_s=0.05) as server:
        base = server.base_url("coder")
        targets = {
            "held": Target(entry("held"), base, {"X-Demo-Stall-At": "2"}),
            "probe": Target(entry("probe"), base),
        }

        async def main() -> None:
            with ModelWorker(targets) as worker:
                updates = worker.client("held").stream(ASK)
                async for reply in updates:
                    if reply.tokens >= 2:
                        break
                busy, _ = await collect(worker.client("probe"))
                assert busy.error is not None and busy.error.kind is ErrorKind.OVERLOADED
                await updates.aclose()
                for _ in range(40):
                    after, _ = await collect(worker.client("probe"))
                    if after.ok:
                        break
                    await asyncio.sleep(0.05)
                assert after.ok, "the worker kept the request open"
                assert worker._streams == {}

        asyncio.run(main())


def test_a_worker_that_dies_fails_the_replies_in_flight_and_a_new_one_takes_over(server):
    slow = {"X-Demo-Token-Latency-Ms": "50"}
    targets = {"m": Target(entry("m"), server.base_url("coder"), slow)}

    async def main() -> None:
        with ModelWorker(targets) as worker:
            first_pid = worker.pid
            async with aclosing(worker.client("m").stream(ASK)) as updates:
                async for reply in updates:
                    if reply.tokens and not reply.finished:
                        os.kill(first_pid, signal.SIGKILL)
            assert reply.finished and reply.error is not None
            assert reply.error.kind is ErrorKind.CONNECTION
            assert "lost" in reply.error.message
            for _ in range(100):  # the new worker takes a moment to start
                if worker.pid not in (None, first_pid):
                    break
                await asyncio.sleep(0.1)
            again, _ = await collect(worker.client("m"))
            assert again.ok and worker.pid != first_pid

    asyncio.run(main())


def kill_and_await_restarts(worker: ModelWorker, attempts: list[float], count: int) -> int:
    """Kill the worker's process, then wait until ``attempts`` (appended to by a stand-in for
    ``worker.start``) shows ``count`` tries at a replacement; returns the killed process id."""
    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for _ in range(250):
        if len(attempts) >= count:
            return pid
        time.sleep(0.02)
    raise AssertionError(f"{len(attempts)} tries to replace the worker, not {count}")


def test_a_worker_that_cannot_be_replaced_at_once_is_retried_until_one_starts(server):
    targets = {"m": Target(entry("m"), server.base_url("coder"))}
    attempts: list[float] = []
    may_start = threading.Event()

    async def main() -> None:
        with ModelWorker(targets, restart_delays_s=[0.05]) as worker:
            start = worker.start

            def start_when_allowed() -> None:
                attempts.append(time.monotonic())
                if not may_start.is_set():
                    raise WorkerError("the machine is out of memory")
                start()

            worker.start = start_when_allowed  # type: ignore[method-assign]
            first_pid = kill_and_await_restarts(worker, attempts, 3)
            # Meanwhile replies fail at once, with a message that says to try again.
            meanwhile, _ = await collect(worker.client("m"))
            assert meanwhile.error is not None and meanwhile.error.kind is ErrorKind.CONNECTION
            assert "Try again" in meanwhile.error.message
            may_start.set()
            for _ in range(100):
                if worker.pid not in (None, first_pid):
                    break
                await asyncio.sleep(0.1)
            again, _ = await collect(worker.client("m"))
            assert again.ok and worker.pid not in (None, first_pid)

    asyncio.run(main())


def test_closing_the_arena_stops_the_retries(server):
    targets = {"m": Target(entry("m"), server.base_url("coder"))}
    attempts: list[float] = []
    worker = ModelWorker(targets, restart_delays_s=[0.05])
    worker.start()

    def never() -> None:
        attempts.append(time.monotonic())
        raise WorkerError("the machine is out of memory")

    worker.start = never  # type: ignore[method-assign]
    kill_and_await_restarts(worker, attempts, 2)
    worker.close()
    time.sleep(0.1)  # let a retry that was already past its wait finish
    after_close = len(attempts)
    time.sleep(0.3)  # six pauses: no attempt any more
    assert len(attempts) == after_close


def test_a_model_the_worker_cannot_build_fails_the_start_with_the_reason(server):
    broken = entry("broken", chat_template="{{ raise_exception('this template refuses') }}")
    with pytest.raises(WorkerError, match=r"'broken'.*this template refuses"):
        ModelWorker({"broken": Target(broken, server.base_url("coder"))}).start()


def test_a_conversation_the_template_refuses_raises_in_the_consumer(server):
    # A caller bug, raised as ModelClient.stream raises it (there: TemplateError).
    template = (
        "{% if messages|length > 1 %}{{ raise_exception('one message only') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    targets = {"m": Target(entry("m", chat_template=template), server.base_url("coder"))}

    async def main() -> None:
        with ModelWorker(targets) as worker:
            two = [*ASK, {"role": "assistant", "content": "Feed it."}, *ASK]
            with pytest.raises(RuntimeError, match="one message only"):
                await collect(worker.client("m"), two)
            assert (await collect(worker.client("m")))[0].ok  # the worker is still fine

    asyncio.run(main())
