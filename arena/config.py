"""The model registry: ``models.yaml`` parsed and validated.

Every entry is checked on load; an error names the file, the entry, the field and what is
allowed, so a model owner can fix their file without reading this code. Unknown keys are
errors: a misspelt ``temprature`` must not be silently ignored.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

BUILTIN_SCHEME = "builtin:"
"""Endpoint prefix of models served by the built-in demo server (``builtin:<persona>``)."""

SPECIALTIES = ("general", "code", "math", "writing", "multilingual", "reasoning", "roleplay")

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ConfigError(ValueError):
    """models.yaml cannot be used; the message says where and why."""


class Protocol(StrEnum):
    """How the arena talks to an endpoint."""

    TGI = "tgi"
    """TGI's native ``/generate_stream`` (the prompt is rendered with the entry's chat template)."""
    OPENAI = "openai"
    """OpenAI-style ``/v1/chat/completions``: TGI, vLLM, SGLang, llama.cpp, Ollama, Providers."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationParameters(_Strict):
    """Sampling settings sent with every request to this model.

    In the Side-by-side tab a user may change temperature and top_p within the bounds below, and
    lower max_new_tokens (down to 1, never above the entry's value): see
    `arena.battles.Sampling`.
    """

    max_new_tokens: Annotated[int, Field(ge=1, le=32768)] = 512
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    stop: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] = []


class Timeouts(_Strict):
    """Bounds on one reply, in seconds."""

    total: Annotated[float, Field(gt=0, le=3600)] = 120.0
    """Deadline for the whole reply, from request to last token."""
    stall: Annotated[float, Field(gt=0, le=600)] = 30.0
    """Longest wait for the first token or between two tokens."""

    @model_validator(mode="after")
    def _stall_within_total(self) -> Timeouts:
        if self.stall > self.total:
            raise ValueError(f"stall ({self.stall}) must not exceed total ({self.total})")
        return self


class ModelEntry(_Strict):
    """One model of the arena."""

    name: Annotated[str, Field(pattern=_NAME_PATTERN)]
    """Public, stable identifier: stored with every vote and shown on the leaderboard."""
    display_name: Annotated[str, Field(min_length=1, max_length=80)]
    organization: Annotated[str, Field(min_length=1, max_length=80)]
    endpoint: Annotated[str, Field(min_length=1)]
    """Base URL of the server (``https://...``), or ``builtin:<persona>`` for the demo server."""
    protocol: Protocol = Protocol.OPENAI
    model_id: Annotated[str, Field(min_length=1)] = "tgi"
    """The ``model`` field of chat requests: "tgi" for TGI; vLLM, Ollama, Providers want an id."""
    token_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    """Name of the environment variable holding the endpoint's token (never the token itself)."""
    parameters: GenerationParameters = GenerationParameters()
    timeouts: Timeouts = Timeouts()
    system_prompt: str = ""
    chat_template: Annotated[str, Field(min_length=1)] | None = None
    """Jinja template rendering messages to a prompt, for ``protocol: tgi``; ChatML when absent."""
    specialties: Annotated[list[str], Field(min_length=1)] = ["general"]
    license: Annotated[str, Field(min_length=1)] = "unknown"
    description: str = ""
    url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    """Model card or home page, linked from the leaderboard."""
    weight: Annotated[float, Field(ge=0.0)] = 1.0
    """Relative chance of being drawn for an anonymous battle; 0 keeps it out of battles."""
    side_by_side: bool = True
    """Offered in the named Side-by-side tab; false keeps it out of that tab, so that it plays
    only anonymous battles (e.g. an unreleased model)."""
    enabled: bool = True

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url_or_builtin(cls, value: str) -> str:
        if value.startswith(BUILTIN_SCHEME):
            if not re.fullmatch(r"[a-z0-9-]+", value.removeprefix(BUILTIN_SCHEME)):
                raise ValueError(
                    "builtin endpoints look like 'builtin:<persona>', e.g. 'builtin:concise'"
                )
            return value
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s):// URL or 'builtin:<persona>'")
        return value.rstrip("/")

    @field_validator("specialties")
    @classmethod
    def _known_specialties(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(SPECIALTIES))
        if unknown:
            raise ValueError(f"unknown specialties {unknown}; allowed: {', '.join(SPECIALTIES)}")
        return value

    @property
    def is_demo(self) -> bool:
        """Served by the built-in demo server rather than a real model."""
        return self.endpoint.startswith(BUILTIN_SCHEME)

    @property
    def persona(self) -> str | None:
        """The demo persona name for ``builtin:`` endpoints."""
        return self.endpoint.removeprefix(BUILTIN_SCHEME) if self.is_demo else None

    def token(self) -> str | None:
        """The endpoint token read from the environment, if this entry names a variable."""
        return os.environ.get(self.token_env) if self.token_env else None


class Registry(_Strict):
    """All models of the arena, in file order."""

    models: Annotated[list[ModelEntry], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> Registry:
        seen: set[str] = set()
        for entry in self.models:
            if entry.name in seen:
                raise ValueError(f"model name {entry.name!r} appears more than once")
            seen.add(entry.name)
        return self

    @property
    def enabled(self) -> list[ModelEntry]:
        return [m for m in self.models if m.enabled]

    @property
    def battle_candidates(self) -> list[ModelEntry]:
        """Models that may be drawn for an anonymous battle."""
        return [m for m in self.enabled if m.weight > 0]

    @property
    def side_by_side(self) -> list[ModelEntry]:
        """Models a user may pick by name in the Side-by-side tab."""
        return [m for m in self.enabled if m.side_by_side]

    def get(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KeyError(f"no model named {name!r} in the registry")


def parse_registry(text: str, source: str = "models.yaml") -> Registry:
    """Validate registry YAML text; ``source`` names it in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'models' list at the top level")
    try:
        registry = Registry.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, data, source)) from None
    _check_tokens(registry, source)
    return registry


def load_registry(path: str | os.PathLike[str]) -> Registry:
    """Read and validate a models file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the models file: {exc.strerror}") from exc
    return parse_registry(text, source=str(path))


def _check_tokens(registry: Registry, source: str) -> None:
    """An enabled model whose token variable is unset would fail every request: say so at start."""
    for index, entry in enumerate(registry.models):
        if entry.enabled and entry.token_env and not os.environ.get(entry.token_env):
            raise ConfigError(
                f"{source}: models[{index}] ({entry.name!r}): token_env names {entry.token_env!r}, "
                "but that environment variable is not set (export it, or set enabled: false)"
            )


def _describe(exc: ValidationError, data: dict[str, Any], source: str) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s):"]
    for error in exc.errors():
        loc = list(error["loc"])
        where = _location(loc, data)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see the README for the allowed fields)"
        elif error["type"] == "missing":
            message = "required field is missing"
        lines.append(f"  - {where}: {message}")
    return "\n".join(lines)


def _location(loc: list[Any], data: dict[str, Any]) -> str:
    """``models[2] ('my-model') field 'parameters.top_p'`` from a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        index = loc[1]
        models = data.get("models")
        name = None
        if isinstance(models, list) and index < len(models) and isinstance(models[index], dict):
            name = models[index].get("name")
        entry = f"models[{index}]" + (f" ({name!r})" if name else "")
        field = ".".join(str(part) for part in loc[2:])
        return f"{entry} field {field!r}" if field else entry
    return "top level" if not loc else f"field {'.'.join(str(p) for p in loc)!r}"
