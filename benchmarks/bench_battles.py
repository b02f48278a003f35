"""Battles under load: N concurrent anonymous battles through the running app, by raw HTTP.

The script starts the built-in demo server (``python -m arena.demo_server``) and the app
(``python app.py``) as two separate processes, the app pointed at the server through a models
file written here (the verbose persona under four names, two per protocol, every reply cut at
``--tokens`` tokens), so that the app process holds only the app. It then drives Gradio's queue
protocol directly with httpx from one asyncio process: per battle ``POST /gradio_api/queue/join``
for ``/battle_send`` and the SSE stream ``GET /gradio_api/queue/data``, whose updates are diffs.

Baseline, in the same run: the same number of concurrent battles straight against the demo server
(two streams each, no app), and the ideal wall time: one unloaded battle on the server alone
(median of three; one with --quick). Reported per N: time to first token (both panes show
assistant text) of the app and of the server alone, the time the app adds, wall time against the
ideal, errors, the app's memory (RSS sampled every 50 ms) and the CPU of every process, the
machine's other load included (this machine is shared: a busy neighbour slows the app). A
timeline shows where a battle's time goes. Goals of the issue (N=100): wall within 1.5x of ideal,
added TTFT p95 under 300 ms, no errors; printed, never asserted. After the app stopped, its store
is read to check every reply has exactly ``--tokens`` tokens and finish reason "length".

    .venv/bin/python benchmarks/bench_battles.py              # N = 1, 50, 100 (about 1 minute)
    .venv/bin/python benchmarks/bench_battles.py --quick      # N = 1, 10 (smoke run, about 25 s)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

try:  # orjson comes with Gradio; faster, so the client takes less CPU from the app
    from orjson import loads as _loads
except ImportError:
    from json import loads as _loads

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arena.demo_server.personas import generate, render_chatml  # noqa: E402

PERSONA = "verbose"
MODELS = (
    ("bench-tgi-1", "tgi"),
    ("bench-chat-1", "openai"),
    ("bench-tgi-2", "tgi"),
    ("bench-chat-2", "openai"),
)
SYSTEM_PROMPT = "You are a thorough assistant. Explain every step in detail."
TOPICS = (
    "how hash tables handle collisions",
    "why the sky looks blue",
    "the difference between TCP and UDP",
    "how vaccines train the immune system",
    "what makes a good unit test",
    "how compound interest works",
    "the causes of the French Revolution",
    "how a bicycle stays upright",
    "what recursion is in programming",
    "how photosynthesis stores energy",
    "the trade-offs of microservices",
    "how to learn a new language as an adult",
)
SAMPLE_S = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")
ADDED_TTFT_GOAL_MS = 300.0
WALL_RATIO_GOAL = 1.5
GOAL_BATTLES = 100

# Runs the app with a cProfile profiler in every thread; one .prof file per thread at exit.
PROFILE_WRAPPER = """
import atexit, cProfile, runpy, sys, threading
out, app = sys.argv[1], sys.argv[2]
profiles = {}
original_run = threading.Thread.run
def run(self):
    profile = profiles.setdefault(f"{self.name}-{threading.get_ident()}", cProfile.Profile())
    profile.enable()
    try:
        original_run(self)
    finally:
        profile.disable()
threading.Thread.run = run
def dump():
    for name, profile in list(profiles.items()):
        profile.disable()
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        profile.dump_stats(f"{out}.{safe}.prof")
atexit.register(dump)
sys.argv = sys.argv[2:]
profiles["main"] = cProfile.Profile()
profiles["main"].enable()
runpy.run_path(app, run_name="__main__")
"""


# -- results --------------------------------------------------------------------------------------


@dataclass
class BattleResult:
    """One battle as the client saw it; times in seconds from the battle's own request."""

    first: list[float | None] = field(default_factory=lambda: [None, None])
    """First assistant text in pane A / B (app), or first token of stream A / B (server)."""
    joined: float | None = None
    """App only: the answer to ``queue/join`` arrived."""
    opened: float | None = None
    """App only: the ``queue/data`` event stream answered (headers)."""
    first_event: float | None = None
    """App only: the first message of the event stream arrived."""
    started: float | None = None
    """App only: Gradio's ``process_starts`` message arrived (queue wait)."""
    ended: float | None = None
    end_at: float | None = None
    """End, in seconds from the start of the whole run (for the wall time)."""
    error: str | None = None
    updates: int = 0
    bytes: int = 0

    @property
    def ttft(self) -> float | None:
        """Both sides showing text."""
        a, b = self.first
        return None if a is None or b is None else max(a, b)

    @property
    def first_side(self) -> float | None:
        """Either side showing text."""
        seen = [t for t in self.first if t is not None]
        return min(seen) if seen else None


