"""The streaming model client against the built-in TGI-protocol server, for both protocols.

Every fault the demo server can produce must end the stream with the right ``ErrorKind``, a
readable message and the partial text kept, and nothing may be raised or left running.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest

from arena.clients import ModelClient
from arena.config import GenerationParameters, ModelEntry, Timeouts
from arena.demo_server import DemoServer
from arena.demo_server.personas import reply as persona_reply
from arena.demo_server.personas import tokenize
from arena.replies import ErrorKind, Message, Reply

PROTOCOLS = ["tgi", "openai"]
QUESTION = "How do I keep sourdough starter alive?"
ASK: list[Message] = [{"role": "user", "content": QUESTION}]
FINISHED_BY_EOS = {"tgi": "eos_token", "openai": "stop"}  # TGI's chat renames eos_token


def make_entry(
    protocol: str,
    persona: str = "concise",
    *,
    total: float = 5.0,
    stall: float = 2.0,
    **fields: Any,
) -> ModelEntry:
    return ModelEntry(
        name=f"test-{persona}",
        display_name="Test",
        organization="Tests",
        endpoint=f"builtin:{persona}",
        protocol=protocol,
        timeouts=Timeouts(total=total, stall=stall),
        **fields,
    )


def expected_tokens(persona: str, question: str = QUESTION) -> list[str]:
    """Texts of the tokens the demo persona streams, without the final EOS."""
    return [token.text for token in tokenize(persona_reply(persona, question))]


async def collect(
    client: ModelClient,
    messages: list[Message] = ASK,
    parameters: GenerationParameters | None = None,
) -> tuple[Reply, list[str]]:
    """The final reply and the text seen at each update (with ``parameters`` for this reply).

    Also checks the contract of the updates: always the same object, finished only at the end.
    """
    texts: list[str] = []
    finished: list[bool] = []
    replies: set[int] = set()
    async with aclosing(client.stream(messages, parameters)) as updates:
        async for reply in updates:
            texts.append(reply.text)
            finished.append(reply.finished)
            replies.add(id(reply))
    assert finished == [False] * (len(finished) - 1) + [True] and len(replies) == 1
    return reply, texts


def answer(
    base_url: str, entry: ModelEntry, headers: dict[str, str] | None = None
) -> tuple[Reply, list[str]]:
    async def main() -> tuple[Reply, list[str]]:
        async with ModelClient(entry, base_url, headers=headers) as client:
            return await collect(client)

    return asyncio.run(main())


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    # Fast keep-alives: a stalled stream notices the client leaving within 50 ms.
    with DemoServer(port=0, token_latency_ms=0, keepalive_interval_s=0.05) as demo:
        yield demo


@pytest.fixture(scope="module")
def one_slot_server() -> Iterator[DemoServer]:
    """Each persona serves one request at a time: a second one is told "overloaded"."""
    with DemoServer(port=0, max_concurrent_requests=1, keepalive_interval_s=0.05) as demo:
        yield demo


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- replies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("persona", ["concise", "coder"])
def test_a_normal_reply_streams_token_by_token(server, protocol, persona):
    tokens = expected_tokens(persona)
    reply, texts = answer(server.base_url(persona), make_entry(protocol, persona))

    assert reply.ok
    assert reply.text == "".join(tokens)  # the special EOS token is not text
    assert reply.finish_reason == FINISHED_BY_EOS[protocol]
    assert reply.tokens == len(tokens) + 1  # as the server reports it: EOS included
    assert 0 < reply.ttft_s <= reply.total_s < 2
    # An update for every token, each text extending the last by one token.
    assert list(dict.fromkeys(texts)) == ["".join(tokens[: i + 1]) for i in range(len(tokens))]
    assert len(texts) >= len(tokens) + 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_generation_parameters_reach_the_server(server, protocol):
    limited = make_entry(protocol, parameters=GenerationParameters(max_new_tokens=4))
    reply, _ = answer(server.base_url("concise"), limited)
    assert reply.ok and reply.finish_reason == "length" and reply.tokens == 4
    assert reply.text == "".join(expected_tokens("concise")[:4])

    stopped = make_entry(protocol, "verbose", parameters=GenerationParameters(stop=["\n\n"]))
    reply, _ = answer(server.base_url("verbose"), stopped)
    first_paragraph = persona_reply("verbose", QUESTION).split("\n\n")[0]
    assert reply.ok and reply.finish_reason == "stop_sequence"
    assert reply.text == first_paragraph + "\n\n"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_parameters_given_for_one_reply_replace_the_entry_s(server, protocol):
    entry = make_entry(protocol, parameters=GenerationParameters(max_new_tokens=64))
    chosen = entry.parameters.model_copy(update={"max_new_tokens": 3, "temperature": 0.0})

    async def main() -> tuple[Reply, Reply, dict[str, Any]]:
        async with ModelClient(entry, server.base_url("concise")) as client:
            short, _ = await collect(client, ASK, chosen)
            default, _ = await collect(client)  # the next reply is back to the entry's
            return short, default, client.request_body(ASK, chosen)

    short, default, body = asyncio.run(main())
    assert short.ok and short.finish_reason == "length" and short.tokens == 3
    assert short.text == "".join(expected_tokens("concise")[:3])
    assert default.ok and default.finish_reason == FINISHED_BY_EOS[protocol]
    assert default.text == "".join(expected_tokens("concise"))
    if protocol == "openai":
        assert body["max_tokens"] == 3 and body["temperature"] == 0.0
    else:  # greedy on the native route: do_sample false, no temperature
        assert body["parameters"]["max_new_tokens"] == 3 and not body["parameters"]["do_sample"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_greedy_and_unfiltered_sampling_are_accepted_by_tgi(server, protocol):
    # TGI rejects temperature 0 on /generate_stream and top_p 1.0 on both routes.
    params = GenerationParameters(temperature=0.0, top_p=1.0)
    reply, _ = answer(server.base_url("concise"), make_entry(protocol, parameters=params))
    assert reply.ok, reply.error


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_system_prompt_reaches_the_server(server, protocol):
    # The demo's reply ignores system turns, but its input-length validation counts them.
    huge = make_entry(protocol, system_prompt="word " * 5000)
    reply, _ = answer(server.base_url("concise"), huge)
    assert reply.error is not None and reply.error.kind is ErrorKind.STREAM_ERROR
    assert "must have less than 4096 tokens" in reply.error.message
    assert reply.error.status == (422 if protocol == "openai" else None)

    reply, _ = answer(server.base_url("concise"), make_entry(protocol, system_prompt="Be kind."))
    assert reply.ok


def test_tgi_prompts_are_rendered_with_the_entry_template():
    chatml = ModelClient(make_entry("tgi", system_prompt="Be kind."), "http://127.0.0.1:9")
    assert chatml.request_body(ASK)["inputs"] == (
        "<|im_start|>system\nBe kind.<|im_end|>\n"
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    template = (
        "{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[ASSISTANT]{% endif %}"
    )
    custom = ModelClient(make_entry("tgi", chat_template=template), "http://127.0.0.1:9")
    assert custom.request_body(ASK)["inputs"] == f"[USER] {QUESTION}\n[ASSISTANT]"
    # Helpers of Hugging Face templates: loop controls, strftime_now.
    helpers = (
        "{% for m in messages %}{{ m['content'] }}{% break %}{% endfor %}{{ strftime_now('%Y') }}"
    )
    with_helpers = ModelClient(make_entry("tgi", chat_template=helpers), "http://127.0.0.1:9")
    assert re.fullmatch(re.escape(QUESTION) + r"\d{4}", with_helpers.request_body(ASK)["inputs"])


def test_a_template_that_cannot_render_is_refused_when_the_client_is_built():
    no_system = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
    )
    with pytest.raises(ValueError, match="System role not supported"):
        ModelClient(make_entry("tgi", system_prompt="Hi", chat_template=no_system), "http://x")
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"  # blocked by the sandbox
    with pytest.raises(ValueError, match="chat_template"):
        ModelClient(make_entry("tgi", chat_template=escape), "http://x")


def test_an_openai_base_url_may_already_end_in_v1(server):
    reply, _ = answer(server.base_url("concise") + "/v1", make_entry("openai"))
    assert reply.ok


# -- failures before the stream ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connection_refused(protocol):
    reply, _ = answer(f"http://127.0.0.1:{closed_port()}/concise", make_entry(protocol))
    assert reply.error is not None and reply.error.kind is ErrorKind.CONNECTION
    assert "Could not connect" in reply.error.message
    assert reply.text == "" and reply.ttft_s is None and reply.total_s is not None


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dns_failure(protocol):
    reply, _ = answer("http://no-such-model.invalid", make_entry(protocol))
    assert reply.error is not None and reply.error.kind is ErrorKind.CONNECTION
    assert "could not be found" in reply.error.message


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("status", [401, 500, 503])
def test_http_error_status(server, protocol, status):
    headers = {"X-Demo-Http-Status": str(status)}
    reply, _ = answer(server.base_url("concise"), make_entry(protocol), headers)
    assert reply.error is not None and reply.error.kind is ErrorKind.HTTP_STATUS
    assert reply.error.status == status
    # The message quotes the TGI error body.
    assert f"(HTTP {status}): demo fault: HTTP {status}" in reply.error.message


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_http_429_is_overloaded(server, protocol):
    headers = {"X-Demo-Http-Status": "429"}
    reply, _ = answer(server.base_url("concise"), make_entry(protocol), headers)
    assert reply.error is not None and reply.error.kind is ErrorKind.OVERLOADED
    assert reply.error.status == 429
    assert reply.error.message == (
        "The model's server is overloaded (HTTP 429). Try again in a moment."
    )


# -- failures inside an HTTP 200 stream -------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_overloaded_event_in_a_200_stream(server, protocol):
    reply, _ = answer(server.base_url("concise"), make_entry(protocol), {"X-Demo-Overload": "1"})
    assert reply.error is not None and reply.error.kind is ErrorKind.OVERLOADED
    assert "overloaded" in reply.error.message
    assert reply.text == ""


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_error_event_keeps_the_partial_text(server, protocol):
    headers = {"X-Demo-Error-At": "3"}
    reply, texts = answer(server.base_url("concise"), make_entry(protocol), headers)
    assert reply.error is not None and reply.error.kind is ErrorKind.STREAM_ERROR
    assert "Request failed during generation" in reply.error.message
    assert reply.error.status == (422 if protocol == "openai" else None)
    assert reply.text == "".join(expected_tokens("concise")[:3]) and reply.tokens == 3
    assert len(texts) == 4  # three tokens, then the failure


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_malformed_event(server, protocol):
    headers = {"X-Demo-Malformed-At": "2"}
    reply, _ = answer(server.base_url("concise"), make_entry(protocol), headers)
    assert reply.error is not None and reply.error.kind is ErrorKind.MALFORMED
    assert reply.text == "".join(expected_tokens("concise")[:2])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("at", [0, 3])
def test_truncated_stream_is_incomplete(server, protocol, at):
    headers = {"X-Demo-Truncate-At": str(at)}
    reply, _ = answer(server.base_url("concise"), make_entry(protocol), headers)
    assert reply.error is not None and reply.error.kind is ErrorKind.INCOMPLETE
    assert reply.text == "".join(expected_tokens("concise")[:at])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stall_between_tokens(server, protocol):
    # The stalled server keeps sending keep-alive comments: they must not count as progress.
    entry = make_entry(protocol, stall=0.3, total=5)
    reply, _ = answer(server.base_url("concise"), entry, {"X-Demo-Stall-At": "3"})
    assert reply.error is not None and reply.error.kind is ErrorKind.STALL
    assert "stopped responding" in reply.error.message
    assert reply.text == "".join(expected_tokens("concise")[:3])
    assert 0.3 <= reply.total_s < 1.5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stall_before_the_first_token(server, protocol):
    entry = make_entry(protocol, stall=0.3, total=5)
    reply, _ = answer(server.base_url("concise"), entry, {"X-Demo-Stall-At": "0"})
    assert reply.error is not None and reply.error.kind is ErrorKind.STALL
    assert "did not start answering within 0.3 s" in reply.error.message
    assert reply.text == "" and reply.ttft_s is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_overall_deadline(server, protocol):
    # Tokens keep coming (no stall), but the whole reply would take far longer than allowed.
    entry = make_entry(protocol, "verbose", stall=0.3, total=0.5)
    reply, _ = answer(server.base_url("verbose"), entry, {"X-Demo-Token-Latency-Ms": "20"})
    assert reply.error is not None and reply.error.kind is ErrorKind.DEADLINE
    assert "0.5 s limit" in reply.error.message
    assert 0 < reply.tokens < len(expected_tokens("verbose"))
    assert persona_reply("verbose", QUESTION).startswith(reply.text) and reply.text
    assert 0.5 <= reply.total_s < 1.5


# -- shapes the demo server never sends ------------------------------------------------------

SSE = "text/event-stream"
_DELTA = '{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":'
CHAT_TOKEN = "data: " + _DELTA + "null}]}\n\n"
CHAT_FINISH = "data: " + _DELTA + '"stop"}]}\n\n'
_TOKEN = '{"index":1,"token":{"id":5,"text":"Hi","logprob":0,"special":false},"generated_text":'
TGI_TOKEN = "data: " + _TOKEN + "null}\n\n"
TGI_FINAL_CUT = "data: " + _TOKEN + '"HiHi"}'  # no blank line: the event never completed


@asynccontextmanager
async def scripted_server(
    status: int,
    content_type: str,
    body: str | list[bytes],
    requests: list[tuple[dict[str, str], bytes]] | None = None,
    delay_s: float = 0.01,
) -> AsyncIterator[str]:
    """A server answering every request with this status and body, chunked, then closing.

    A body given as parts is sent one HTTP chunk at a time, ``delay_s`` apart, so that the client
    reads them apart. ``requests`` collects the headers (lower-cased names) and body of each
    request.
    """
    parts = [body.encode()] if isinstance(body, str) else body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            content = await reader.readexactly(int(length.group(1)) if length else 0)
            if requests is not None:
                lines = head.decode().split("\r\n")[1:]
                fields = (line.split(":", 1) for line in lines if line)
                requests.append(({name.lower(): value.strip() for name, value in fields}, content))
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
                "transfer-encoding: chunked\r\nconnection: close\r\n\r\n".encode()
            )
            for index, part in enumerate(parts):
                if index:
                    await asyncio.sleep(delay_s)
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass  # the client left early, as it should on a fault
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def scripted_reply(
    protocol: str, status: int, content_type: str, body: str | list[bytes], **fields: Any
) -> Reply:
    async def main() -> Reply:
        async with (
            scripted_server(status, content_type, body) as url,
            ModelClient(make_entry(protocol, **fields), url) as client,
        ):
            return (await collect(client))[0]

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("protocol", "status", "content_type", "body", "kind", "text"),
    [
        # Chat needs both a finish reason and [DONE].
        ("openai", 200, SSE, CHAT_FINISH, ErrorKind.INCOMPLETE, "Hi"),
        ("openai", 200, SSE, CHAT_TOKEN + "data: [DONE]\n\n", ErrorKind.INCOMPLETE, "Hi"),
        ("openai", 200, SSE, "data: [1, 2]\n\n", ErrorKind.MALFORMED, ""),
        ("openai", 200, SSE, 'data: {"id": "x"}\n\n', ErrorKind.MALFORMED, ""),
        (
            "openai",
            200,
            SSE,
            'data: {"error": "Model is overloaded", "error_type": "overloaded"}\n\n',
            ErrorKind.OVERLOADED,
            "",
        ),
        ("tgi", 200, SSE, TGI_TOKEN + TGI_FINAL_CUT, ErrorKind.INCOMPLETE, "Hi"),
        ("tgi", 200, SSE, 'data: {"index": 1}\n\n', ErrorKind.MALFORMED, ""),
        # A server that ignored streaming: a JSON body is not an event stream.
        ("tgi", 200, "application/json", '{"generated_text": "Hi"}', ErrorKind.MALFORMED, ""),
        # An error body without Content-Length is still read for its message.
        (
            "tgi",
            503,
            "application/json",
            '{"error": "Model is loading", "error_type": "unhealthy"}',
            ErrorKind.HTTP_STATUS,
            "",
        ),
    ],
)
def test_protocol_violations(protocol, status, content_type, body, kind, text):
    reply = scripted_reply(protocol, status, content_type, body)
    assert reply.error is not None and reply.error.kind is kind, reply.error
    assert reply.text == text
    if status != 200:
        assert reply.error.message.endswith("(HTTP 503): Model is loading")


def sse_events(*events: dict[str, Any] | str) -> bytes:
    """An event stream as TGI writes it: JSON with non-ASCII characters left raw."""
    return b"".join(
        b"data: %s\n\n"
        % (event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)).encode()
        for event in events
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unicode_line_separators_inside_json_strings(protocol):
    # JSON allows U+0085, U+2028 and U+2029 raw in strings, and TGI sends them so; huggingface_hub
    # reads events with str.splitlines, which takes them for line ends. Split across chunks too.
    text = "a\u2028b\u2029c\x85d"
    if protocol == "tgi":
        token = {"id": 5, "text": text, "logprob": 0, "special": False}
        body = sse_events(
            {"index": 1, "token": token, "generated_text": None},
            {"index": 2, "token": token | {"text": "!"}, "generated_text": text + "!"},
        )
    else:
        delta = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        finish = {"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}
        body = sse_events({"choices": [delta]}, {"choices": [finish]}, "[DONE]")
    cuts = [body.index(b"\xe2\x80\xa8") + 1, body.index(b"\xe2\x80\xa9") + 2]
    cuts.append(body.index(b"\xc2\x85") + 1)
    parts = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    reply = scripted_reply(protocol, 200, SSE, parts)
    assert reply.ok, reply.error
    assert reply.text == text + "!"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_endless_event_is_refused(protocol):
    reply = scripted_reply(protocol, 200, SSE, [b"data: " + b"x" * 65536] * 17)
    assert reply.error is not None and reply.error.kind is ErrorKind.MALFORMED
    assert "larger than 1024 KiB" in reply.error.message


@pytest.mark.filterwarnings("ignore:API endpoint/model for text-generation is not served via TGI")
def test_a_server_that_is_not_tgi_is_an_http_error_every_time():
    # huggingface_hub answers this 400 by remembering the endpoint as "not TGI" for the rest of
    # the process, and from then on raises ValueError for it without sending anything. (The path,
    # which the server ignores, keeps a later test that gets the same port out of that memory.)
    error = {"error": "The following `model_kwargs` are not used by the model: ['details']"}

    async def main() -> list[Reply]:
        async with (
            scripted_server(400, "application/json", json.dumps(error)) as url,
            ModelClient(make_entry("tgi"), f"{url}/not-tgi") as client,
        ):
            return [(await collect(client))[0] for _ in range(2)]

    first, second = asyncio.run(main())
    assert first.error is not None and first.error.kind is ErrorKind.HTTP_STATUS
    assert "(HTTP 400): The following `model_kwargs`" in first.error.message
    assert second.error is not None and second.error.kind is ErrorKind.HTTP_STATUS
    assert second.error.message.endswith("(HTTP 400): it is not a TGI server.")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_time_spent_by_the_consumer_is_not_a_stall(protocol):
    # Two tokens 0.4 s apart with a stall limit of 0.25 s: the client waited only 0.15 s of it,
    # as the consumer took 0.25 s over the first update.
    if protocol == "tgi":
        token = {"id": 5, "text": "Hi", "logprob": 0, "special": False}
        parts = [
            sse_events({"index": 1, "token": token, "generated_text": None}),
            sse_events({"index": 2, "token": token, "generated_text": "HiHi"}),
        ]
    else:
        parts = [CHAT_TOKEN.encode(), (CHAT_FINISH + "data: [DONE]\n\n").encode()]

    async def main() -> Reply:
        entry = make_entry(protocol, stall=0.25, total=5)
        async with (
            scripted_server(200, SSE, parts, delay_s=0.4) as url,
            ModelClient(entry, url) as client,
            aclosing(client.stream(ASK)) as updates,
        ):
            async for update in updates:
                if not update.finished:
                    await asyncio.sleep(0.25)  # the consumer is busy
        return update

    reply = asyncio.run(main())
    assert reply.ok, reply.error
    assert reply.text == "HiHi"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_only_the_entry_token_is_sent(protocol, monkeypatch):
    """The Space's own Hub token (HF_TOKEN) must never reach a model endpoint."""
    monkeypatch.setenv("HF_TOKEN", "hf_the_space_write_token")
    monkeypatch.setenv("TEST_ENDPOINT_TOKEN", "endpoint-token")
    if protocol == "tgi":
        final = {"index": 1, "token": {"id": 5, "text": "Hi", "special": False}}
        body = sse_events(final | {"generated_text": "Hi"})
    else:
        body = (CHAT_FINISH + "data: [DONE]\n\n").encode()
    anonymous = make_entry(protocol)
    authorised = make_entry(protocol, token_env="TEST_ENDPOINT_TOKEN")
    requests: list[tuple[dict[str, str], bytes]] = []

    async def main() -> list[Reply]:
        async with scripted_server(200, SSE, [body], requests) as url:
            replies = []
            for entry in (anonymous, authorised):
                async with ModelClient(entry, url) as client:
                    replies.append((await collect(client))[0])
                    assert json.loads(requests[-1][1]) == client.request_body(ASK)
            return replies

    replies = asyncio.run(main())
    assert all(reply.ok for reply in replies), replies
    (headers, _), (authorised_headers, _) = requests
    assert "authorization" not in headers
    assert "hf_the_space_write_token" not in repr(requests)
    assert authorised_headers["authorization"] == "Bearer endpoint-token"


