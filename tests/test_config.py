"""models.yaml validation: every field checked, every error names the file, entry and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from arena.config import ConfigError, Protocol, load_registry, parse_registry

REPO = Path(__file__).resolve().parent.parent

VALID_ENTRY = {
    "name": "zephyr-7b",
    "display_name": "Zephyr 7B",
    "organization": "HF H4",
    "endpoint": "https://tgi.example.org/",
}


def registry_text(**overrides: object) -> str:
    entry = {**VALID_ENTRY, **overrides}
    return yaml.safe_dump({"models": [entry]})


def problem(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="my-models.yaml")
    return str(caught.value)


def test_shipped_registry_is_valid_and_runs_on_demo_models():
    registry = load_registry(REPO / "models.yaml")
    assert len(registry.battle_candidates) >= 2
    assert all(m.is_demo for m in registry.enabled)
    assert {m.persona for m in registry.enabled} <= {"concise", "verbose", "markdown", "coder"}


def test_minimal_entry_gets_documented_defaults():
    entry = parse_registry(registry_text()).models[0]
    assert entry.endpoint == "https://tgi.example.org"  # trailing slash dropped
    assert entry.protocol is Protocol.OPENAI
    assert entry.model_id == "tgi"
    assert entry.parameters.max_new_tokens == 512
    assert entry.timeouts.total == 120 and entry.timeouts.stall == 30
    assert entry.enabled and entry.weight == 1.0 and not entry.is_demo
    assert entry.side_by_side  # offered in the Side-by-side tab unless the owner says otherwise


def test_full_entry_round_trips_every_field():
    text = textwrap.dedent(
        """
        models:
          - name: llama-3.1-8b
            display_name: Llama 3.1 8B
            organization: Meta
            endpoint: http://127.0.0.1:8080/v1
            protocol: tgi
            model_id: meta-llama/Llama-3.1-8B-Instruct
            token_env: PATH
            parameters: {max_new_tokens: 64, temperature: 0, top_p: 1, stop: ["</s>"]}
            timeouts: {total: 10, stall: 2}
            system_prompt: Be brief.
            chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}"
            specialties: [code, math]
            license: llama3.1
            description: An 8B instruct model.
            weight: 2.5
            side_by_side: false
            enabled: false
        """
    )
    entry = parse_registry(text).models[0]
    assert entry.protocol is Protocol.TGI
    assert entry.parameters.stop == ["</s>"]
    assert entry.timeouts.stall == 2
    assert entry.specialties == ["code", "math"]
    assert entry.token() is not None  # PATH is always set
    assert entry.weight == 2.5 and not entry.enabled and not entry.side_by_side


@pytest.mark.parametrize(
    ("overrides", "field", "hint"),
    [
        ({"name": "has space"}, "name", "pattern"),
        ({"display_name": ""}, "display_name", "at least 1"),
        ({"endpoint": "ftp://x"}, "endpoint", "http(s)://"),
        ({"endpoint": "builtin:No Such"}, "endpoint", "builtin:<persona>"),
        ({"protocol": "grpc"}, "protocol", "'tgi' or 'openai'"),
        ({"token_env": "hf_abc-123"}, "token_env", "pattern"),
        ({"parameters": {"temperature": 3}}, "parameters.temperature", "less than or equal to 2"),
        ({"parameters": {"top_p": 0}}, "parameters.top_p", "greater than 0"),
        ({"parameters": {"max_new_tokens": 0}}, "parameters.max_new_tokens", "greater than"),
        ({"parameters": {"stop": ["a", "b", "c", "d", "e"]}}, "parameters.stop", "at most 4"),
        ({"timeouts": {"total": 5, "stall": 10}}, "timeouts", "must not exceed total"),
        ({"timeouts": {"stall": -1}}, "timeouts.stall", "greater than 0"),
        ({"specialties": ["cooking"]}, "specialties", "allowed: general"),
        ({"specialties": []}, "specialties", "at least 1"),
        ({"weight": -1}, "weight", "greater than or equal to 0"),
        ({"enabled": "maybe"}, "enabled", "valid boolean"),
        ({"side_by_side": "hidden"}, "side_by_side", "valid boolean"),
        ({"temprature": 0.5}, "temprature", "unknown key"),
        ({"parameters": {"top_k": 5}}, "parameters.top_k", "unknown key"),
    ],
)
def test_bad_field_names_file_entry_field_and_rule(overrides, field, hint):
    message = problem(registry_text(**overrides))
    assert message.startswith("my-models.yaml:")
    name = overrides.get("name", VALID_ENTRY["name"])
    assert f"models[0] ({name!r}) field {field!r}" in message
    assert hint in message


@pytest.mark.parametrize("missing", ["name", "display_name", "organization", "endpoint"])
def test_required_fields(missing):
    entry = {k: v for k, v in VALID_ENTRY.items() if k != missing}
    message = problem(yaml.safe_dump({"models": [entry]}))
    assert f"field {missing!r}: required field is missing" in message


def test_side_by_side_offers_enabled_models_not_hidden_from_it():
    entries = [
        {**VALID_ENTRY, "name": "public"},
        {**VALID_ENTRY, "name": "unreleased", "side_by_side": False},
        {**VALID_ENTRY, "name": "off", "enabled": False},
        {**VALID_ENTRY, "name": "battle-only", "weight": 0},
    ]
    registry = parse_registry(yaml.safe_dump({"models": entries}))
    assert [m.name for m in registry.side_by_side] == ["public", "battle-only"]
    # A model hidden from the Side-by-side tab still plays anonymous battles.
    assert [m.name for m in registry.battle_candidates] == ["public", "unreleased"]


def test_duplicate_names_are_refused():
    text = yaml.safe_dump({"models": [VALID_ENTRY, VALID_ENTRY]})
    assert "'zephyr-7b' appears more than once" in problem(text)


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("models: [", "not valid YAML"),
        ("- just a list", "expected a mapping"),
        ("models: []", "at least 1"),
        ("modles: []", "unknown key"),
    ],
)
def test_bad_documents(text, hint):
    assert hint in problem(text)


def test_unset_token_variable_of_enabled_model_is_an_error(monkeypatch):
    monkeypatch.delenv("ARENA_TEST_TOKEN", raising=False)
    message = problem(registry_text(token_env="ARENA_TEST_TOKEN"))
    assert "ARENA_TEST_TOKEN" in message and "not set" in message
    # A disabled model may name a variable that is not set yet.
    parse_registry(registry_text(token_env="ARENA_TEST_TOKEN", enabled=False))


def test_unreadable_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_registry(tmp_path / "missing.yaml")