@dataclass
class Usage:
    """Resources of the processes over one phase."""

    wall_s: float = 0.0
    app_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0
    """Busy CPU seconds of the whole machine, all processes: the rest is other people's load."""
    app_rss_before_mb: float = 0.0
    app_rss_peak_mb: float = 0.0
    app_rss_after_mb: float = 0.0
    app_threads_peak: int = 0


@dataclass
class Row:
    n: int
    server: list[BattleResult]
    server_wall_s: float
    app: list[BattleResult]
    app_wall_s: float
    usage: Usage


# -- processes ------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """Child processes of the benchmark, stopped (SIGINT, then SIGTERM, then SIGKILL) on exit."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the benchmark, which stops them
                preexec_fn=_die_with_parent,
            )
        self._procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        """Ask politely (SIGINT lets the app close its store), then insist; bounded."""
        for sig, wait_s in ((signal.SIGINT, 15), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait_s)

    def stop_all(self) -> None:
        for proc in reversed(self._procs):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    check: Callable[[], str | None], proc: subprocess.Popen[bytes], what: str, log: Path
) -> str:
    """Poll ``check`` until it returns a value; fail (with the log's tail) if ``proc`` exits or
    60 s pass."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        value = check()
        if value is not None:
            return value
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    status = "did not start within 60 s" if proc.poll() is None else f"exited ({proc.returncode})"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise SystemExit(f"{what} {status}; last lines of {log.name}:\n{tail}")


def start_demo_server(procs: Processes, work: Path, latency_ms: float) -> tuple[Any, str]:
    """The demo server in its own process; returns it and the verbose persona's base URL."""
    log = work / "demo_server.log"
    args = [sys.executable, "-m", "arena.demo_server", "--port", "0"]
    args += ["--token-latency-ms", str(latency_ms), "--log-level", "warning"]
    proc = procs.start(args, log, dict(os.environ))

    def url() -> str | None:
        match = re.search(rf"builtin:{PERSONA}\s+(\S+)", log.read_text(errors="replace"))
        return match.group(1) if match else None

    return proc, wait_for(url, proc, "the demo server", log)


def write_models(path: Path, base_url: str, tokens: int) -> None:
    lines = ["models:"]
    for name, protocol in MODELS:
        lines += [
            f"  - name: {name}",
            f"    display_name: {name}",
            "    organization: benchmark",
            f"    endpoint: {base_url}",
            f"    protocol: {protocol}",
            f"    parameters: {{max_new_tokens: {tokens}}}",
            f"    system_prompt: {SYSTEM_PROMPT}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def start_app(procs: Processes, work: Path, models: Path, port: int, args: Any) -> Any:
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    env["GRADIO_SERVER_NAME"] = "127.0.0.1"
    app = [str(args.app), "--models", str(models), "--data-dir", str(work / "data")]
    app += args.app_args.split()
    if args.profile_app:
        command = [sys.executable, "-c", PROFILE_WRAPPER, args.profile_app, *app]
    else:
        command = [sys.executable, *app]
    log = work / "app.log"
    proc = procs.start(command, log, env)

    def ready() -> str | None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).status_code == 200:
                return "ok"
        return None

    wait_for(ready, proc, "the app", log)
    return proc


# -- /proc sampling -------------------------------------------------------------------------------


def app_tree(pid: int) -> list[int]:
    """The app process and its children (the model worker, ``python -m arena.model_worker``):
    what the app costs is what they cost together."""
    children = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry.name}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
    return [pid, *children]


def rss_mb(pids: Sequence[int]) -> tuple[float, int]:
    """Resident memory (MB) and thread count of processes, summed."""
    rss, threads = 0.0, 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("Threads:"):
                    threads += int(line.split()[1])
    return rss, threads


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_s(pids: Sequence[int]) -> dict[int, float]:
    return {pid: cpu_s(pid) for pid in pids}


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all CPUs; idle and iowait excluded)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
    except OSError:
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


def load_average() -> str:
    try:
        with open("/proc/loadavg") as loadavg:
            return " ".join(loadavg.read().split()[:3])
    except OSError:
        return "?"


