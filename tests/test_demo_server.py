"""The demo server speaks TGI: every body and event checked against TGI's OpenAPI spec.

Also covered: the personas' determinism and style, TGI's stopping and validation rules, every
fault knob, the runner's lifecycle, the CLI, and huggingface_hub's client reading the streams.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import GenerationError, OverloadedError, TextGenerationError
from openapi_schema_validator import OAS30Validator

from arena.demo_server import PERSONAS, DemoServer, Faults, model_id

REPO = Path(__file__).resolve().parent.parent
SPEC_PATH = REPO / "tests/data/tgi-openapi.json"  # TGI 3.3's own spec, vendored unchanged
QUESTION = "How do I bake bread at home?"
CHATML = (
    "<|im_start|>system\nBe brief.<|im_end|>\n"
    "<|im_start|>user\nTell me about whales<|im_end|>\n"
    "<|im_start|>assistant\nWhales are large mammals.<|im_end|>\n"
    f"<|im_start|>user\n{QUESTION}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
MESSAGES = [{"role": "user", "content": QUESTION}]


# -- the contract -------------------------------------------------------------------------------


def _nullable_as_intended(node: Any) -> Any:
    """OAS 3.0.3 gives ``nullable`` effect only beside ``type``, but TGI's generator (utoipa)
    writes ``Option<Struct>`` as ``{allOf: [$ref], nullable: true}``: let those accept null."""
    if isinstance(node, list):
        return [_nullable_as_intended(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable_as_intended(value) for key, value in node.items()}
    if node.get("nullable") and "type" not in node:
        rest = {key: value for key, value in node.items() if key != "nullable"}
        return {"anyOf": [{"enum": [None]}, rest]}
    return node


class Contract:
    """Validates instances against ``#/components/schemas/<name>`` of TGI's spec."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._components = _nullable_as_intended(spec["components"])
        self._validators: dict[str, OAS30Validator] = {}

    def check(self, schema: str, instance: Any) -> None:
        if schema not in self._validators:
            root = {"components": self._components, "$ref": f"#/components/schemas/{schema}"}
            self._validators[schema] = OAS30Validator(root)
        self._validators[schema].validate(instance)


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract(json.loads(SPEC_PATH.read_text()))


def test_contract_helper_rejects_what_the_spec_rejects(contract: Contract) -> None:
    token = {"id": 1, "text": "a", "logprob": None, "special": False}
    contract.check("StreamResponse", {"index": 1, "token": token, "details": None})
    with pytest.raises(Exception, match="special"):
        contract.check("StreamResponse", {"index": 1, "token": {"id": 1, "text": "a"}})
    with pytest.raises(Exception, match="stop"):
        details = {"finish_reason": "stop", "generated_tokens": 1, "input_length": 1}
        contract.check("StreamResponse", {"index": 1, "token": token, "details": details})


# -- servers and clients ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with DemoServer() as running:
        yield running


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as http:
        yield http


def url(server: DemoServer, path: str, persona: str = "concise") -> str:
    return server.base_url(persona) + path


@dataclass
class SSE:
    """A finished event stream: ``data`` payloads (raw) and comment lines, in order."""

    status: int
    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def events(self) -> list[Any]:
        return [json.loads(payload) for payload in self.data if payload != "[DONE]"]


def iter_sse(response: httpx.Response) -> Iterator[tuple[str, str]]:
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield "data", line.removeprefix("data:").removeprefix(" ")
        elif line.startswith(":"):
            yield "comment", line


