"""Model streams in a process of their own, so that token intake leaves the UI's event loop alone.

huggingface_hub parses every streamed token into dataclasses, about 100-150 µs of CPU each here.
100 concurrent battles bring some 6,600 tokens a second, which on Gradio's event loop took a third
of its time and delayed every update of every visitor. `ModelWorker` runs the `ModelClient`s in a
child process (``python -m arena.model_worker``) that sends the replies back coalesced: one frame
per tick (`TICK_S`) with what every stream received since the last one. `RemoteClient` is what the
services stream from: the same `Reply` updates as `ModelClient.stream`, only fewer of them.

The processes talk over a socket pair in length-prefixed pickles (both ends are this module). If
the worker dies, every reply in flight ends with a connection error and a new worker starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from arena.config import GenerationParameters, ModelEntry
from arena.replies import ErrorKind, Message, Reply, ReplyError

log = logging.getLogger(__name__)

TICK_S = 0.025
"""How often the worker sends what arrived: half the UI's update interval, so coalescing here adds
at most one tick to the time to first token."""

RESTART_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Pauses between attempts to start a new worker after one died, the last one repeated: replies
fail at once with a connection error until one starts."""

_HEADER = struct.Struct("!I")
_START_TIMEOUT_S = 60.0
_ROOT = Path(__file__).resolve().parent.parent

_LOST = ReplyError(
    ErrorKind.CONNECTION,
    "The arena's connection to its models was lost while answering. Try again in a moment.",
)


class WorkerError(Exception):
    """The model worker could not start: its message says why (e.g. a model's bad chat template)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """What the worker needs to build one model's client."""

    entry: ModelEntry
    base_url: str
    headers: dict[str, str] | None = None
    """Sent with every request, as `ModelClient`'s ``headers``."""


@dataclasses.dataclass(frozen=True)
class _Update:
    """What one stream received since the last tick: new text, and the reply's other fields."""

    stream_id: int
    text: str
    tokens: int
    ttft_s: float | None
    total_s: float | None
    finish_reason: str | None
    error: ReplyError | None
    finished: bool
    failure: str | None = None
    """The stream raised (a caller bug, e.g. a chat template refusing the conversation)."""


def _frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