@contextlib.asynccontextmanager
async def measured(app_pid: int, server_pid: int) -> Any:
    """Usage of the processes while the block runs; the app's RSS (with its model worker's) is
    sampled every 50 ms. A worker that exits during the block takes its CPU time with it."""
    usage = Usage()
    tree = app_tree(app_pid)  # once: a scan of /proc every sample would cost the benchmark CPU
    usage.app_rss_before_mb, usage.app_threads_peak = rss_mb(tree)
    usage.app_rss_peak_mb = usage.app_rss_before_mb
    app0 = tree_cpu_s(tree)
    cpu0 = cpu_s(server_pid), time.process_time(), machine_cpu_s()
    t0 = time.perf_counter()

    async def sample() -> None:
        while True:
            rss, threads = rss_mb(tree)
            usage.app_rss_peak_mb = max(usage.app_rss_peak_mb, rss)
            usage.app_threads_peak = max(usage.app_threads_peak, threads)
            await asyncio.sleep(SAMPLE_S)

    sampler = asyncio.create_task(sample())
    try:
        yield usage
    finally:
        sampler.cancel()
        usage.wall_s = time.perf_counter() - t0
        app1 = tree_cpu_s(app_tree(app_pid))
        usage.app_cpu_s = sum(cpu - app0.get(pid, 0.0) for pid, cpu in app1.items())
        usage.server_cpu_s = cpu_s(server_pid) - cpu0[0]
        usage.bench_cpu_s = time.process_time() - cpu0[1]
        usage.machine_cpu_s = machine_cpu_s() - cpu0[2]
        usage.app_rss_after_mb = rss_mb(app_tree(app_pid))[0]
        usage.app_rss_peak_mb = max(usage.app_rss_peak_mb, usage.app_rss_after_mb)


# -- load -----------------------------------------------------------------------------------------


def prompt_for(tag: str, index: int) -> str:
    return f"Explain {TOPICS[index % len(TOPICS)]} (run {tag} battle {index})"


def expected_text(prompt: str, tokens: int) -> str:
    """What the verbose persona streams for ``prompt``, cut at ``tokens`` tokens."""
    generation = generate(PERSONA, prompt, tokens, [])
    if generation.finish_reason != "length":
        raise SystemExit(f"the {PERSONA} persona answers {prompt!r} in under {tokens} tokens")
    return generation.text


def timeout_s(tokens: int, latency_ms: float) -> float:
    """Deadline of one battle: generous, so only a hung battle hits it."""
    return max(60.0, 10 * tokens * latency_ms / 1000)