def sse(
    client: httpx.Client, target: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> SSE:
    with client.stream("POST", target, json=body, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        result = SSE(response.status_code)
        for kind, value in iter_sse(response):
            (result.data if kind == "data" else result.comments).append(value)
    return result


def generate_stream(
    server: DemoServer,
    client: httpx.Client,
    contract: Contract,
    parameters: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    persona: str = "concise",
    inputs: str = CHATML,
) -> list[dict[str, Any]]:
    """A /generate_stream whose every event is a valid StreamResponse or ErrorResponse."""
    body = {"inputs": inputs, "parameters": parameters or {}}
    stream = sse(client, url(server, "/generate_stream", persona), body, headers)
    assert stream.status == 200
    assert "[DONE]" not in stream.data  # TGI's native stream has no [DONE]
    for event in stream.events:
        contract.check("ErrorResponse" if "error" in event else "StreamResponse", event)
    return stream.events


def chat_stream(
    server: DemoServer,
    client: httpx.Client,
    contract: Contract,
    headers: dict[str, str] | None = None,
    persona: str = "concise",
    **body: Any,
) -> SSE:
    """A streamed chat; every event but errors and [DONE] is a valid ChatCompletionChunk."""
    stream = sse(
        client,
        url(server, "/v1/chat/completions", persona),
        {"messages": MESSAGES, "stream": True, **body},
        headers,
    )
    assert stream.status == 200
    for event in stream.events:
        if "error" not in event:
            contract.check("ChatCompletionChunk", event)
    return stream


def check_error(contract: Contract, response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    contract.check("ErrorResponse", body)
    assert body["error_type"] == error_type
    return body["error"]


def chat_content(stream: SSE) -> str:
    return "".join(
        choice["delta"]["content"] for event in stream.events for choice in event["choices"]
    )


# -- info, models, health -----------------------------------------------------------------------


@pytest.mark.parametrize("persona", PERSONAS)
def test_info_and_models_describe_the_persona(
    server: DemoServer, client: httpx.Client, contract: Contract, persona: str
) -> None:
    info = client.get(url(server, "/info", persona)).json()
    contract.check("Info", info)
    assert info["model_id"] == model_id(persona) == f"open-feedback-arena/demo-{persona}"

    models = client.get(url(server, "/v1/models", persona)).json()
    # The spec documents a bare ModelInfo; TGI answers an OpenAI-style list of them.
    assert models["object"] == "list"
    contract.check("ModelInfo", models["data"][0])
    assert models["data"][0]["id"] == model_id(persona)


def test_health_is_ok_unless_the_persona_is_unhealthy(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    healthy = client.get(url(server, "/health"))
    assert (healthy.status_code, healthy.content) == (200, b"")
    with DemoServer(faults={"verbose": Faults(unhealthy=True)}) as sick:
        check_error(contract, client.get(url(sick, "/health", "verbose")), 503, "healthcheck")
        assert client.get(url(sick, "/health", "concise")).status_code == 200


def test_unknown_persona_is_a_404_with_a_tgi_body(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    root = f"{server.url}/nobody"
    for response in (
        client.get(f"{root}/info"),
        client.post(f"{root}/generate", json={"inputs": "hi"}),
        client.post(f"{root}/generate_stream", json={"inputs": "hi"}),
        client.post(f"{root}/v1/chat/completions", json={"messages": MESSAGES, "stream": True}),
        client.post(root, json={"inputs": "hi"}),
    ):
        assert "concise" in check_error(contract, response, 404, "not_found")


# -- native generation --------------------------------------------------------------------------


def test_generate_details_match_the_stream(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    parameters = {"details": True, "decoder_input_details": True}
    response = client.post(
        url(server, "/generate"), json={"inputs": CHATML, "parameters": parameters}
    )
    assert response.status_code == 200
    body = response.json()
    contract.check("GenerateResponse", body)
    details = body["details"]
    assert details["finish_reason"] == "eos_token"
    assert details["generated_tokens"] == len(details["tokens"])
    assert details["tokens"][-1] == {
        "id": 2,
        "text": "<|im_end|>",
        "logprob": -0.0625,
        "special": True,
    }
    assert body["generated_text"] == "".join(t["text"] for t in details["tokens"][:-1])
    assert details["prefill"][0]["logprob"] is None
    assert "".join(t["text"] for t in details["prefill"]) == CHATML

    events = generate_stream(server, client, contract, {"details": True})
    assert [e["token"] for e in events] == details["tokens"]
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["details"] == {
        "finish_reason": "eos_token",
        "generated_tokens": len(events),
        "input_length": len(details["prefill"]),
        "seed": None,
    }


def test_generate_stream_without_details_ends_with_generated_text_only(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    events = generate_stream(server, client, contract)
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    last = events[-1]
    assert last["details"] is None
    assert last["token"]["special"]  # the EOS token is streamed, but is not part of the text
    assert last["generated_text"] == "".join(e["token"]["text"] for e in events[:-1])


def test_sampling_reports_a_stable_seed(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    parameters = {"details": True, "do_sample": True, "temperature": 0.7}
    seeds = {
        generate_stream(server, client, contract, parameters)[-1]["details"]["seed"]
        for _ in range(2)
    }
    assert len(seeds) == 1 and isinstance(seeds.pop(), int)
    chosen = generate_stream(server, client, contract, {**parameters, "seed": 42})
    assert chosen[-1]["details"]["seed"] == 42


def test_chatml_prompts_are_answered_from_the_last_user_turn(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    from_chatml = generate_stream(server, client, contract, inputs=CHATML)[-1]["generated_text"]
    plain = generate_stream(server, client, contract, inputs=QUESTION)[-1]["generated_text"]
    assert from_chatml == plain
    assert "bake bread at home" in from_chatml and "whales" not in from_chatml


def test_max_new_tokens_stops_with_length(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    events = generate_stream(server, client, contract, {"max_new_tokens": 3, "details": True})
    assert len(events) == 3
    assert events[-1]["details"]["finish_reason"] == "length"
    assert not events[-1]["token"]["special"]

    chat = client.post(
        url(server, "/v1/chat/completions"), json={"messages": MESSAGES, "max_tokens": 3}
    )
    assert chat.json()["choices"][0]["finish_reason"] == "length"
    assert chat.json()["usage"]["completion_tokens"] == 3


def test_stop_sequences_end_generation_after_the_match(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    tokens = [e["token"]["text"] for e in generate_stream(server, client, contract)]
    stop = tokens[5].strip()
    events = generate_stream(
        server, client, contract, {"stop": ["never there", stop], "details": True}
    )
    text = events[-1]["generated_text"]
    assert text.endswith(stop) and stop not in text[:-1]
    assert events[-1]["details"]["finish_reason"] == "stop_sequence"
    assert len(events) <= 6

    # As in TGI, the output must end with the sequence after a whole token: no mid-token match.
    mid_token = generate_stream(server, client, contract, {"stop": [stop[:-1]], "details": True})
    assert mid_token[-1]["details"]["finish_reason"] == "eos_token"

    chat = client.post(
        url(server, "/v1/chat/completions"), json={"messages": MESSAGES, "stop": [stop]}
    )
    choice = chat.json()["choices"][0]
    # TGI's chat renames only eos_token (to "stop"); a stop sequence stays "stop_sequence".
    assert choice["finish_reason"] == "stop_sequence"
    assert choice["message"]["content"] == text


def test_compat_route_serves_huggingface_hub_style_requests(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    base = server.base_url("coder")  # what huggingface_hub posts to, without a trailing slash
    plain = client.post(base, json={"inputs": QUESTION, "parameters": {}, "stream": False})
    assert plain.status_code == 200
    [body] = plain.json()  # "/" wraps the GenerateResponse in a list
    contract.check("GenerateResponse", body)
    # TGI defaults return_full_text to true on "/" for text-generation models.
    assert body["generated_text"].startswith(QUESTION + "Here")

    reply_only = client.post(
        base, json={"inputs": QUESTION, "parameters": {"return_full_text": False}}
    )
    assert QUESTION + reply_only.json()[0]["generated_text"] == body["generated_text"]

    stream = sse(
        client, base + "/", {"inputs": QUESTION, "parameters": {"details": True}, "stream": True}
    )
    for event in stream.events:
        contract.check("StreamResponse", event)
    assert stream.events[-1]["generated_text"] == body["generated_text"]
    assert stream.events[-1]["details"]["finish_reason"] == "eos_token"


# -- chat ---------------------------------------------------------------------------------------


def test_chat_completion_matches_spec_and_the_stream(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    response = client.post(
        url(server, "/v1/chat/completions", "markdown"),
        json={"messages": MESSAGES, "logprobs": True},
    )
    assert response.status_code == 200
    completion = response.json()
    contract.check("ChatCompletion", completion)
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert completion["model"] == model_id("markdown")
    usage = completion["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert len(choice["logprobs"]["content"]) == usage["completion_tokens"]

    stream = chat_stream(server, client, contract, persona="markdown")
    assert stream.data[-1] == "[DONE]"
    assert chat_content(stream) == choice["message"]["content"]
    reasons = [event["choices"][0]["finish_reason"] for event in stream.events]
    assert reasons == [None] * (len(reasons) - 1) + ["stop"]
    assert all(event["usage"] is None for event in stream.events)
    assert len(stream.events) == usage["completion_tokens"]


def test_chat_stream_usage_chunk_when_asked(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    stream = chat_stream(server, client, contract, stream_options={"include_usage": True})
    *chunks, usage_chunk = stream.events
    assert usage_chunk["choices"] == []  # as OpenAI: a last chunk without choices
    contract.check("Usage", usage_chunk["usage"])
    assert usage_chunk["usage"]["completion_tokens"] == len(chunks)
    assert stream.data[-1] == "[DONE]"


def test_chat_accepts_content_parts_and_greedy_temperature(
    server: DemoServer, client: httpx.Client
) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    as_parts = client.post(
        url(server, "/v1/chat/completions"), json={"messages": parts, "temperature": 0}
    )
    as_text = client.post(url(server, "/v1/chat/completions"), json={"messages": MESSAGES})
    assert as_parts.status_code == 200
    content = as_parts.json()["choices"][0]["message"]["content"]
    assert content == as_text.json()["choices"][0]["message"]["content"]


# -- personas -----------------------------------------------------------------------------------


def chat_reply(server: DemoServer, client: httpx.Client, persona: str, question: str) -> str:
    messages = [{"role": "user", "content": question}]
    response = client.post(
        url(server, "/v1/chat/completions", persona), json={"messages": messages}
    )
    return response.json()["choices"][0]["message"]["content"]


def test_personas_answer_in_their_own_style_about_the_topic(
    server: DemoServer, client: httpx.Client
) -> None:
    replies = {persona: chat_reply(server, client, persona, QUESTION) for persona in PERSONAS}
    assert all("bake bread at home" in reply for reply in replies.values())
    concise = replies["concise"]
    assert len(re.findall(r"[.!?](?:\s|$)", concise)) <= 2 and len(concise.split()) < 40
    verbose = replies["verbose"]
    assert len(verbose.split("\n\n")) >= 3 and len(verbose.split()) > 150
    markdown = replies["markdown"]
    assert markdown.startswith("## ") and "\n- **" in markdown and "\n1. " in markdown
    code = re.search(r"```(\w+)\n(.+?)\n```\n\n(.+)", replies["coder"], re.DOTALL)
    assert code is not None and code.group(1) == "python" and "def " in code.group(2)
    assert "`" in code.group(3)  # an explanation follows the block
    assert "```javascript" in chat_reply(server, client, "coder", "Count words in JavaScript")


@pytest.mark.parametrize("persona", PERSONAS)
def test_replies_are_deterministic_but_vary_with_the_message(
    server: DemoServer, client: httpx.Client, persona: str
) -> None:
    first, again = (chat_reply(server, client, persona, QUESTION) for _ in range(2))
    assert first == again
    topics = ["rust", "jazz", "tides", "chess", "yeast", "orbits", "glaciers", "tax"]
    shapes = {chat_reply(server, client, persona, f"explain {t}").replace(t, "T") for t in topics}
    assert len(shapes) >= 2  # templates vary, not only the quoted topic


def test_replies_do_not_depend_on_the_process_hash_seed() -> None:
    code = (
        "from arena.demo_server.personas import reply, tokenize;"
        f"print([token.id for token in tokenize(reply('verbose', {QUESTION!r}))])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1 and outputs.pop().startswith("[")


# -- validation ---------------------------------------------------------------------------------

INVALID_PARAMETERS = [
    ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),  # TGI rejects 1.0; the spec allows it
    ({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"temperature": 0.0}, "`temperature` must be strictly positive"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"max_new_tokens": 100_000}, "`max_new_tokens` must be <= 8192"),
    ({"stop": list("abcde")}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"best_of": 2}, "`best_of` != 1"),
    ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"typical_p": 1.5}, "`typical_p` must be > 0.0 and < 1.0"),
]


@pytest.mark.parametrize(("parameters", "message"), INVALID_PARAMETERS)
def test_invalid_parameters_are_422_or_an_event_in_a_200_stream(
    server: DemoServer,
    client: httpx.Client,
    contract: Contract,
    parameters: dict[str, Any],
    message: str,
) -> None:
    body = {"inputs": QUESTION, "parameters": parameters}
    error = check_error(
        contract, client.post(url(server, "/generate"), json=body), 422, "validation"
    )
    assert error.startswith("Input validation error: ") and message in error

    stream = sse(client, url(server, "/generate_stream"), body)
    assert stream.status == 200
    [event] = stream.events
    assert event["error_type"] == "validation" and message in event["error"]


def test_empty_inputs_are_rejected(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    response = client.post(url(server, "/generate"), json={"inputs": ""})
    assert "`inputs` cannot be empty" in check_error(contract, response, 422, "validation")


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"parameters": {}}',
        b'{"inputs": "x", "parameters": {"max_new_tokens": "5"}}',
    ],
)
def test_undecodable_bodies_are_http_422_even_for_streams(
    server: DemoServer, client: httpx.Client, contract: Contract, content: bytes
) -> None:
    for route in ("/generate", "/generate_stream"):
        response = client.post(url(server, route), content=content)
        error = check_error(contract, response, 422, "validation")
        assert error.startswith("Failed to deserialize the JSON body")


def test_chat_validation_errors(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    body = {"messages": MESSAGES, "top_p": 1.0}
    response = client.post(url(server, "/v1/chat/completions"), json=body)
    error = check_error(contract, response, 422, "validation")

    stream = chat_stream(server, client, contract, top_p=1.0)
    # Chat streams carry errors in OpenAI's shape, always with 422, then [DONE].
    assert stream.events == [{"error": {"message": error, "http_status_code": 422}}]
    assert stream.data[-1] == "[DONE]"


# -- fault knobs --------------------------------------------------------------------------------


def test_overload_is_429_or_an_event_in_a_200_stream(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    overload = {"X-Demo-Overload": "1"}
    for route, body in (
        ("/generate", {"inputs": QUESTION}),
        ("/v1/chat/completions", {"messages": MESSAGES}),
    ):
        response = client.post(url(server, route), json=body, headers=overload)
        assert check_error(contract, response, 429, "overloaded") == "Model is overloaded"

    native = sse(client, url(server, "/generate_stream"), {"inputs": QUESTION}, overload)
    assert (native.status, native.events) == (
        200,
        [{"error": "Model is overloaded", "error_type": "overloaded"}],
    )
    chat = chat_stream(server, client, contract, headers=overload)
    assert chat.events == [{"error": {"message": "Model is overloaded", "http_status_code": 422}}]
    assert chat.data[-1] == "[DONE]"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(429, "overloaded"), (500, "incomplete_generation"), (502, "http_error"), (503, "unhealthy")],
)
def test_http_status_knob_fails_every_route_before_streaming(
    server: DemoServer, client: httpx.Client, contract: Contract, status: int, error_type: str
) -> None:
    headers = {"X-Demo-Http-Status": str(status)}
    responses = [
        client.post(url(server, "/generate_stream"), json={"inputs": QUESTION}, headers=headers),
        client.post(
            url(server, "/v1/chat/completions"),
            json={"messages": MESSAGES, "stream": True},
            headers=headers,
        ),
        client.get(url(server, "/info"), headers=headers),
    ]
    for response in responses:
        assert response.headers["content-type"] == "application/json"
        check_error(contract, response, status, error_type)


def test_error_at_sends_a_generation_error_after_n_tokens(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    headers = {"X-Demo-Error-At": "3"}
    events = generate_stream(server, client, contract, headers=headers)
    *tokens, error = events
    assert len(tokens) == 3 and all(e["generated_text"] is None for e in tokens)
    assert error == {
        "error": "Request failed during generation: demo fault after 3 tokens",
        "error_type": "generation",
    }

    chat = chat_stream(server, client, contract, headers=headers)
    assert len(chat.events) == 4 and chat.events[-1]["error"]["http_status_code"] == 422
    assert chat.data[-1] == "[DONE]"

    response = client.post(url(server, "/generate"), json={"inputs": QUESTION}, headers=headers)
    check_error(contract, response, 424, "generation")

    # A fault beyond the end of the reply never fires.
    assert generate_stream(
        server, client, contract, {"max_new_tokens": 3}, {"X-Demo-Error-At": "3"}
    )[-1]["generated_text"]


def test_truncate_at_closes_the_stream_without_its_end(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    headers = {"X-Demo-Truncate-At": "4"}
    events = generate_stream(server, client, contract, headers=headers)
    assert len(events) == 4 and all(e["generated_text"] is None for e in events)

    chat = chat_stream(server, client, contract, headers=headers)
    assert len(chat.data) == 4 and "[DONE]" not in chat.data
    assert all(e["choices"][0]["finish_reason"] is None for e in chat.events)

    response = client.post(url(server, "/generate"), json={"inputs": QUESTION}, headers=headers)
    check_error(contract, response, 500, "incomplete_generation")


def test_malformed_at_sends_one_line_that_is_not_json(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    headers = {"X-Demo-Malformed-At": "2"}
    stream = sse(client, url(server, "/generate_stream"), {"inputs": QUESTION}, headers)
    bad = stream.data.pop(2)
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad)
    intact = generate_stream(server, client, contract)
    assert stream.events == intact  # the stream otherwise goes on untouched

    response = client.post(url(server, "/generate"), json={"inputs": QUESTION}, headers=headers)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_stall_at_sends_only_keep_alives_until_the_client_leaves(
    contract: Contract, client: httpx.Client
) -> None:
    # One request at a time: a stall that outlived its client would keep the next one out.
    with DemoServer(max_concurrent_requests=1, keepalive_interval_s=0.02) as server:
        body = {"inputs": QUESTION}
        stall = {"X-Demo-Stall-At": "2"}

        def overloaded() -> bool:
            events = sse(client, url(server, "/generate_stream"), body).events
            return events[-1] == {"error": "Model is overloaded", "error_type": "overloaded"}

        def released() -> bool:
            deadline = time.monotonic() + 2
            while overloaded():
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
            return True

        with client.stream(
            "POST", url(server, "/generate_stream"), json=body, headers=stall
        ) as response:
            items = iter_sse(response)
            seen = [next(items) for _ in range(5)]
            assert [kind for kind, _ in seen] == ["data", "data", "comment", "comment", "comment"]
            assert seen[2][1] == ": keep-alive"
            assert overloaded()
        assert released()

        with pytest.raises(httpx.ReadTimeout):
            client.post(url(server, "/generate"), json=body, headers=stall, timeout=0.3)
        assert released()


def test_stop_ends_stalled_streams(client: httpx.Client) -> None:
    server = DemoServer().start()
    try:
        with client.stream(
            "POST",
            url(server, "/generate_stream"),
            json={"inputs": QUESTION},
            headers={"X-Demo-Stall-At": "1"},
        ) as response:
            lines = iter_sse(response)
            assert next(lines)[0] == "data"
            started = time.monotonic()
            stopper = threading.Thread(target=server.stop)
            stopper.start()
            assert list(lines) == []  # the stream ends, without its final event
            stopper.join(5)
        assert not stopper.is_alive() and time.monotonic() - started < 3
    finally:
        server.stop()


def test_token_latency_from_header_persona_and_server(client: httpx.Client) -> None:
    body = {"inputs": QUESTION, "parameters": {"max_new_tokens": 5}}
    faults = {"verbose": Faults(token_latency_ms=200)}
    # Settings 0.5 s apart: a reply may run late on a busy machine, never early, and never as
    # late as the next setting.
    with DemoServer(token_latency_ms=100, faults=faults) as server:
        for route, persona, headers, expected in (
            ("/generate_stream", "concise", None, 0.5),
            ("/generate_stream", "verbose", None, 1.0),
            ("/generate_stream", "verbose", {"X-Demo-Token-Latency-Ms": "0"}, 0.0),
            ("/generate_stream", "concise", {"X-Demo-Token-Latency-Ms": "300"}, 1.5),
            ("/generate", "concise", None, 0.5),
        ):
            started = time.monotonic()
            response = client.post(url(server, route, persona), json=body, headers=headers)
            elapsed = time.monotonic() - started
            assert response.status_code == 200
            assert expected <= elapsed < expected + 0.5, (route, persona, headers, elapsed)


def test_persona_faults_from_config_apply_to_that_persona_only(
    client: httpx.Client, contract: Contract
) -> None:
    with DemoServer(faults={"concise": Faults(error_at=3)}) as server:
        assert generate_stream(server, client, contract)[-1]["error_type"] == "generation"
        assert generate_stream(server, client, contract, persona="verbose")[-1]["generated_text"]
        # A header overrides the persona's setting.
        events = generate_stream(server, client, contract, headers={"X-Demo-Error-At": "1"})
        assert len(events) == 2


def test_bad_knob_values_are_rejected(
    server: DemoServer, client: httpx.Client, contract: Contract
) -> None:
    response = client.post(
        url(server, "/generate"), json={"inputs": QUESTION}, headers={"X-Demo-Error-At": "soon"}
    )
    assert "X-Demo-Error-At" in check_error(contract, response, 422, "validation")
    with pytest.raises(ValueError, match="error_at"):
        Faults(error_at=-1)
    with pytest.raises(ValueError, match="http_status"):
        Faults(http_status=200)
    with pytest.raises(ValueError, match="nobody"):
        DemoServer(faults={"nobody": Faults()})


# -- load, lifecycle, CLI -----------------------------------------------------------------------


def test_many_streams_are_served_at_once() -> None:
    # Every stream sends one token, then stalls until its client leaves: a server that served
    # streams one after another could never deliver the second stream's token.
    streams = 150

    async def first_token(http: httpx.AsyncClient, base: str, n: int) -> str:
        body = {"inputs": f"question {n}", "parameters": {"max_new_tokens": 10}}
        headers = {"X-Demo-Stall-At": "1"}
        async with http.stream(
            "POST", f"{base}/generate_stream", json=body, headers=headers
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    return json.loads(line.removeprefix("data:"))["token"]["text"]
        raise AssertionError("the stream ended before its first token")

    async def run_all(base: str) -> list[str]:
        limits = httpx.Limits(max_connections=streams)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            return await asyncio.gather(*(first_token(http, base, n) for n in range(streams)))

    with DemoServer() as server:
        tokens = asyncio.run(run_all(server.base_url("verbose")))
    assert len(tokens) == streams and all(tokens)


def test_server_lifecycle_frees_thread_and_port(client: httpx.Client) -> None:
    threads = threading.active_count()
    server = DemoServer()
    assert server.start() is server
    port = server.port
    assert port > 0 and server.url == f"http://127.0.0.1:{port}"
    assert server.base_url("coder") == f"http://127.0.0.1:{port}/coder"
    with pytest.raises(ValueError, match="nobody"):
        server.base_url("nobody")
    assert client.get(url(server, "/health")).status_code == 200
    server.stop()
    server.stop()  # idempotent
    assert threading.active_count() == threads
    with pytest.raises(httpx.ConnectError):
        client.get(url(server, "/health"))
    with DemoServer(port=port) as again:  # the port is free again
        assert client.get(url(again, "/health")).status_code == 200


def test_small_answers_are_not_held_back_by_nagle(server: DemoServer, client: httpx.Client) -> None:
    fastest = float("inf")
    for _ in range(20):
        started = time.monotonic()
        assert client.get(url(server, "/info")).status_code == 200
        fastest = min(fastest, time.monotonic() - started)
    # With Nagle's algorithm on, every answer waited ~40 ms for the client's delayed ACK.
    assert fastest < 0.03, fastest


def test_cli_prints_base_urls_and_serves_until_interrupted() -> None:
    command = [sys.executable, "-m", "arena.demo_server", "--port", "0", "--token-latency-ms", "0"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in PERSONAS]
        urls = dict(line.split() for line in lines)
        assert list(urls) == [f"builtin:{persona}" for persona in PERSONAS]
        info = httpx.get(urls["builtin:markdown"] + "/info", timeout=5).json()
        assert info["model_id"] == model_id("markdown")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


# -- huggingface_hub's client -------------------------------------------------------------------


def test_hub_client_reads_text_generation_streams(server: DemoServer, client: httpx.Client) -> None:
    expected = client.post(
        url(server, "/generate"), json={"inputs": CHATML, "parameters": {"details": True}}
    ).json()

    async def read() -> list[Any]:
        async with AsyncInferenceClient(base_url=server.base_url("concise"), timeout=5) as hub:
            stream = await hub.text_generation(
                CHATML, stream=True, details=True, max_new_tokens=100
            )
            return [output async for output in stream]

    outputs = asyncio.run(read())
    assert [o.token.text for o in outputs] == [t["text"] for t in expected["details"]["tokens"]]
    assert outputs[-1].details is not None and outputs[-1].details.finish_reason == "eos_token"
    # huggingface_hub posts to "/", where return_full_text defaults to true.
    assert outputs[-1].generated_text == CHATML + expected["generated_text"]


def test_hub_client_reads_chat_streams(server: DemoServer, client: httpx.Client) -> None:
    expected = chat_reply(server, client, "coder", QUESTION)

    async def read() -> list[Any]:
        async with AsyncInferenceClient(base_url=server.base_url("coder"), timeout=5) as hub:
            stream = await hub.chat_completion(
                MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            return [chunk async for chunk in stream]

    *chunks, usage = asyncio.run(read())
    assert "".join(chunk.choices[0].delta.content for chunk in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert usage.choices == [] and usage.usage.completion_tokens == len(chunks)


@pytest.mark.parametrize(
    ("headers", "native_error"),
    [({"X-Demo-Error-At": "2"}, GenerationError), ({"X-Demo-Overload": "1"}, OverloadedError)],
)
def test_hub_client_raises_on_error_events(
    server: DemoServer, headers: dict[str, str], native_error: type[Exception]
) -> None:
    async def read(chat: bool) -> list[Any]:
        received: list[Any] = []
        async with AsyncInferenceClient(
            base_url=server.base_url("verbose"), headers=headers, timeout=5
        ) as hub:
            if chat:
                stream = await hub.chat_completion(MESSAGES, stream=True)
            else:
                stream = await hub.text_generation(QUESTION, stream=True, details=True)
            async for item in stream:
                received.append(item)
        return received

    with pytest.raises(native_error):
        asyncio.run(read(chat=False))
    with pytest.raises(TextGenerationError, match="http_status_code"):
        asyncio.run(read(chat=True))
