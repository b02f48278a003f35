"""The demo server: TGI's routes for every persona, fault injection, and a threaded runner."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from arena.demo_server import protocol
from arena.demo_server.faults import Faults, StreamFault
from arena.demo_server.personas import PERSONAS, render_chatml
from arena.demo_server.protocol import (
    ChatRequest,
    ChatStream,
    Dialect,
    GenerateRequest,
    GenerateStream,
    Job,
    TGIError,
    parse_body,
)

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_KEEP_ALIVE = ": keep-alive\n\n"
_MALFORMED_EVENT = 'data: {"index": 1, "token": {"id"\n\n'
_MALFORMED_BODY = b'{"generated_text": "'
_DISCONNECT_POLL_S = 0.1
_STATUS_ERROR_TYPES = {
    422: "validation",
    424: "generation",
    429: "overloaded",
    500: "incomplete_generation",
    503: "unhealthy",
}


def _check_personas(faults: Mapping[str, Faults]) -> None:
    unknown = sorted(set(faults) - set(PERSONAS))
    if unknown:
        raise ValueError(f"faults name unknown personas {unknown}; known: {', '.join(PERSONAS)}")


@dataclass
class _PersonaState:
    name: str
    faults: Faults
    active: int = 0
    """Requests being generated, for the ``max_concurrent_requests`` limit."""


class _DemoApp:
    """Route handlers and shared state of one server."""

    def __init__(
        self,
        token_latency_ms: float,
        faults: Mapping[str, Faults],
        max_concurrent_requests: int,
        keepalive_interval_s: float,
    ) -> None:
        _check_personas(faults)
        self.personas = {name: _PersonaState(name, faults.get(name, Faults())) for name in PERSONAS}
        self.token_latency_ms = token_latency_ms
        self.max_concurrent_requests = max_concurrent_requests
        self.keepalive_interval_s = keepalive_interval_s
        self.shutdown = asyncio.Event()
        """Set when the server stops: stalled and running streams end early."""

    def install(self, app: FastAPI) -> None:
        routes: list[tuple[str, Callable[..., Any], str]] = [
            ("/{persona}/info", self.info, "GET"),
            ("/{persona}/health", self.health, "GET"),
            ("/{persona}/v1/models", self.models, "GET"),
            ("/{persona}/generate", self.generate, "POST"),
            ("/{persona}/generate_stream", self.generate_stream, "POST"),
            ("/{persona}/v1/chat/completions", self.chat_completions, "POST"),
            # huggingface_hub's text_generation posts to the base URL itself, without a slash.
            ("/{persona}", self.compat_generate, "POST"),
            ("/{persona}/", self.compat_generate, "POST"),
        ]
        for path, endpoint, method in routes:
            app.add_api_route(path, endpoint, methods=[method])

        async def tgi_error(_request: Request, exc: Exception) -> Response:
            assert isinstance(exc, TGIError)
            return JSONResponse(exc.body(), status_code=exc.status)

        app.add_exception_handler(TGIError, tgi_error)

    # -- routes --------------------------------------------------------------------------------

    async def info(self, request: Request, persona: str) -> Response:
        state, _ = self._resolve(request, persona)
        return JSONResponse(protocol.info(state.name, self.max_concurrent_requests))

    async def health(self, request: Request, persona: str) -> Response:
        _, faults = self._resolve(request, persona)
        if faults.unhealthy:
            raise TGIError(503, "unhealthy", "healthcheck")
        return Response(status_code=200)

    async def models(self, request: Request, persona: str) -> Response:
        state, _ = self._resolve(request, persona)
        return JSONResponse(protocol.models(state.name))

    async def generate(self, request: Request, persona: str) -> Response:
        state, faults = self._resolve(request, persona)
        body = parse_body(await request.body(), GenerateRequest)
        return await self._native(request, state, faults, body, stream=False, compat=False)

    async def generate_stream(self, request: Request, persona: str) -> Response:
        state, faults = self._resolve(request, persona)
        body = parse_body(await request.body(), GenerateRequest)
        return await self._native(request, state, faults, body, stream=True, compat=False)

    async def compat_generate(self, request: Request, persona: str) -> Response:
        state, faults = self._resolve(request, persona)
        body = parse_body(await request.body(), GenerateRequest)
        return await self._native(request, state, faults, body, stream=body.stream, compat=True)

    async def chat_completions(self, request: Request, persona: str) -> Response:
        state, faults = self._resolve(request, persona)
        body = parse_body(await request.body(), ChatRequest)
        prompt = render_chatml([(message.role, message.text) for message in body.messages])
        params = body.generate_parameters()
        logprobs = bool(body.logprobs)

        def plan() -> Job:
            return protocol.plan(state.name, params, prompt, body.stream)

        if body.stream:
            dialect = ChatStream(state.name, logprobs, body.include_usage)
            return self._stream(state, faults, plan, dialect)

        def render(job: Job) -> dict[str, Any]:
            return protocol.chat_completion(state.name, job, logprobs)

        return await self._respond(request, state, faults, plan, render)

    # -- shared machinery ----------------------------------------------------------------------

    def _resolve(self, request: Request, persona: str) -> tuple[_PersonaState, Faults]:
        """The persona's state and the faults this request gets; raises the pre-stream errors."""
        state = self.personas.get(persona)
        if state is None:
            known = ", ".join(PERSONAS)
            raise TGIError(404, f"unknown persona {persona!r}; known: {known}", "not_found")
        try:
            faults = state.faults.with_headers(request.headers)
        except ValueError as exc:
            raise TGIError(422, str(exc), "validation") from None
        if faults.http_status is not None:
            error_type = _STATUS_ERROR_TYPES.get(faults.http_status, "http_error")
            raise TGIError(faults.http_status, f"demo fault: HTTP {faults.http_status}", error_type)
        return state, faults

    async def _native(
        self,
        request: Request,
        state: _PersonaState,
        faults: Faults,
        body: GenerateRequest,
        *,
        stream: bool,
        compat: bool,
    ) -> Response:
        params = body.parameters
        # On "/" TGI defaults return_full_text to true for text-generation models, so the final
        # generated_text there starts with the prompt unless the client says otherwise.
        full_text = compat if params.return_full_text is None else params.return_full_text
        prefix = body.inputs if full_text else ""

        def plan() -> Job:
            return protocol.plan(state.name, params, body.inputs, stream)

        if stream:
            return self._stream(state, faults, plan, GenerateStream(params.details, prefix))

        def render(job: Job) -> Any:
            response = protocol.generate_response(job, params, prefix)
            return [response] if compat else response  # "/" answers a one-element list

        return await self._respond(request, state, faults, plan, render)

    def _admit(self, state: _PersonaState, faults: Faults) -> None:
        """Raise TGI's overload error if this request may not start generating."""
        if faults.overload or state.active >= self.max_concurrent_requests:
            raise protocol.overloaded()

    def _latency_s(self, faults: Faults) -> float:
        latency_ms = faults.token_latency_ms
        return (self.token_latency_ms if latency_ms is None else latency_ms) / 1000

    async def _respond(
        self,
        request: Request,
        state: _PersonaState,
        faults: Faults,
        plan: Callable[[], Job],
        render: Callable[[Job], Any],
    ) -> Response:
        """A non-streaming answer: the whole generation's latency, then its body or its fault."""
        self._admit(state, faults)
        job = plan()
        state.active += 1
        try:
            fault = faults.first_stream_fault(len(job.generation.tokens))
            sent = len(job.generation.tokens) if fault is None else fault[1]
            await asyncio.sleep(self._latency_s(faults) * sent)
            if fault is None:
                return JSONResponse(render(job))
            kind = fault[0]
            if kind is StreamFault.ERROR:
                raise protocol.generation_error(sent)
            if kind is StreamFault.STALL:
                await self._hang(request)
            if kind in (StreamFault.STALL, StreamFault.TRUNCATE):
                raise protocol.incomplete()
            return Response(_MALFORMED_BODY, media_type="application/json")
        finally:
            state.active -= 1

    def _stream(
        self,
        state: _PersonaState,
        faults: Faults,
        plan: Callable[[], Job],
        dialect: Dialect,
    ) -> StreamingResponse:
        """An HTTP 200 event stream; as in TGI, overload and validation errors are events in it."""

        async def events() -> AsyncIterator[str]:
            try:
                self._admit(state, faults)
                job = plan()
            except TGIError as error:
                yield dialect.error(error)
                return
            state.active += 1
            try:
                async for event in self._token_events(job, dialect, faults):
                    yield event
            finally:
                state.active -= 1

        return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)

    async def _token_events(self, job: Job, dialect: Dialect, faults: Faults) -> AsyncIterator[str]:
        tokens = job.generation.tokens
        fault = faults.first_stream_fault(len(tokens))
        latency_s = self._latency_s(faults)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index in range(len(tokens)):
            if fault is not None and fault[1] == index:
                match fault[0]:
                    case StreamFault.ERROR:
                        yield dialect.error(protocol.generation_error(index))
                        return
                    case StreamFault.STALL:
                        async for comment in self._stall():
                            yield comment
                        return
                    case StreamFault.TRUNCATE:
                        return
                    case StreamFault.MALFORMED:
                        yield _MALFORMED_EVENT
            if latency_s:
                # An absolute schedule: event-loop delays under load must not add up per token.
                await asyncio.sleep(max(0.0, started + (index + 1) * latency_s - loop.time()))
            if self.shutdown.is_set():
                return
            yield dialect.token(job, index)
        yield dialect.done(job)

    async def _stall(self) -> AsyncIterator[str]:
        """Keep-alive comments only, until the client leaves (the task is cancelled) or shutdown."""
        while True:
            try:
                await asyncio.wait_for(self.shutdown.wait(), self.keepalive_interval_s)
            except TimeoutError:
                yield _KEEP_ALIVE
            else:
                return

    async def _hang(self, request: Request) -> None:
        """Wait for the client to disconnect or the server to stop, without answering."""
        while not await request.is_disconnected():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.shutdown.wait(), _DISCONNECT_POLL_S)
                return