class _Frames:
    """Splits a byte stream into the messages it carries."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            messages.append(pickle.loads(self._buffer[_HEADER.size : end]))
            del self._buffer[:end]
        return messages


# -- the app's side ---------------------------------------------------------------------------


class _Stream:
    """One reply in flight, owned by the event loop of the coroutine that streams it."""

    def __init__(self, stream_id: int, model: str) -> None:
        self.id = stream_id
        self.reply = Reply(model=model)
        self.failure: str | None = None
        self.loop = asyncio.get_running_loop()
        self.changed = asyncio.Event()

    def apply(self, update: _Update) -> None:
        reply = self.reply
        reply.text += update.text
        reply.tokens, reply.ttft_s, reply.total_s = update.tokens, update.ttft_s, update.total_s
        reply.finish_reason, reply.error = update.finish_reason, update.error
        reply.finished = update.finished
        self.failure = update.failure
        self.changed.set()

    def lose(self) -> None:
        if not self.reply.finished:
            self.reply.error, self.reply.finished = _LOST, True
            self.changed.set()


def _apply_all(pairs: list[tuple[_Stream, _Update | None]]) -> None:
    for stream, update in pairs:
        if update is None:
            stream.lose()
        else:
            stream.apply(update)


def _hand_over(pairs: list[tuple[_Stream, _Update | None]]) -> None:
    """From the reader thread: apply each update (None: the stream is lost) in its stream's
    loop, one callback per loop."""
    per_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Stream, _Update | None]]] = {}
    for stream, update in pairs:
        per_loop.setdefault(stream.loop, []).append((stream, update))
    for loop, its_pairs in per_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody reads
            loop.call_soon_threadsafe(_apply_all, its_pairs)


class ModelWorker:
    """The child process that streams from the models, and its connection.

    ``start()`` launches it and waits until it has built every client (a model it cannot build is
    a `WorkerError`); ``client(name)`` is a `RemoteClient` for one model; ``close()`` stops it.
    Usable as a context manager.
    """

    def __init__(
        self,
        targets: Mapping[str, Target],
        *,
        tick_s: float = TICK_S,
        restart_delays_s: Sequence[float] = RESTART_DELAYS_S,
    ) -> None:
        self._targets = dict(targets)
        self._tick_s = tick_s
        self._restart_delays_s = tuple(restart_delays_s)
        self._closed = threading.Event()
        """Set by close(): no new worker from then on, and a restart's pause ends."""
        self._lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count()
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ModelWorker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The worker process's id while it runs."""
        return self._process.pid if self._process is not None else None

    def client(self, name: str) -> RemoteClient:
        return RemoteClient(self, self._targets[name].entry)

    def start(self) -> None:
        """Launch the worker and wait until it is ready; `WorkerError` if it cannot be."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "arena.model_worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                # Not in the terminal's process group: a Ctrl-C stops the app, whose close()
                # stops the worker; the worker also exits when the app's end of the socket closes.
                start_new_session=True,
            )
        finally:
            theirs.close()
        try:
            ours.sendall(_frame((self._targets, self._tick_s)))
            answer = self._handshake(ours)
        except BaseException:
            ours.close()
            _stop(process)
            raise
        if answer != "ready":
            ours.close()
            _stop(process)
            raise WorkerError(answer)
        with self._lock:
            closed = self._closed.is_set()
            if not closed:
                self._sock, self._process = ours, process
        if closed:  # close() ran while this one started (a restart): nobody needs it
            ours.close()
            _stop(process)
            return
        threading.Thread(
            target=self._read, args=(ours, process), name="model-worker-reader", daemon=True
        ).start()

    @staticmethod
    def _handshake(sock: socket.socket) -> str:
        """The worker's first message: "ready", or why it cannot serve."""
        sock.settimeout(_START_TIMEOUT_S)
        frames = _Frames()
        try:
            while True:
                data = sock.recv(1 << 16)
                if not data:
                    return "the model worker exited while starting (see the log above)"
                messages = frames.feed(data)
                if messages:
                    return str(messages[0])
        except TimeoutError:
            return f"the model worker did not start within {_START_TIMEOUT_S:g} s"
        finally:
            sock.settimeout(None)

    def close(self) -> None:
        """Stop the worker; replies still in flight end with a connection error."""
        with self._lock:
            self._closed.set()
            sock, process = self._sock, self._process
            self._sock = self._process = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the worker sees the end and exits
            sock.close()
        if process is not None:
            _stop(process)

    def _open(self, model: str, messages: list[Message], parameters: Any) -> _Stream:
        stream = _Stream(next(self._ids), model)
        with self._lock:
            self._streams[stream.id] = stream
            sent = self._send(("stream", stream.id, model, messages, parameters))
        if not sent:
            stream.lose()
        return stream

    def _forget(self, stream: _Stream) -> None:
        """The consumer is done with ``stream``: stop the worker's request if it still runs."""
        with self._lock:
            self._streams.pop(stream.id, None)
            if not stream.reply.finished:
                self._send(("cancel", stream.id))

    def _send(self, message: object) -> bool:
        """Under the lock: send to the worker; False if there is none."""
        if self._sock is None:
            return False
        try:
            self._sock.sendall(_frame(message))
        except OSError:
            return False
        return True

    def _read(self, sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
        """Reader thread: hand each tick's updates to the loops that stream them."""
        frames = _Frames()
        with contextlib.suppress(OSError):
            while data := sock.recv(1 << 16):
                for updates in frames.feed(data):
                    self._dispatch(updates)
        self._lost(sock, process)

    def _dispatch(self, updates: list[_Update]) -> None:
        with self._lock:
            pairs = [
                (stream, update)
                for update in updates
                if (stream := self._streams.get(update.stream_id)) is not None
            ]
        _hand_over(pairs)

    def _lost(self, sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
        """The connection ended: fail what was in flight; unless closing, start a new worker."""
        with self._lock:
            if self._sock is sock:
                self._sock = self._process = None
            lost, closing = [(s, None) for s in self._streams.values()], self._closed.is_set()
        _hand_over(lost)
        _stop(process)
        if closing:
            return
        log.error("the model worker stopped (exit code %s); starting a new one", process.poll())
        self._restart()

    def _restart(self) -> None:
        """Start a new worker, retrying after each pause of `RESTART_DELAYS_S` (the last one
        repeated) until one starts or `close()` is called."""
        for failures in itertools.count():
            try:
                self.start()
            except (WorkerError, OSError):
                delays = self._restart_delays_s
                delay = delays[min(failures, len(delays) - 1)]
                log.exception(
                    "could not start a new model worker (attempt %d); replies fail until one "
                    "starts; trying again in %g s",
                    failures + 1,
                    delay,
                )
                if self._closed.wait(delay):
                    return
            else:
                if failures:
                    log.info("a new model worker started, after %d failed attempts", failures)
                return


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    if process.poll() is None:
        process.kill()
        process.wait()


class RemoteClient:
    """Streams one model's replies through the worker; a `arena.service.StreamingClient`."""

    def __init__(self, worker: ModelWorker, entry: ModelEntry) -> None:
        self._worker = worker
        self.entry = entry

    async def stream(
        self, messages: Sequence[Message], parameters: GenerationParameters | None = None
    ) -> AsyncGenerator[Reply, None]:
        """Like `arena.clients.ModelClient.stream`: the same ``Reply`` after each tick that
        brought something, the last one with ``finished=True``; endpoint failures end it with
        ``reply.error``, and a lost worker with a connection error. Leaving early (``aclose()``,
        cancellation) stops the request."""
        stream = self._worker._open(self.entry.name, list(messages), parameters)
        try:
            while True:
                await stream.changed.wait()
                stream.changed.clear()
                if stream.failure is not None:
                    raise RuntimeError(stream.failure)
                yield stream.reply
                if stream.reply.finished:
                    return
        finally:
            self._worker._forget(stream)


# -- the worker's side ------------------------------------------------------------------------


class _Server:
    """The worker: one task per reply, and a flush of every stream's news each tick."""

    def __init__(self, writer: asyncio.StreamWriter, clients: Mapping[str, Any], tick_s: float):
        self._writer = writer
        self._clients = clients
        self._tick_s = tick_s
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._replies: dict[int, Reply] = {}
        self._sent: dict[int, int] = {}
        self._failures: dict[int, str] = {}
        self._dirty: set[int] = set()

    def start(self, stream_id: int, model: str, messages: list[Message], parameters: Any) -> None:
        task = asyncio.create_task(self._pump(stream_id, model, messages, parameters))
        self._tasks[stream_id] = task

    def cancel(self, stream_id: int) -> None:
        task = self._tasks.pop(stream_id, None)
        if task is not None:
            task.cancel()
        self._forget(stream_id)
        self._dirty.discard(stream_id)

    def cancel_all(self) -> None:
        for stream_id in list(self._tasks):
            self.cancel(stream_id)

    async def _pump(
        self, stream_id: int, model: str, messages: list[Message], parameters: Any
    ) -> None:
        try:
            replies = self._clients[model].stream(messages, parameters)
            async with contextlib.aclosing(replies):
                async for reply in replies:
                    self._replies[stream_id] = reply
                    self._dirty.add(stream_id)
        except Exception as exc:
            self._failures[stream_id] = f"{type(exc).__name__}: {exc}"
            self._dirty.add(stream_id)
        finally:
            self._tasks.pop(stream_id, None)

    def _forget(self, stream_id: int) -> None:
        self._replies.pop(stream_id, None)
        self._sent.pop(stream_id, None)
        self._failures.pop(stream_id, None)

    async def flush_forever(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._tick_s)
                dirty, self._dirty = self._dirty, set()
                updates = [self._update(stream_id) for stream_id in dirty]
                if updates:
                    self._writer.write(_frame(updates))
                    await self._writer.drain()
        except Exception:
            # Without its flush the worker is useless: hang up, and the app starts a new one.
            log.exception("the model worker cannot send replies; stopping")
            self._writer.close()

    def _update(self, stream_id: int) -> _Update:
        reply = self._replies.get(stream_id) or Reply(model="")
        sent = self._sent.get(stream_id, 0)
        self._sent[stream_id] = len(reply.text)
        failure = self._failures.get(stream_id)
        update = _Update(
            stream_id,
            reply.text[sent:],
            reply.tokens,
            reply.ttft_s,
            reply.total_s,
            reply.finish_reason,
            reply.error,
            reply.finished,
            failure,
        )
        if reply.finished or failure is not None:
            self._forget(stream_id)
        return update


async def _serve(sock: socket.socket) -> None:
    from arena.clients import ModelClient  # the worker's own import: the app needs none of it

    reader, writer = await asyncio.open_unix_connection(sock=sock)
    frames = _Frames()
    config: list[Any] = []
    while not config:
        data = await reader.read(1 << 16)
        if not data:
            return
        config = frames.feed(data)
    targets, tick_s = config[0]
    try:
        clients = {
            name: ModelClient(t.entry, t.base_url, headers=t.headers) for name, t in targets.items()
        }
    except Exception as exc:
        writer.write(_frame(f"cannot build the model clients: {exc}"))
        await writer.drain()
        return
    writer.write(_frame("ready"))
    server = _Server(writer, clients, tick_s)
    flusher = asyncio.create_task(server.flush_forever())
    try:
        pending = config[1:]
        while True:
            for kind, stream_id, *args in pending:
                if kind == "stream":
                    server.start(stream_id, *args)
                else:
                    server.cancel(stream_id)
            data = await reader.read(1 << 16)
            if not data:  # the app closed the connection, or died
                return
            pending = frames.feed(data)
    finally:
        server.cancel_all()
        flusher.cancel()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (requirements.txt installs it where it builds),
    as uvicorn picks for the app and the demo server."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m arena.model_worker FD``: serve the app on the socket FD it passed down."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx2 logs every request at INFO: a line per reply in the app's log, which buries what
    # matters; a failed reply is recorded with its error, and logged, by the services.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    sock = socket.socket(fileno=int(args[0]))
    with (
        contextlib.suppress(KeyboardInterrupt, ConnectionError),
        asyncio.Runner(loop_factory=_loop_factory()) as runner,
    ):
        runner.run(_serve(sock))
    return 0


if __name__ == "__main__":
    # Through the imported module, so that what is pickled names arena.model_worker, not __main__.
    from arena.model_worker import main as _main

    sys.exit(_main())