async def server_battle(
    http: httpx.AsyncClient,
    base_url: str,
    prompt: str,
    tokens: int,
    deadline_s: float,
    run_t0: float,
) -> BattleResult:
    """Two streams straight to the demo server, as the app's two clients send them."""
    result = BattleResult()
    t0 = time.perf_counter()
    chat = [("system", SYSTEM_PROMPT), ("user", prompt)]
    tgi = {
        "inputs": render_chatml(chat),
        "parameters": {"max_new_tokens": tokens, "do_sample": True, "details": True},
    }
    openai = {
        "model": "tgi",
        "messages": [{"role": role, "content": content} for role, content in chat],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": tokens,
    }

    async def stream(side: int, url: str, body: dict[str, Any]) -> None:
        count = 0
        async with http.stream("POST", url, json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                event = _loads(line[5:])
                if event.get("error"):
                    raise RuntimeError(f"server error event: {event['error']}")
                if "choices" in event:  # chat chunk; the last one (usage) has no choice
                    choices = event["choices"]
                    text = choices[0]["delta"].get("content") if choices else None
                else:
                    text = event["token"]["text"]
                if text:
                    count += 1
                    if result.first[side] is None:
                        result.first[side] = time.perf_counter() - t0
        if count != tokens:
            raise RuntimeError(f"stream {'AB'[side]}: {count} tokens, expected {tokens}")

    try:
        async with asyncio.timeout(deadline_s):
            await asyncio.gather(
                stream(0, f"{base_url}/generate_stream", tgi),
                stream(1, f"{base_url}/v1/chat/completions", openai),
            )
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    now = time.perf_counter()
    result.ended, result.end_at = now - t0, now - run_t0
    return result


@dataclass(frozen=True)
class Endpoint:
    """How to call ``/battle_send`` through Gradio's queue, read from ``/config``."""

    fn_index: int
    trigger_id: int | None
    inputs: int
    prompt: int
    """Position of the prompt textbox among the inputs; the others (server-side state) get null."""
    panes: tuple[int, int]
    """Positions of the two chatbots among the outputs."""
    choice: tuple[int, int | None] | None = None
    """``/consent_share`` or ``/consent_private`` (fn index, trigger id), clicked by each session
    before its battle when ``--consent`` asks for it."""

    def data(self, prompt: str) -> list[str | None]:
        values: list[str | None] = [None] * self.inputs
        values[self.prompt] = prompt
        return values


def discover(url: str, consent: str = "none") -> Endpoint:
    config = httpx.get(f"{url}/config", timeout=10).json()
    choice = None
    if consent != "none":
        for index, dep in enumerate(config["dependencies"]):
            if dep.get("api_name") == f"consent_{consent}":
                trigger = dep["targets"][0][0] if dep.get("targets") else None
                choice = (dep.get("id", index), trigger)
        if choice is None:
            raise SystemExit(f"the app has no /consent_{consent} endpoint")
    components = {c["id"]: c for c in config["components"]}

    def elem_id(component_id: int) -> str | None:
        return components.get(component_id, {}).get("props", {}).get("elem_id")

    for index, dep in enumerate(config["dependencies"]):
        if dep.get("api_name") != "battle_send":
            continue
        inputs, outputs = dep["inputs"], dep["outputs"]
        panes = [i for i, c in enumerate(outputs) if elem_id(c) in ("chatbot-a", "chatbot-b")]
        texts = [i for i, c in enumerate(inputs) if components[c].get("type") == "textbox"]
        if len(panes) != 2 or len(texts) != 1:
            raise SystemExit(
                "/battle_send no longer takes one textbox and outputs the two chatbots"
                " (#chatbot-a, #chatbot-b): update benchmarks/bench_battles.py"
            )
        trigger = dep["targets"][0][0] if dep.get("targets") else None
        return Endpoint(
            dep.get("id", index), trigger, len(inputs), texts[0], (panes[0], panes[1]), choice
        )
    raise SystemExit("the app has no /battle_send endpoint")


def apply_diff(value: Any, edits: list[Any]) -> Any:
    """Gradio's streaming diff (``gradio.utils.diff``), applied in place."""
    for action, path, new in edits:
        if not path:
            value = new if action == "replace" else value + new
            continue
        target = value
        for key in path[:-1]:
            target = target[key]
        last = path[-1]
        if action == "replace":
            target[last] = new
        elif action == "append":
            target[last] += new
        elif action == "add":
            if isinstance(target, list):
                target.insert(last, new)
            else:
                target[last] = new
        elif action == "delete":
            del target[last]
        else:
            raise ValueError(f"unknown diff action {action!r}")
    return value


def assistant_text(output: Any) -> str | None:
    """The text of the pane's last message if it is the assistant's."""
    messages = output.get("value") if isinstance(output, dict) else output
    if not messages or not isinstance(messages, list):
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return None
    content = last.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else None


async def app_battle(
    http: httpx.AsyncClient,
    endpoint: Endpoint,
    prompt: str,
    expected: str,
    deadline_s: float,
    run_t0: float,
    session: str,
) -> BattleResult:
    """One browser session sending one message, read from the queue's event stream."""
    result = BattleResult()
    outputs: list[Any] | None = None
    t0 = time.perf_counter()
    join = {
        "data": endpoint.data(prompt),
        "event_data": None,
        "fn_index": endpoint.fn_index,
        "trigger_id": endpoint.trigger_id,
        "session_hash": session,
    }

    def seen(data: list[Any], now: float) -> None:
        for side, index in enumerate(endpoint.panes):
            if result.first[side] is None and assistant_text(data[index]):
                result.first[side] = now - t0

    try:
        async with asyncio.timeout(deadline_s):
            response = await http.post("/gradio_api/queue/join", json=join)
            result.joined = time.perf_counter() - t0
            if response.status_code != 200:
                raise RuntimeError(f"join: HTTP {response.status_code} {response.text[:200]}")
            params = {"session_hash": session}
            async with http.stream("GET", "/gradio_api/queue/data", params=params) as stream:
                if stream.status_code != 200:
                    raise RuntimeError(f"queue/data: HTTP {stream.status_code}")
                result.opened = time.perf_counter() - t0
                async for line in stream.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    now = time.perf_counter()
                    if result.first_event is None:
                        result.first_event = now - t0
                    result.bytes += len(line)
                    message = _loads(line[5:])
                    kind = message.get("msg")
                    if kind == "process_starts":
                        result.started = now - t0
                    elif kind == "process_generating":
                        result.updates += 1
                        data = message["output"]["data"]
                        if outputs is None:
                            outputs = data
                        else:
                            for i in endpoint.panes:
                                outputs[i] = apply_diff(outputs[i], data[i])
                        seen(outputs, now)
                    elif kind == "process_completed":
                        if not message.get("success", True):
                            error = message.get("output", {}).get("error")
                            raise RuntimeError(f"process_completed: success=false: {error}")
                        outputs = message["output"]["data"]
                        seen(outputs, now)
                        result.ended, result.end_at = now - t0, now - run_t0
                    elif kind == "unexpected_error":
                        raise RuntimeError(f"unexpected_error: {message.get('message')}")
                    elif kind == "close_stream":
                        break
        if result.ended is None or outputs is None:
            raise RuntimeError("the event stream ended before process_completed")
        for side, index in enumerate(endpoint.panes):
            text = assistant_text(outputs[index]) or ""
            if text != expected:
                short = text[-120:].replace("\n", " ")
                raise RuntimeError(
                    f"pane {'AB'[side]}: unexpected text ({len(text)} chars): {short}"
                )
    except TimeoutError:
        result.error = f"timeout after {deadline_s:g} s"
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    if result.ended is None:
        now = time.perf_counter()
        result.ended, result.end_at = now - t0, now - run_t0
    return result


async def choose(http: httpx.AsyncClient, endpoint: Endpoint, session: str) -> None:
    """Click the data-sharing choice in ``session``, as a visitor does before typing."""
    assert endpoint.choice is not None
    fn_index, trigger = endpoint.choice
    join = {"data": [None], "fn_index": fn_index, "trigger_id": trigger, "session_hash": session}
    response = await http.post("/gradio_api/queue/join", json=join)
    if response.status_code != 200:
        raise SystemExit(f"consent join: HTTP {response.status_code} {response.text[:200]}")
    params = {"session_hash": session}
    async with http.stream("GET", "/gradio_api/queue/data", params=params) as stream:
        async for line in stream.aiter_lines():
            if not line.startswith("data:"):
                continue
            message = _loads(line[5:])
            if message.get("msg") == "process_completed":
                if not message.get("success", True):
                    raise SystemExit(f"consent: {message.get('output')}")
                return
    raise SystemExit("consent: the event stream ended before process_completed")


async def _after(delay_s: float, battle: Awaitable[BattleResult]) -> BattleResult:
    await asyncio.sleep(delay_s)
    return await battle


def start_delay(index: int, n: int, ramp_s: float) -> float:
    """Battle ``index`` of ``n`` starts this long after the first: evenly over the ramp."""
    return ramp_s * index / n


@contextlib.asynccontextmanager
async def clients(n: int, **options: Any) -> Any:
    """One HTTP client per battle, as each browser has its own connections.

    One shared client would make the benchmark pay for its own pool: httpcore scans every
    connection of a pool on each request and each response close, which at 200 connections cost
    the benchmark more CPU than the app's model clients took. The clients share one TLS context
    (each would build its own, about 10 ms) and are made before the clock starts.
    """
    tls = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(httpx.AsyncClient(verify=tls, **options))
            for _ in range(n)
        ]


