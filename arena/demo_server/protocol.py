"""TGI's wire format: request bodies, validation, response bodies and stream events.

Shapes, error bodies and validation messages follow TGI 3.3: its OpenAPI spec, and its router's
code where the spec is vague or wrong (noted where it matters), so a client that works against the
demo server works against real TGI.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arena.demo_server.personas import Generation, Token, generate, last_user_turn, tokenize

TGI_VERSION = "3.3.6"
MAX_INPUT_TOKENS = 4096
MAX_TOTAL_TOKENS = 8192
MAX_STOP_SEQUENCES = 4
MAX_TOP_N_TOKENS = 5
SYSTEM_FINGERPRINT = f"{TGI_VERSION}-native"
DONE = "data: [DONE]\n\n"


def model_id(persona: str) -> str:
    """The ``model_id`` a persona reports in ``/info`` and in chat responses."""
    return f"open-feedback-arena/demo-{persona}"


class TGIError(Exception):
    """An error answered with TGI's ``ErrorResponse`` body (or event, in a stream)."""

    def __init__(self, status: int, error: str, error_type: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.error_type = error_type

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_type": self.error_type}


def validation_error(message: str) -> TGIError:
    return TGIError(422, f"Input validation error: {message}", "validation")


def overloaded() -> TGIError:
    return TGIError(429, "Model is overloaded", "overloaded")


def generation_error(after: int) -> TGIError:
    message = f"Request failed during generation: demo fault after {after} tokens"
    return TGIError(424, message, "generation")


def incomplete() -> TGIError:
    return TGIError(500, "Incomplete generation", "incomplete_generation")


# Request bodies. Strict like TGI's serde structs: "5" is not a number. Unknown fields are
# ignored, as serde does; so are the parameters a demo cannot honour (grammar, watermark...).

_U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
_U64 = Annotated[int, Field(ge=0, le=2**64 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class GenerateParameters(_Strict):
    best_of: _U32 | None = None
    decoder_input_details: bool = False
    details: bool = False  # the spec says the default is true; TGI's code defaults to false
    do_sample: bool = False
    frequency_penalty: float | None = None
    max_new_tokens: _U32 | None = None
    repetition_penalty: float | None = None
    return_full_text: bool | None = None
    seed: _U64 | None = None
    stop: list[str] = []
    temperature: float | None = None
    top_k: int | None = None
    top_n_tokens: _U32 | None = None
    top_p: float | None = None
    truncate: _U32 | None = None
    typical_p: float | None = None


class GenerateRequest(_Strict):
    """``/generate`` and ``/generate_stream`` bodies; ``stream`` is only read by ``POST /``."""

    inputs: str
    parameters: GenerateParameters = GenerateParameters()
    stream: bool = False


class _ContentChunk(_Strict):
    type: str
    text: str = ""


class ChatMessage(_Strict):
    role: str
    content: str | list[_ContentChunk] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(chunk.text for chunk in self.content if chunk.type == "text")
        return self.content or ""


class _StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    messages: list[ChatMessage]
    max_tokens: _U32 | None = None
    stop: list[str] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: _U64 | None = None
    logprobs: bool | None = None
    top_logprobs: _U32 | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def generate_parameters(self) -> GenerateParameters:
        """The native parameters TGI derives from a chat request (``try_into_generate``)."""
        greedy = self.temperature == 0.0  # TGI's only way to ask for greedy decoding in chat
        return GenerateParameters.model_construct(
            details=True,
            do_sample=not greedy,
            temperature=None if greedy else self.temperature,
            top_p=self.top_p,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=None if self.presence_penalty is None else self.presence_penalty + 2,
            max_new_tokens=self.max_tokens,
            stop=self.stop or [],
            seed=self.seed,
            top_n_tokens=self.top_logprobs,
        )


_Body = TypeVar("_Body", bound=BaseModel)


def parse_body(body: bytes, model: type[_Body]) -> _Body:
    """The decoded request body; an HTTP 422 ``TGIError`` when it is not JSON of that shape.

    (TGI's framework answers plain-text 400/422 here; the demo keeps TGI's error body.)
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        detail = f"{where}: {error['msg']}" if where else error["msg"]
        message = f"Failed to deserialize the JSON body into the target type: {detail}"
        raise TGIError(422, message, "validation") from None


@dataclass(frozen=True)
class Job:
    """A validated request: what will be generated, and the numbers reported about it."""

    generation: Generation
    prompt_tokens: list[Token]
    seed: int | None

    @property
    def input_length(self) -> int:
        return len(self.prompt_tokens)


def plan(persona: str, params: GenerateParameters, prompt: str, stream: bool) -> Job:
    """Validate like TGI's router (same checks, messages and order), then run the persona."""
    best_of = 1 if params.best_of is None else params.best_of
    stop_count, top_n = len(params.stop), params.top_n_tokens or 0
    checks = (
        (stream and best_of != 1, "`best_of` != 1 is not supported when streaming tokens"),
        (
            stream and params.decoder_input_details,
            "`decoder_input_details` == true is not supported when streaming tokens",
        ),
        (best_of != 1, "`best_of` != 1 is not allowed for this endpoint"),
        (_at_most(params.temperature, 0), "`temperature` must be strictly positive"),
        (_at_most(params.repetition_penalty, 0), "`repetition_penalty` must be strictly positive"),
        (
            params.frequency_penalty is not None and not -2 <= params.frequency_penalty <= 2,
            "`frequency_penalty` must be >= -2.0 and <= 2.0",
        ),
        # The spec allows top_p == 1.0; TGI's validation rejects it (and typical_p == 1.0).
        (_outside_unit(params.top_p), "`top_p` must be > 0.0 and < 1.0"),
        (_outside_unit(params.typical_p), "`typical_p` must be > 0.0 and < 1.0"),
        (_at_most(params.top_k, 0), "`top_k` must be strictly positive"),
        (params.max_new_tokens == 0, "`max_new_tokens` must be strictly positive"),
        (
            stop_count > MAX_STOP_SEQUENCES,
            f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {stop_count}",
        ),
        (
            top_n > MAX_TOP_N_TOKENS,
            f"`top_n_tokens` must be >= 0 and <= {MAX_TOP_N_TOKENS}. Given: {top_n}",
        ),
        (not prompt, "`inputs` cannot be empty"),
        (
            params.truncate is not None and not 0 < params.truncate <= MAX_INPUT_TOKENS,
            "`truncate` must be strictly positive and less than "
            f"{MAX_INPUT_TOKENS}. Given: {params.truncate}",
        ),
    )
    for failed, message in checks:
        if failed:
            raise validation_error(message)

    prompt_tokens = tokenize(prompt)
    if params.truncate is not None:
        prompt_tokens = prompt_tokens[-params.truncate :]
    input_length = len(prompt_tokens)
    max_new_tokens = params.max_new_tokens
    if max_new_tokens is None:
        max_new_tokens = MAX_TOTAL_TOKENS - input_length
    if input_length + max_new_tokens > MAX_TOTAL_TOKENS:
        raise validation_error(
            f"`inputs` tokens + `max_new_tokens` must be <= {MAX_TOTAL_TOKENS}. "
            f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )
    if input_length > MAX_INPUT_TOKENS:
        raise validation_error(
            f"`inputs` must have less than {MAX_INPUT_TOKENS} tokens. Given: {input_length}"
        )

    generation = generate(persona, last_user_turn(prompt), max_new_tokens, params.stop)
    seed = None
    if params.do_sample:  # TGI reports a seed only when sampling; ours is stable, not random
        digest = hashlib.sha256(prompt.encode()).digest()
        seed = params.seed if params.seed is not None else int.from_bytes(digest[:7], "big")
    return Job(generation, prompt_tokens, seed)


def _at_most(value: float | None, bound: float) -> bool:
    return value is not None and value <= bound


def _outside_unit(value: float | None) -> bool:
    return value is not None and not 0 < value < 1


# Response bodies.


def info(persona: str, max_concurrent_requests: int) -> dict[str, Any]:
    """``GET /info``."""
    return {
        "model_id": model_id(persona),
        "model_sha": None,
        "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": max_concurrent_requests,
        "max_best_of": 1,
        "max_stop_sequences": MAX_STOP_SEQUENCES,
        "max_input_tokens": MAX_INPUT_TOKENS,
        "max_total_tokens": MAX_TOTAL_TOKENS,
        "validation_workers": 1,
        "max_client_batch_size": 1,
        "router": "text-generation-router",
        "version": TGI_VERSION,
        "sha": None,
        "docker_label": None,
    }


def models(persona: str) -> dict[str, Any]:
    """``GET /v1/models``: the spec documents a bare ``ModelInfo``, TGI answers a list of them."""
    name = model_id(persona)
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": name}],
    }


def generate_response(job: Job, params: GenerateParameters, text_prefix: str) -> dict[str, Any]:
    """``POST /generate``: ``GenerateResponse``, with ``Details`` when asked for."""
    details = None
    if params.details or params.decoder_input_details:
        prefill = [
            # The first prompt token has no logprob: nothing precedes it.
            {"id": token.id, "text": token.text, "logprob": token.logprob if i else None}
            for i, token in enumerate(job.prompt_tokens)
        ]
        details = {
            "finish_reason": job.generation.finish_reason,
            "generated_tokens": len(job.generation.tokens),
            "seed": job.seed,
            "prefill": prefill if params.decoder_input_details else [],
            "tokens": [token.as_json() for token in job.generation.tokens],
        }
    return {"generated_text": text_prefix + job.generation.text, "details": details}


def chat_completion(persona: str, job: Job, logprobs: bool) -> dict[str, Any]:
    """Non-streaming ``POST /v1/chat/completions``: ``ChatCompletion``."""
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": job.generation.text},
        "logprobs": _chat_logprobs(job.generation.tokens) if logprobs else None,
        "finish_reason": _chat_finish_reason(job.generation.finish_reason),
    }
    return {
        "id": "",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id(persona),
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [choice],
        "usage": _usage(job),
    }


def _chat_finish_reason(finish_reason: str) -> str:
    # TGI's FinishReason::format(true) renames only eos_token; "stop_sequence" stays as it is.
    return "stop" if finish_reason == "eos_token" else finish_reason


def _chat_logprobs(tokens: list[Token]) -> dict[str, Any]:
    return {
        "content": [
            {"token": token.text, "logprob": token.logprob, "top_logprobs": []} for token in tokens
        ]
    }


def _usage(job: Job) -> dict[str, int]:
    completion = len(job.generation.tokens)
    return {
        "prompt_tokens": job.input_length,
        "completion_tokens": completion,
        "total_tokens": job.input_length + completion,
    }


# Stream events.


def sse(payload: Any) -> str:
    """One server-sent ``data:`` event holding compact JSON."""
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


class Dialect(Protocol):
    """How one streaming protocol frames tokens, errors and the end of a stream."""

    def token(self, job: Job, index: int) -> str: ...
    def error(self, error: TGIError) -> str: ...
    def done(self, job: Job) -> str: ...


class GenerateStream:
    """``/generate_stream``: one ``StreamResponse`` per token; the last one ends the stream."""

    def __init__(self, details: bool, text_prefix: str) -> None:
        self._details = details
        self._prefix = text_prefix

    def token(self, job: Job, index: int) -> str:
        tokens = job.generation.tokens
        event: dict[str, Any] = {
            "index": index + 1,  # TGI counts from 1
            "token": tokens[index].as_json(),
            "generated_text": None,
            "details": None,
        }
        if index == len(tokens) - 1:
            event["generated_text"] = self._prefix + job.generation.text
            if self._details:
                event["details"] = {
                    "finish_reason": job.generation.finish_reason,
                    "generated_tokens": len(tokens),
                    "input_length": job.input_length,
                    "seed": job.seed,
                }
        return sse(event)

    def error(self, error: TGIError) -> str:
        return sse(error.body())

    def done(self, job: Job) -> str:
        return ""  # no [DONE]: the event carrying generated_text is the last


class ChatStream:
    """Streaming ``/v1/chat/completions``: ``ChatCompletionChunk`` events, then ``[DONE]``."""

    def __init__(self, persona: str, logprobs: bool, include_usage: bool) -> None:
        self._model = model_id(persona)
        self._logprobs = logprobs
        self._include_usage = include_usage
        self._created = int(time.time())

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None) -> str:
        return sse(
            {
                "id": "",
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": choices,
                "usage": usage,
            }
        )

    def token(self, job: Job, index: int) -> str:
        tokens = job.generation.tokens
        token = tokens[index]
        last = index == len(tokens) - 1
        choice = {
            "index": 0,
            # Special tokens (the final EOS) go out as empty content, as in TGI.
            "delta": {"role": "assistant", "content": "" if token.special else token.text},
            "logprobs": _chat_logprobs([token]) if self._logprobs else None,
            "finish_reason": _chat_finish_reason(job.generation.finish_reason) if last else None,
        }
        return self._chunk([choice], None)

    def error(self, error: TGIError) -> str:
        # Whatever the cause, TGI's chat error events say 422; the stream still ends in [DONE].
        return sse({"error": {"message": error.error, "http_status_code": 422}}) + DONE

    def done(self, job: Job) -> str:
        if not self._include_usage:
            return DONE
        # As the spec's StreamOptions says: a last chunk with the usage and no choices.
        return self._chunk([], _usage(job)) + DONE