# -- the consumer stopping, and load ----------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("how", ["aclose", "cancel"])
def test_a_consumer_stopping_early_closes_the_request(one_slot_server, protocol, how):
    """The server's only slot is held by an open stream, and freed once the consumer leaves."""

    async def main() -> None:
        entry = make_entry(protocol, "coder", stall=5, total=10)
        base = one_slot_server.base_url("coder")
        # The held stream stalls after two tokens, so only a disconnect can end it.
        held = ModelClient(entry, base, headers={"X-Demo-Stall-At": "2"})
        probe = ModelClient(entry, base)
        async with held, probe:
            updates = held.stream(ASK)
            if how == "aclose":
                async for reply in updates:
                    if reply.tokens == 2:
                        break
            else:
                two_tokens = asyncio.Event()

                async def consume() -> None:
                    async for reply in updates:
                        if reply.tokens == 2:
                            two_tokens.set()

                task = asyncio.create_task(consume())
                await two_tokens.wait()
            busy, _ = await collect(probe)
            assert busy.error is not None and busy.error.kind is ErrorKind.OVERLOADED

            if how == "aclose":
                await updates.aclose()
            else:  # the consumer is waiting inside the stream for a token that never comes
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

            for _ in range(40):
                after, _ = await collect(probe)
                if after.ok:
                    break
                await asyncio.sleep(0.05)
            assert after.ok, "the server never saw the client leave"
        await asyncio.sleep(0.05)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())


def test_fifty_concurrent_streams_all_succeed(server):
    async def main() -> None:
        latency = {"X-Demo-Token-Latency-Ms": "2"}
        clients = [
            ModelClient(
                # Deadlines far above the work: this checks that no stream fails or mixes with
                # another, not how fast fifty finish on a busy machine.
                make_entry(protocol, "markdown", total=120, stall=60),
                server.base_url("markdown"),
                headers=latency,
            )
            for protocol in PROTOCOLS
        ]
        try:
            results = await asyncio.gather(*(collect(clients[i % 2]) for i in range(50)))
        finally:
            for client in clients:
                await client.aclose()
        expected = "".join(expected_tokens("markdown"))
        assert all(reply.ok and reply.text == expected for reply, _ in results)

    asyncio.run(main())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health(server, protocol):
    async def main() -> None:
        async with ModelClient(make_entry(protocol), server.base_url("concise")) as up:
            assert await up.health()
        dead_url = f"http://127.0.0.1:{closed_port()}/concise"
        async with ModelClient(make_entry(protocol), dead_url) as down:
            assert not await down.health()

    asyncio.run(main())