async def run_server(
    base_url: str, n: int, tag: str, tokens: int, latency_ms: float, ramp_s: float
) -> tuple[list[BattleResult], float]:
    deadline = timeout_s(tokens, latency_ms)
    async with clients(n, timeout=httpx.Timeout(60.0)) as https:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(
                _after(
                    start_delay(i, n, ramp_s),
                    server_battle(http, base_url, prompt_for(tag, i), tokens, deadline, t0),
                )
                for i, http in enumerate(https)
            )
        )
    return list(results), max(r.end_at or 0.0 for r in results)


async def run_app(
    url: str, endpoint: Endpoint, n: int, tag: str, tokens: int, latency_ms: float, ramp_s: float
) -> tuple[list[BattleResult], float]:
    prompts = [prompt_for(tag, i) for i in range(n)]
    expected = [expected_text(p, tokens) for p in prompts]
    timeout = httpx.Timeout(60.0, read=None)  # the SSE stream is bounded by the battle deadline
    sessions = [uuid.uuid4().hex[:11] for _ in range(n)]
    async with clients(n, base_url=url, timeout=timeout) as https:
        if endpoint.choice is not None:
            pairs = zip(https, sessions, strict=True)
            await asyncio.gather(*(choose(http, endpoint, session) for http, session in pairs))
        t0 = time.perf_counter()
        deadline = timeout_s(tokens, latency_ms)
        results = await asyncio.gather(
            *(
                _after(start_delay(i, n, ramp_s), app_battle(http, endpoint, p, e, deadline, t0, s))
                for i, (http, p, e, s) in enumerate(
                    zip(https, prompts, expected, sessions, strict=True)
                )
            )
        )
    return list(results), max(r.end_at or 0.0 for r in results)


# -- report ---------------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:.0f}"


@dataclass
class Summary:
    n: int
    server_ttft_p50: float
    server_ttft_p95: float
    app_ttft_p50: float
    app_ttft_p95: float
    added_p50: float
    added_p95: float
    first_side_p50: float
    queue_p95: float
    wall_s: float
    server_wall_s: float
    ratio: float
    errors: int
    usage: Usage
    updates_per_battle: float
    kb_per_battle: float

    @property
    def goals_met(self) -> dict[str, bool]:
        return {
            f"wall <= {WALL_RATIO_GOAL}x ideal": self.ratio <= WALL_RATIO_GOAL,
            f"added TTFT p95 < {ADDED_TTFT_GOAL_MS:.0f} ms": self.added_p95 * 1000
            < ADDED_TTFT_GOAL_MS,
            "no errors": self.errors == 0,
        }