def create_app(
    *,
    token_latency_ms: float = 0.0,
    faults: Mapping[str, Faults] | None = None,
    max_concurrent_requests: int = 1024,
    keepalive_interval_s: float = 15.0,
) -> FastAPI:
    """The ASGI app serving every persona under ``/{persona}/``.

    ``app.state.demo.shutdown`` (an ``asyncio.Event``) ends stalled and running streams early.
    """
    demo = _DemoApp(token_latency_ms, faults or {}, max_concurrent_requests, keepalive_interval_s)
    app = FastAPI(title="Open Feedback Arena demo TGI server", docs_url=None, redoc_url=None)
    demo.install(app)
    app.state.demo = demo
    return app


class DemoServer:
    """Runs the demo app with uvicorn in a background thread, on its own event loop.

    Use as a context manager, or call ``start()`` and ``stop()``. ``port=0`` picks a free port.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token_latency_ms: float = 0.0,
        faults: Mapping[str, Faults] | None = None,
        *,
        max_concurrent_requests: int = 1024,
        keepalive_interval_s: float = 15.0,
        log_level: str = "warning",
    ) -> None:
        self.host = host
        self.port = port
        self._app_options: dict[str, Any] = {
            "token_latency_ms": token_latency_ms,
            "faults": dict(faults or {}),
            "max_concurrent_requests": max_concurrent_requests,
            "keepalive_interval_s": keepalive_interval_s,
        }
        _check_personas(self._app_options["faults"])
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._demo: _DemoApp | None = None

    @property
    def url(self) -> str:
        """Root URL; the port is the real one once started."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def base_url(self, persona: str) -> str:
        """The endpoint base URL of one persona (what ``builtin:<persona>`` resolves to)."""
        if persona not in PERSONAS:
            raise ValueError(f"unknown persona {persona!r}; known: {', '.join(PERSONAS)}")
        return f"{self.url}/{persona}"

    def start(self) -> DemoServer:
        """Bind, serve in a thread, and return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the demo server is already running")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio only disables Nagle's algorithm (TCP_NODELAY) on
        # sockets that say so, and without it every response waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        app = create_app(**self._app_options)
        config = uvicorn.Config(app, log_level=self._log_level, access_log=False, lifespan="off")
        self._demo, self._socket, self._server = app.state.demo, sock, uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"demo-tgi-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the demo server did not start on {self.url}")
            time.sleep(0.005)
        return self

    def _run(self) -> None:
        async def serve() -> None:
            assert self._server is not None and self._socket is not None
            self._loop = asyncio.get_running_loop()
            await self._server.serve(sockets=[self._socket])

        # The loop uvicorn would pick for itself: uvloop when installed.
        assert self._server is not None
        with asyncio.Runner(loop_factory=self._server.config.get_loop_factory()) as runner:
            runner.run(serve())

    def stop(self, timeout: float = 5.0) -> None:
        """Shut down: end open streams, close the port, join the thread. Idempotent."""
        if self._thread is None or self._server is None:
            return
        if self._loop is not None and self._demo is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                self._loop.call_soon_threadsafe(self._demo.shutdown.set)
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True  # stop waiting for clients that keep connections open
            self._thread.join()
        if self._socket is not None:
            self._socket.close()
        self._thread = self._server = self._socket = self._loop = self._demo = None

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
