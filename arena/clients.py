"""Streaming model client: one reply from one model endpoint, as a stream of ``Reply`` updates.

Both protocols of ``models.yaml`` go through ``huggingface_hub.AsyncInferenceClient``, the
project's TGI/OpenAI client (the ``text-generation`` package is frozen and cannot install beside
Gradio 6): ``text_generation(stream=True, details=True)`` for ``protocol: tgi``, with the prompt
rendered here by the entry's Jinja chat template (ChatML by default) and posted to the base URL
itself, TGI's compat route; ``chat_completion(stream=True)`` for ``protocol: openai``. Every
endpoint failure ends the stream with a ``ReplyError`` whose message a user can read; nothing is
raised for them.

The library's quirks (huggingface_hub 2.4), and how they are handled:

- A streamed response stays in the client's ``exit_stack`` until ``close()``: one client per
  reply, used as ``async with``, so the connection closes when the reply ends, fails or is
  abandoned (``aclose()``, cancellation). Each client makes an ``httpx2.AsyncClient`` with a new
  TLS context (~20 ms); ``_new_http_client``, installed as the library's factory, shares one
  (~0.1 ms).
- It reads lines, not events: a stream cut before its final event ends like a success, and an
  unterminated last line is parsed as if complete. The final event is checked here (TGI:
  ``generated_text``; chat: a finish reason); ``_EventStream`` fails a body that ends inside an
  event or, for chat, without ``[DONE]``, and escapes U+0085/U+2028/U+2029, which JSON allows raw
  (TGI sends them so) but ``str.splitlines`` takes for line ends, cutting an event in two.
- Missing fields parse as ``None``; other shapes raise ``JSONDecodeError``, ``AttributeError`` or
  ``ValueError``. Fields are checked as JSON, and any of these is MALFORMED.
- Error events raise ``TextGenerationError`` subclasses; chat's ``{"message",
  "http_status_code"}`` becomes an ``UnknownError`` whose argument is that dict, read back here.
- HTTP errors raise ``HfHubHTTPError``, or a ``TextGenerationError`` it caused; the library reads
  an error body only when it has a Content-Length, so the response hook reads it (bounded).
- Connection refused and DNS failure are both ``ConnectError``: a ``socket.gaierror`` in the
  cause chain tells DNS.
- With no token it sends the machine's own (``HF_TOKEN``: the Space's Hub write token) to any
  endpoint. It gets the placeholder ``_NO_TOKEN``, so it never looks the machine's up, and the
  header it builds is replaced by the entry's token or dropped.
- Its first request fetches a registry from the Hub, blocking, for its user agent: done once
  when clients are built (``_warm_up``), not inside the event loop.
- Keep-alive comments reset a read timeout, so the library gets none: the stall and total limits
  are asyncio deadlines around each wait for an event, never across a ``yield`` (a timeout scope
  held while the consumer runs would cancel the consumer); the stall clock restarts when the
  consumer hands control back.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from datetime import datetime
from typing import Any, NoReturn, TypeVar, cast

import httpx2
from huggingface_hub import AsyncInferenceClient, set_async_client_factory
from huggingface_hub.errors import HfHubHTTPError, OverloadedError, TextGenerationError
from huggingface_hub.utils import build_hf_headers
from jinja2 import Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from arena.config import GenerationParameters, ModelEntry, Protocol
from arena.replies import ErrorKind, Message, Reply, ReplyError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Prompt format of ``protocol: tgi`` entries that have no ``chat_template``."""

_SSE = "text/event-stream"
_NO_TOKEN = "unused"
"""The library's token when the entry has none: a non-empty one stops it from resolving the
machine's (``get_token()``, which may even refresh an OAuth token over the network); the header it
builds from this one is never sent."""

_MAX_ERROR_BODY = 64 * 1024
_MAX_EVENT = 1024 * 1024
_MAX_DETAIL = 200

_T = TypeVar("_T")
_E = TypeVar("_E", bound=BaseException)


class _Failure(Exception):
    """Ends a stream with ``error``; never escapes ``ModelClient.stream``."""

    def __init__(self, error: ReplyError) -> None:
        super().__init__(error.message)
        self.error = error