def summarise(row: Row, ideal_s: float, ramp_s: float) -> Summary:
    """``ideal_s`` is one unloaded battle; with a ramp, the last battle starts that much later."""
    ideal_s += start_delay(row.n - 1, row.n, ramp_s)
    ok = [r for r in row.app if r.error is None]
    server_ttft = [t for r in row.server if (t := r.ttft) is not None]
    app_ttft = [t for r in ok if (t := r.ttft) is not None]
    # The server's own TTFT at the same concurrency (its median) is taken off every battle.
    server_p50 = quantile(server_ttft, 0.5)
    added = [t - server_p50 for t in app_ttft]
    errors = sum(r.error is not None for r in row.app)
    return Summary(
        n=row.n,
        server_ttft_p50=server_p50,
        server_ttft_p95=quantile(server_ttft, 0.95),
        app_ttft_p50=quantile(app_ttft, 0.5),
        app_ttft_p95=quantile(app_ttft, 0.95),
        added_p50=quantile(added, 0.5),
        added_p95=quantile(added, 0.95),
        first_side_p50=quantile([t for r in ok if (t := r.first_side) is not None], 0.5),
        queue_p95=quantile([r.started for r in ok if r.started is not None], 0.95),
        wall_s=row.app_wall_s,
        server_wall_s=row.server_wall_s,
        ratio=row.app_wall_s / ideal_s,
        errors=errors,
        usage=row.usage,
        updates_per_battle=statistics.fmean(r.updates for r in row.app) if row.app else 0.0,
        kb_per_battle=statistics.fmean(r.bytes for r in row.app) / 1024 if row.app else 0.0,
    )


def print_tables(summaries: list[Summary], ideal_s: float, args: argparse.Namespace) -> None:
    print(
        f"\nBattles under load: {args.tokens} tokens per side at {args.latency_ms:g} ms per token,"
        f" ideal wall (one battle, server alone, median of {args.ideal_runs}) {ideal_s:.2f} s,"
        f" {os.cpu_count()} CPUs, load average {args.load_average}"
    )
    if args.ramp:
        print(
            f"Battles start evenly over {args.ramp:g} s; ratio = wall / (ideal + the last"
            " battle's start delay)"
        )
    else:
        print("All N battles start at once (a burst); ratio = wall / ideal")
    print("TTFT = request sent -> both panes show assistant text (server alone: both streams)")
    print("added = app TTFT - server-alone TTFT p50 at the same N; times in ms unless marked s\n")
    head = (
        f"{'N':>4} {'srv TTFT':>11} {'app TTFT':>11} {'added':>11} {'1st pane':>8}"
        f" {'queue':>6} {'srv wall':>8} {'app wall':>8} {'ratio':>6} {'err':>4}"
    )
    print(head)
    print(f"{'':>4} {'p50/p95':>11} {'p50/p95':>11} {'p50/p95':>11} {'p50':>8} {'p95':>6}")
    for s in summaries:
        print(
            f"{s.n:>4} {ms(s.server_ttft_p50) + '/' + ms(s.server_ttft_p95):>11}"
            f" {ms(s.app_ttft_p50) + '/' + ms(s.app_ttft_p95):>11}"
            f" {ms(s.added_p50) + '/' + ms(s.added_p95):>11} {ms(s.first_side_p50):>8}"
            f" {ms(s.queue_p95):>6} {s.server_wall_s:>7.2f}s {s.wall_s:>7.2f}s"
            f" {s.ratio:>5.2f}x {s.errors:>4}"
        )
    print(
        f"\n{'N':>4} {'app RSS MB':>18} {'threads':>7} {'app':>5} {'server':>6} {'bench':>5}"
        f" {'others':>6} {'app CPU':>8} {'updates':>8} {'KB':>5}  goals"
    )
    print(
        f"{'':>4} {'before/peak/after':>18} {'peak':>7} {'CPU %':>5} {'CPU %':>6} {'CPU %':>5}"
        f" {'CPU %':>6} {'ms/btl':>8} {'/battle':>8} {'/btl':>5}"
    )
    noisy = False
    for s in summaries:
        u = s.usage
        rss = f"{u.app_rss_before_mb:.0f}/{u.app_rss_peak_mb:.0f}/{u.app_rss_after_mb:.0f}"
        goals = "PASS" if all(s.goals_met.values()) else "FAIL"
        others = u.machine_cpu_s - u.app_cpu_s - u.server_cpu_s - u.bench_cpu_s
        noisy |= u.wall_s > 0 and others / u.wall_s > 0.2
        print(
            f"{s.n:>4} {rss:>18} {u.app_threads_peak:>7} {_pct(u.app_cpu_s, u.wall_s):>5}"
            f" {_pct(u.server_cpu_s, u.wall_s):>6} {_pct(u.bench_cpu_s, u.wall_s):>5}"
            f" {_pct(max(others, 0.0), u.wall_s):>6} {1000 * u.app_cpu_s / s.n:>8.0f}"
            f" {s.updates_per_battle:>8.1f}"
            f" {s.kb_per_battle:>5.0f}  {goals}"
        )
    print(
        f"(CPU % during the app phase, 100 = one core of {os.cpu_count()}; others = every other"
        " process on the machine; app CPU ms/btl = the app's CPU time per battle, the figure"
        " least moved by other load; app = the app process and its model worker)"
    )
    if noisy:
        print(
            "WARNING: other processes used over 20% of a core during a run: figures are"
            " pessimistic; rerun on a quiet machine."
        )
    for s in summaries:
        if s.n == GOAL_BATTLES:
            checks = ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in s.goals_met.items())
            print(f"\nGoal at N={GOAL_BATTLES}: {checks}")
            print(
                f"  wall {s.wall_s:.2f} s = {s.ratio:.2f}x ideal; added TTFT p95"
                f" {ms(s.added_p95)} ms; {s.errors} errors; app RSS peak"
                f" {s.usage.app_rss_peak_mb:.0f} MB"
            )


def _pct(cpu: float, wall: float) -> str:
    return f"{100 * cpu / wall:.0f}" if wall > 0 else "-"


def print_timeline(rows: list[Row]) -> None:
    """Where a battle's time goes, as the client sees it: p50/p95 of each step, in ms."""
    steps: list[tuple[str, Callable[[BattleResult], float | None]]] = [
        ("join answered", lambda r: r.joined),
        ("stream open", lambda r: r.opened),
        ("1st message", lambda r: r.first_event),
        ("process_starts", lambda r: r.started),
        ("1st pane text", lambda r: r.first_side),
        ("both panes", lambda r: r.ttft),
        ("completed", lambda r: r.ended),
    ]
    print("\nTimeline of an app battle from its join request, p50/p95 in ms:")
    print(f"{'step':>15}" + "".join(f"{f'N={row.n}':>13}" for row in rows))
    for name, get in steps:
        cells = []
        for row in rows:
            values = [v for r in row.app if r.error is None and (v := get(r)) is not None]
            cells.append(f"{ms(quantile(values, 0.5))}/{ms(quantile(values, 0.95))}")
        print(f"{name:>15}" + "".join(f"{cell:>13}" for cell in cells))


def print_errors(rows: list[Row]) -> None:
    for row in rows:
        for kind, results in (("app", row.app), ("server", row.server)):
            errors = [r.error for r in results if r.error]
            for error in sorted(set(errors))[:5]:
                print(f"  N={row.n} {kind}: {errors.count(error)}x {error}")


def print_store(data_dir: Path, tokens: int) -> None:
    """Per run, from the app's own store: replies, token counts, the app client's TTFT."""
    try:
        import duckdb

        with duckdb.connect(str(data_dir / "arena.duckdb"), read_only=True) as con:
            rows = con.execute(_STORE_SQL, [tokens]).fetchall()
    except Exception as exc:
        print(f"\n(store not read: {type(exc).__name__}: {exc})")
        return
    print("\nFrom the app's store (its model clients' view; read after the app stopped):")
    print(
        f"{'run':>8} {'replies':>7} {f'{tokens} tok+length':>15} {'errors':>6}"
        f" {'client TTFT p50/p95 ms':>22} {'reply s p50/max':>16}"
    )
    for run, replies, exact, errors, t50, t95, s50, smax in rows:
        print(
            f"{run:>8} {replies:>7} {exact:>15} {errors:>6} {f'{t50:.0f}/{t95:.0f}':>22}"
            f" {f'{s50 / 1000:.2f}/{smax / 1000:.2f}':>16}"
        )