class ModelClient:
    """Streams replies of one model entry from its server.

    ``base_url`` is given apart from ``entry.endpoint`` because ``builtin:`` endpoints resolve to
    the built-in server's URL; ``headers`` go with every request. Nothing is pooled: each reply
    opens (and closes) its own connection; ``aclose()`` (or ``async with``) only marks the client
    as no longer usable.
    """

    def __init__(
        self, entry: ModelEntry, base_url: str, *, headers: dict[str, str] | None = None
    ) -> None:
        self.entry = entry
        base = base_url.rstrip("/")
        self._template: Template | None = None
        if entry.protocol is Protocol.TGI:
            self._template = _compile_template(entry)
            self._url = base
            self._health_url = f"{base}/health"
        else:
            api = base if base.endswith("/v1") else f"{base}/v1"
            self._url = f"{api}/chat/completions"  # which the library uses as it is
            self._health_url = f"{api}/models"
        plain = {name.lower(): value for name, value in (headers or {}).items()}
        token = entry.token()
        if token:
            plain["authorization"] = f"Bearer {token}"
        self._health_headers = plain
        # The library drops None headers: with no token of ours, no Authorization at all.
        self._headers: dict[str, str | None] = {"authorization": None, **plain, "accept": _SSE}
        timeouts = entry.timeouts
        self._stall_first = ReplyError(
            ErrorKind.STALL,
            f"The model's server did not start answering within {timeouts.stall:g} s.",
        )
        self._stall = ReplyError(
            ErrorKind.STALL, f"The model stopped responding (no new text for {timeouts.stall:g} s)."
        )
        self._deadline = ReplyError(
            ErrorKind.DEADLINE,
            f"The reply took longer than the {timeouts.total:g} s limit and was cut off.",
        )
        self._closed = False
        _warm_up()

    async def __aenter__(self) -> ModelClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Refuse new replies. Each reply owns its connection and closes it when it ends."""
        self._closed = True

    async def health(self) -> bool:
        """Whether the server answers its status route: TGI ``/health``, else ``/v1/models``."""
        try:
            async with (
                asyncio.timeout(min(self.entry.timeouts.stall, 5.0)),
                _new_http_client() as http,
            ):
                response = await http.get(self._health_url, headers=self._health_headers)
        except (TimeoutError, httpx2.HTTPError):
            return False
        return response.is_success

    def request_body(
        self, messages: Sequence[Message], parameters: GenerationParameters | None = None
    ) -> dict[str, Any]:
        """The JSON body sent for ``messages``, the entry's system prompt first, with
        ``parameters`` (already checked by the caller) or else the entry's own."""
        chat: list[Message] = []
        if self.entry.system_prompt:
            chat.append({"role": "system", "content": self.entry.system_prompt})
        chat.extend({"role": m["role"], "content": m["content"]} for m in messages)
        params = parameters or self.entry.parameters
        # top_p 1 means "no nucleus filter", which is what servers do without it; TGI (native and
        # chat routes alike) rejects 1.0 as out of range, so it is left out rather than sent.
        top_p = {"top_p": params.top_p} if params.top_p < 1 else {}
        stop = {"stop": list(params.stop)} if params.stop else {}
        if self._template is None:
            return {
                "model": self.entry.model_id,
                "messages": chat,
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                **top_p,
                **stop,
            }
        # The native route rejects temperature 0 (it must be strictly positive): greedy decoding
        # is asked for with do_sample false instead.
        sampling = {"temperature": params.temperature} if params.temperature > 0 else {}
        prompt = self._template.render(messages=chat, add_generation_prompt=True)
        parameters = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": params.temperature > 0,
            "details": True,
            # The compat route defaults to true: the final event would repeat the whole prompt.
            "return_full_text": False,
            **sampling,
            **top_p,
            **stop,
        }
        return {"inputs": prompt, "parameters": parameters, "stream": True}

    async def stream(
        self, messages: Sequence[Message], parameters: GenerationParameters | None = None
    ) -> AsyncGenerator[Reply, None]:
        """Yield the same ``Reply`` after every token, then once more with ``finished=True``.

        ``parameters`` replace the entry's generation parameters for this reply only (the
        Side-by-side tab's choice, checked against the entry's limits by the caller).

        An endpoint failure ends the stream with ``reply.error`` set and the text received so far
        kept; only caller bugs raise (a chat template rejecting the conversation, a closed
        client). If the consumer stops early (``aclose()``, cancellation), the request's
        connection is closed before control returns to it; iterate inside
        ``contextlib.aclosing`` so that a ``break`` does so at once, not at garbage collection.
        """
        if self._closed:
            raise RuntimeError(f"the client of model {self.entry.name!r} is closed")
        reply = Reply(model=self.entry.name)
        body = self.request_body(messages, parameters)
        apply = _apply_chat_output if self._template is None else _apply_tgi_output
        state = _StreamState()
        stall = self.entry.timeouts.stall
        clock = asyncio.get_running_loop().time
        started = clock()
        deadline = started + self.entry.timeouts.total
        outputs: AsyncGenerator[Any, None] | None = None
        try:
            async with AsyncInferenceClient(
                base_url=self._url,
                api_key=_NO_TOKEN,
                headers=cast(dict[str, str], self._headers),
            ) as client:
                try:
                    first_wait = min(started + stall, deadline)
                    on_timeout = self._deadline if first_wait >= deadline else self._stall_first
                    outputs = await _within(self._open(client, body), first_wait, on_timeout)
                    waiting_since = started
                    while not state.done:
                        wait_until = min(waiting_since + stall, deadline)
                        if wait_until >= deadline:
                            on_timeout = self._deadline
                        else:
                            on_timeout = self._stall if reply.tokens else self._stall_first
                        try:
                            output = await _within(anext(outputs, None), wait_until, on_timeout)
                        except (ValueError, AttributeError):
                            error = _malformed_error("an event is not the protocol's JSON")
                            raise _Failure(error) from None
                        if output is None:  # the body ended (chat: at [DONE], see _EventStream)
                            if not state.finished:
                                raise _Failure(_incomplete())
                            break
                        tokens_before = reply.tokens
                        apply(output, reply, state)
                        if reply.tokens != tokens_before:
                            if reply.ttft_s is None:
                                reply.ttft_s = clock() - started
                            yield reply
                            waiting_since = clock()  # the consumer's time is not a stall
                    reply.total_s = clock() - started
                    if state.usage_tokens is not None:
                        reply.tokens = state.usage_tokens
                finally:
                    if outputs is not None:
                        await outputs.aclose()
        except _Failure as failure:
            reply.error = failure.error
        except httpx2.SSEError as exc:
            reply.error = _malformed_error(str(exc))
        except httpx2.DecodingError:
            reply.error = _malformed_error("its body could not be decoded")
        except httpx2.RequestError as exc:
            reply.error = _transport_error(exc, midstream=outputs is not None)
        except (HfHubHTTPError, TextGenerationError) as exc:
            reply.error = _library_error(exc)
        if reply.total_s is None:  # failed before the final event
            reply.total_s = clock() - started
        reply.finished = True
        yield reply

    async def _open(
        self, client: AsyncInferenceClient, body: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        """Send the request; the parsed events, once the server has answered 200."""
        if self._template is None:
            outputs = await client.chat_completion(**body)
        else:
            try:
                outputs = await client.text_generation(
                    body["inputs"], stream=body["stream"], model=self._url, **body["parameters"]
                )
            except ValueError as exc:
                raise _Failure(_not_tgi(exc)) from None
        return cast(AsyncGenerator[Any, None], outputs)


class _StreamState:
    """What one stream has seen beyond what its ``Reply`` holds."""

    __slots__ = ("done", "finished", "usage_tokens")

    def __init__(self) -> None:
        self.done = False
        """Stop reading: TGI's final event arrived."""
        self.finished = False
        """The reply is complete if the body ends now: a final event or a finish reason came."""
        self.usage_tokens: int | None = None
        """Completion tokens reported by a chat ``usage`` chunk."""


async def _within(awaitable: Awaitable[_T], when: float, on_timeout: ReplyError) -> _T:
    """Await ``awaitable`` until loop time ``when``; past it, fail with ``on_timeout``."""
    try:
        async with asyncio.timeout_at(when):
            return await awaitable
    except TimeoutError:
        raise _Failure(on_timeout) from None


def _compile_template(entry: ModelEntry) -> Template:
    """Compile the entry's prompt template in a sandbox, and check it renders a conversation."""
    # The options and helpers transformers gives chat templates, so that a model's own template
    # (from its tokenizer_config.json) can be pasted as it is.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = _raise_template_error
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        template = env.from_string(entry.chat_template or CHATML_TEMPLATE)
        sample: list[Message] = [{"role": "user", "content": "Hello"}]
        if entry.system_prompt:
            sample.insert(0, {"role": "system", "content": entry.system_prompt})
        template.render(messages=sample, add_generation_prompt=True)
    except TemplateError as exc:
        raise ValueError(
            f"model {entry.name!r}: chat_template cannot render a chat: {exc}"
        ) from exc
    return template


def _raise_template_error(message: str) -> NoReturn:
    """``raise_exception(...)`` as Hugging Face chat templates call it."""
    raise TemplateError(message)


# The library's output objects are also dicts of the JSON fields, which it fills with None when
# missing and keeps as they came when of the wrong type: they are checked as JSON.


def _apply_tgi_output(output: dict[str, Any], reply: Reply, state: _StreamState) -> None:
    """Apply one ``TextGenerationStreamOutput``: a token, the last one with ``generated_text``."""
    token = output.get("token")
    if not isinstance(token, dict) or not isinstance(token.get("text"), str):
        raise _Failure(_malformed_error("an event has no token"))
    if not token.get("special"):  # special tokens (e.g. the end-of-sequence) are not text
        reply.text += token["text"]
    reply.tokens += 1
    if output.get("generated_text") is None:
        return
    state.done = state.finished = True
    details = output.get("details")
    if isinstance(details, dict):
        if isinstance(details.get("finish_reason"), str):
            reply.finish_reason = details["finish_reason"]
        if isinstance(details.get("generated_tokens"), int):
            reply.tokens = details["generated_tokens"]


def _apply_chat_output(output: dict[str, Any], reply: Reply, state: _StreamState) -> None:
    """Apply one ``ChatCompletionStreamOutput``: a delta, a finish reason, or the usage."""
    choices = output.get("choices")
    if not isinstance(choices, list):
        raise _Failure(_malformed_error("a chunk has no choices"))
    usage = output.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        state.usage_tokens = usage["completion_tokens"]
    if not choices:
        return
    choice = choices[0]  # n is never set, so there is one choice
    delta = (choice.get("delta") or {}) if isinstance(choice, dict) else None
    if not isinstance(delta, dict):
        raise _Failure(_malformed_error("a chunk has no delta"))
    content = delta.get("content")
    if not isinstance(content, str | None):
        raise _Failure(_malformed_error("a chunk's content is not text"))
    if content:
        reply.text += content
        reply.tokens += 1
    if isinstance(choice.get("finish_reason"), str):
        reply.finish_reason = choice["finish_reason"]
        state.finished = True


# -- the library's HTTP clients --------------------------------------------------------------


@functools.cache
def _warm_up() -> None:
    """Pay the library's one-off costs when clients are built (at start-up), not in a reply.

    The first request builds the user agent, for which huggingface_hub fetches a registry of AI
    agents from the Hub with a blocking call (3 s timeout; none if ``HF_HUB_DISABLE_TELEMETRY``
    or ``HF_HUB_OFFLINE``), which inside a reply would stall the event loop and every reply.
    """
    build_hf_headers(token=False)
    _ssl_context()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """The TLS context httpx2 would build for every client, built once: it costs ~20 ms."""
    return httpx2.create_ssl_context()


def _new_http_client() -> httpx2.AsyncClient:
    """The ``httpx2.AsyncClient`` of every ``AsyncInferenceClient``: a cheap one per reply.

    It replaces the library's default in the whole process (set below, when this module is
    imported), and serves the arena's health checks too. The default's request hook is left out:
    it adds a request id and enforces ``HF_HUB_OFFLINE``, both about the Hub, which model
    endpoints are not.
    """
    return httpx2.AsyncClient(
        verify=_ssl_context(),
        follow_redirects=True,
        timeout=None,  # callers bound their waits; see ModelClient.stream
        # No pool cap (the default queues past 100 connections): a busy server should answer
        # 429 rather than requests wait here. Only long-lived clients can reach it anyway.
        limits=httpx2.Limits(),
        event_hooks={"response": [_check_response]},
    )


# The library has no per-client setting for this; setting the same factory again is harmless.
set_async_client_factory(_new_http_client)


async def _check_response(response: httpx2.Response) -> None:
    """Response hook: read error bodies, and check event streams (see ``_EventStream``).

    Only requests that asked for ``text/event-stream`` are checked as event streams, so other
    users of the library are affected only by error bodies being read, as its own hook does.
    """
    body = response.stream
    assert isinstance(body, httpx2.AsyncByteStream)
    if response.status_code >= 400:
        # Read now, bounded, even without Content-Length: the library needs a read body to
        # quote it (and to raise anything but ResponseNotRead on a 422), and reads one itself
        # only when it has a Content-Length. A body that cannot be read is a network failure.
        response.stream = _Capped(body, _MAX_ERROR_BODY)
        await response.aread()
    elif response.is_success and response.request.headers.get("accept") == _SSE:
        media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != _SSE:
            raise httpx2.SSEError(f"it is not an event stream but {media_type or 'untyped'}")
        chat = response.request.url.path.endswith("/chat/completions")
        response.stream = _EventStream(body, chat=chat)


class _Capped(httpx2.AsyncByteStream):
    """The first ``limit`` bytes of a body."""

    def __init__(self, body: httpx2.AsyncByteStream, limit: int) -> None:
        self._body = body
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        left = self._limit
        async for chunk in self._body:
            yield chunk[:left]
            left -= len(chunk)
            if left <= 0:
                return

    async def aclose(self) -> None:
        await self._body.aclose()


class _EventStream(httpx2.AsyncByteStream):
    """An event-stream body, made fit for the library's line-based reader.

    It raises ``RemoteProtocolError`` where the stream is incomplete though the library would not
    notice: the body ends inside an event (after the last blank line), or a chat stream ends
    without ``[DONE]`` (the library stops reading at ``[DONE]``, so reaching the end means it
    never came). It raises ``SSEError`` for a line over ``_MAX_EVENT`` bytes (unbounded memory
    otherwise), and escapes the characters that ``str.splitlines`` takes for line ends.
    """

    def __init__(self, body: httpx2.AsyncByteStream, *, chat: bool) -> None:
        self._body = body
        self._chat = chat

    async def __aiter__(self) -> AsyncIterator[bytes]:
        tail = b"\n\n"  # the last bytes so far: an empty body ends no event
        held = b""  # the start of a UTF-8 sequence that the next chunk completes
        line = 0  # bytes since the last line end
        async for chunk in self._body:
            if held:
                chunk, held = held + chunk, b""
            if chunk.endswith((b"\xc2", b"\xe2", b"\xe2\x80")):
                cut = 2 if chunk.endswith(b"\xe2\x80") else 1
                chunk, held = chunk[:-cut], chunk[-cut:]
                if not chunk:
                    continue
            chunk = (
                chunk.replace(b"\xc2\x85", b"\\u0085")
                .replace(b"\xe2\x80\xa8", b"\\u2028")
                .replace(b"\xe2\x80\xa9", b"\\u2029")
            )
            if chunk.endswith((b"\n", b"\r")):
                line = 0
            else:
                end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
                line = line + len(chunk) if end < 0 else len(chunk) - end - 1
                if line > _MAX_EVENT:
                    raise httpx2.SSEError(f"an event is larger than {_MAX_EVENT // 1024} KiB")
            tail = chunk if len(chunk) >= 4 else (tail + chunk)[-4:]
            yield chunk
        if held or not tail.endswith((b"\n\n", b"\r\r", b"\r\n\r\n")):
            raise httpx2.RemoteProtocolError("the event stream ended inside an event")
        if self._chat:
            raise httpx2.RemoteProtocolError("the chat stream ended without [DONE]")

    async def aclose(self) -> None:
        await self._body.aclose()


# -- errors ----------------------------------------------------------------------------------


def _in_chain(exc: BaseException, kind: type[_E]) -> _E | None:
    """``exc``, or the first exception of its cause/context chain, that is a ``kind``."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, kind):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _detail(text: object) -> str:
    """Server-provided error text, made fit for a chat pane."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _MAX_DETAIL else flat[: _MAX_DETAIL - 1] + "…"


def _library_error(exc: HfHubHTTPError | TextGenerationError) -> ReplyError:
    """An HTTP error (``TextGenerationError`` too when the library parsed TGI's error body), or
    an error event inside a 200 stream."""
    http_error = _in_chain(exc, HfHubHTTPError)
    if http_error is not None:
        return _http_error(http_error.response)
    return _event_error(exc)


def _event_error(exc: Exception) -> ReplyError:
    """An error event: TGI's ``{"error": str, "error_type"}``, parsed into a subclass named after
    ``error_type``, or chat's ``{"error": {"message", "http_status_code"}}`` (TGI reports every
    chat error as 422), whose dict the library passes on as the exception's argument."""
    message: object = exc.args[0] if exc.args else ""
    status = None
    overloaded = isinstance(exc, OverloadedError)
    if isinstance(message, dict):
        code = message.get("http_status_code", message.get("code"))
        status = code if isinstance(code, int) else None
        overloaded = overloaded or message.get("type") == "overloaded"
        message = message.get("message", "")
    text = _detail(message)
    if overloaded or status == 429 or "overloaded" in text.lower():
        return ReplyError(
            ErrorKind.OVERLOADED,
            "The model's server is overloaded. Try again in a moment.",
            status,
        )
    return ReplyError(
        ErrorKind.STREAM_ERROR,
        f"The model failed while answering: {text or 'no reason given'}",
        status,
    )


def _http_error(response: httpx2.Response) -> ReplyError:
    """A non-2xx answer, described from its TGI/OpenAI/FastAPI-style error body when it has one."""
    status = response.status_code
    body = response.content  # read by _check_response
    message: object = None
    error_type: object = None
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        error_type = payload.get("error_type")
        if isinstance(error, dict):
            message, error_type = error.get("message"), error.get("type", error_type)
        else:
            message = error if error is not None else payload.get("detail", payload.get("message"))
    elif "html" not in response.headers.get("content-type", ""):
        message = body.decode("utf-8", "replace")
    if status == 429 or error_type == "overloaded":
        return ReplyError(
            ErrorKind.OVERLOADED,
            f"The model's server is overloaded (HTTP {status}). Try again in a moment.",
            status,
        )
    what = "refused the request" if status < 500 else "failed"
    text = _detail(message) if message else ""
    return ReplyError(
        ErrorKind.HTTP_STATUS,
        f"The model's server {what} (HTTP {status})" + (f": {text}" if text else "."),
        status,
    )


def _not_tgi(exc: ValueError) -> ReplyError:
    """``text_generation`` refusing to stream from a server that is not TGI.

    On an HTTP 400 naming unused ``model_kwargs`` (a transformers server), the library retries
    without them and, as it cannot stream from such a server, raises ``ValueError``; it then
    remembers the endpoint and raises it again, without a request, for every later call.
    """
    http_error = _in_chain(exc, HfHubHTTPError)
    if http_error is not None:
        return _http_error(http_error.response)
    return ReplyError(
        ErrorKind.HTTP_STATUS,
        "The model's server refused the request (HTTP 400): it is not a TGI server.",
        400,
    )


def _transport_error(exc: httpx2.RequestError, *, midstream: bool) -> ReplyError:
    """A network failure: before the answer it is a connection problem, during it a cut-off."""
    if midstream:
        return _incomplete()
    if _in_chain(exc, socket.gaierror) is not None:
        return ReplyError(
            ErrorKind.CONNECTION,
            "The model's server could not be found (its address does not resolve).",
        )
    return ReplyError(
        ErrorKind.CONNECTION,
        "Could not connect to the model's server; it may be down. Try again later.",
    )


def _malformed_error(what: str) -> ReplyError:
    return ReplyError(
        ErrorKind.MALFORMED, f"The model's server sent a reply the arena cannot read: {what}."
    )


def _incomplete() -> ReplyError:
    return ReplyError(
        ErrorKind.INCOMPLETE,
        "The reply was cut off: the model's server ended the stream before finishing.",
    )