_STORE_SQL = """
SELECT regexp_extract(u.content, '\\(run (\\w+) battle', 1) AS run,
       count(*),
       count(*) FILTER (WHERE a.tokens = ? AND a.finish_reason = 'length'),
       count(*) FILTER (WHERE a.error_kind IS NOT NULL),
       quantile_cont(a.ttft_ms, 0.5), quantile_cont(a.ttft_ms, 0.95),
       quantile_cont(a.total_ms, 0.5), max(a.total_ms)
FROM messages a JOIN messages u
  ON u.conversation_id = a.conversation_id AND u.turn = a.turn AND u.role = 'user'
WHERE a.role = 'assistant'
GROUP BY run ORDER BY min(a.created_at)
"""


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_battles.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Goals (N=100, 2 cores): wall <= 1.5x ideal, added TTFT p95 < 300 ms, no errors.",
    )
    parser.add_argument(
        "--battles", default="1,50,100", help="comma-separated N to run (default 1,50,100)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=30.0, help="demo server delay per token (default 30)"
    )
    parser.add_argument("--tokens", type=int, default=100, help="tokens per side (default 100)")
    parser.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        metavar="S",
        help="start the N battles evenly over S seconds instead of all at once (default 0: a"
        " burst); the ideal wall time grows by the last battle's delay",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 1,10 (about 25 s)")
    parser.add_argument(
        "--app-args",
        default="",
        help="extra flags for app.py, e.g. '--concurrency-limit 64' (one string)",
    )
    parser.add_argument(
        "--app",
        type=Path,
        default=ROOT / "app.py",
        help="the app script to run (default app.py; another one to compare a candidate change)",
    )
    parser.add_argument(
        "--consent",
        choices=("none", "share", "private"),
        default="none",
        help="the data-sharing choice each session clicks before its battle (default none: no"
        " choice, as an API client; a visitor's choice is written with their first battle)",
    )
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument(
        "--profile-app",
        metavar="PREFIX",
        help="run the app under cProfile (one PREFIX.<thread>.prof per thread; slows it down)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (logs, models file, store)"
    )
    args = parser.parse_args(argv)
    args.ideal_runs, args.pause = (1, 0.5) if args.quick else (3, 1.0)
    if args.quick:
        args.battles = "1,10"
    try:
        args.counts = [int(n) for n in args.battles.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--battles: expected numbers like 1,50,100, got {args.battles!r}")
    if not args.counts or min(args.counts) < 1 or args.tokens < 1:
        parser.error("--battles and --tokens must be positive")
    if args.latency_ms < 0 or args.ramp < 0:
        parser.error("--latency-ms and --ramp must not be negative")
    return args


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to the benchmark cleans up like Ctrl-C does."""

    def handler(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def bench(args: argparse.Namespace, work: Path, procs: Processes) -> None:
    args.load_average = load_average()
    server, base_url = start_demo_server(procs, work, args.latency_ms)
    print(f"demo server pid {server.pid}: {base_url} ({args.latency_ms:g} ms/token)")
    models = work / "models.yaml"
    write_models(models, base_url, args.tokens)
    port = free_port()
    t = time.perf_counter()
    app = start_app(procs, work, models, port, args)
    url = f"http://127.0.0.1:{port}"
    print(f"app pid {app.pid}: {url} (ready in {time.perf_counter() - t:.1f} s)")
    endpoint = discover(url, args.consent)

    ideal_runs = []
    for i in range(args.ideal_runs):
        results, wall = await run_server(
            base_url, 1, f"ideal{i}", args.tokens, args.latency_ms, 0.0
        )
        if results[0].error:
            raise SystemExit(f"the demo server fails a single battle: {results[0].error}")
        ideal_runs.append(wall)
    ideal = statistics.median(ideal_runs)
    warm, _ = await run_app(url, endpoint, 2, "warmup", args.tokens, args.latency_ms, 0.0)
    if any(r.error for r in warm):
        raise SystemExit(f"warm-up battle failed: {[r.error for r in warm if r.error]}")
    print(f"ideal {ideal:.3f} s; warm-up done; running N = {args.counts}", flush=True)

    rows: list[Row] = []
    for n in args.counts:
        await asyncio.sleep(args.pause)  # let the previous run's connections close
        server_results, server_wall = await run_server(
            base_url, n, f"srv{n}", args.tokens, args.latency_ms, args.ramp
        )
        await asyncio.sleep(args.pause)
        async with measured(app.pid, server.pid) as usage:
            app_results, app_wall = await run_app(
                url, endpoint, n, f"n{n}", args.tokens, args.latency_ms, args.ramp
            )
        row = Row(n, server_results, server_wall, app_results, app_wall, usage)
        rows.append(row)
        s = summarise(row, ideal, args.ramp)
        print(
            f"  N={n}: app wall {app_wall:.2f} s ({s.ratio:.2f}x), TTFT added p95"
            f" {ms(s.added_p95)} ms, errors {s.errors}, RSS peak {usage.app_rss_peak_mb:.0f} MB",
            flush=True,
        )

    summaries = [summarise(row, ideal, args.ramp) for row in rows]
    procs.stop(app)  # before reading its store, which it holds open
    print_tables(summaries, ideal, args)
    print_timeline(rows)
    print_errors(rows)
    print_store(work / "data", args.tokens)
    if args.json:
        payload = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "ideal_s": ideal,
            "summaries": [asdict(s) for s in summaries],
            "rows": [asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        print(f"\nwrote {args.json}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="bench_battles_"))
    try:
        with sigterm_as_interrupt():
            asyncio.run(bench(args, work, procs))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the app and the demo server", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
