"""Prompt categories: each tag on realistic prompts, its hard negatives, and the language."""

from __future__ import annotations

import pytest

from arena.categories import TAGS, UNDETERMINED, PromptCategories, categorize, language


def _user(*turns: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": t} for t in turns]


def _tags(*turns: str) -> frozenset[str]:
    return categorize(_user(*turns)).tags


@pytest.mark.parametrize(
    "prompt",
    [
        "Write a Python function that checks whether a number is prime",
        "fix this:\n```js\nconst x = [1, 2, 3].map(n => n * 2)\n```",
        "why does this fail?\ndef f(x):\n    return x * 2",
        "How do I undo the last commit in git?",
        "Write a script to rename all files in a folder",
        "What's the time complexity of quicksort?",
    ],
)
def test_coding(prompt: str) -> None:
    assert "coding" in _tags(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "I want to code-switch between languages when I talk to my grandmother",
        "What's the dress code for a wedding in Italy?",
        "What is the zip code of the Empire State Building?",
        "Compile a list of restaurants in Rome",
        "Is public transport in Lisbon any good?",
        "Write a script for a short film about a robot",
    ],
)
def test_not_coding(prompt: str) -> None:
    assert "coding" not in _tags(prompt)


def test_code_in_a_reply_makes_the_conversation_coding() -> None:
    conversation = [
        {"role": "user", "content": "How do I reverse a list?"},
        {"role": "assistant", "content": "Use slicing:\n```python\nitems[::-1]\n```"},
    ]
    assert "coding" in categorize(conversation).tags


@pytest.mark.parametrize(
    "prompt",
    [
        "Solve for x: 2x + 3 = 11",
        "What is 15% of 80?",
        "What is the derivative of x^3?",
        "Prove that the square root of 2 is irrational",
        r"Simplify $\frac{a^2 - b^2}{a - b}$",
        "what's 1234 * 5678",
    ],
)
def test_math(prompt: str) -> None:
    assert "math" in _tags(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "How do I learn math as an adult?",
        "I need help with my math homework motivation, any tips?",
        "Recommend a movie like The Matrix",
        "My landlord and I need to solve a problem with the heating",
        "Open 24/7 pharmacies near the station?",
    ],
)
def test_not_math(prompt: str) -> None:
    assert "math" not in _tags(prompt)


def test_a_poem_about_math_is_creative_writing_not_math() -> None:
    # Documented choice: the subject of a poem is not a mathematical task.
    assert _tags("Write a poem about math") == {"creative_writing"}


@pytest.mark.parametrize(
    "prompt",
    [
        "Write a haiku about autumn",
        "Tell me a joke about programmers",
        "Compose a short story where a cat becomes mayor",
        "Write the next chapter.",
        "Let's role-play: you are a pirate captain",
        "Write a script for a short film about a robot",
    ],
)
def test_creative_writing(prompt: str) -> None:
    assert "creative_writing" in _tags(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "Write a cover letter for a barista job",
        "Summarize the plot of Hamlet",
        "Write a polite email declining the offer",
        "Write a summary of chapter 3 of my textbook",
    ],
)
def test_not_creative_writing(prompt: str) -> None:
    assert "creative_writing" not in _tags(prompt)


def test_multi_turn_counts_user_turns() -> None:
    one = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert "multi_turn" not in categorize(one).tags
    two = [*one, {"role": "user", "content": "How are you?"}]
    assert "multi_turn" in categorize(two).tags


def test_long_prompt_threshold() -> None:
    assert "long_prompt" in _tags("a" * 1000)
    assert "long_prompt" not in _tags("a" * 999)
    assert "long_prompt" in categorize(_user("a" * 50), long_prompt_chars=50).tags


@pytest.mark.parametrize(
    ("reply", "refused"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("As an AI language model, I cannot provide medical diagnoses.", True),
        ("I must decline this request because it violates my guidelines.", True),
        ("I can't stress enough how important sleep is. Here are five tips: ...", False),
        ("I'm sorry to hear that your cat is sick. Here is what you can do: ...", False),
        ("Sure! " + "Here is the plan. " * 30 + "I can't help with taxes, though.", False),
    ],
)
def test_refusal(reply: str, refused: bool) -> None:
    conversation = [{"role": "user", "content": "a question"}]
    conversation.append({"role": "assistant", "content": reply})
    assert ("refusal" in categorize(conversation).tags) is refused


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("What is the capital of Australia?", "en"),
        ("Wie kann ich eine Liste in Python sortieren?", "de"),
        ("Quelle est la capitale de l'Australie ?", "fr"),
        ("Qual é a capital da Austrália? Preciso saber para a escola.", "pt"),
        ("澳大利亚的首都是哪里？", "zh"),
        ("オーストラリアの首都はどこですか？", "ja"),
        ("ok thanks", UNDETERMINED),
        ("hi", UNDETERMINED),
        ("```python\nprint('hello world, this is plenty of text')\n```", UNDETERMINED),
    ],
)
def test_language(text: str, code: str) -> None:
    assert language(text) == code


def test_language_ignores_code_and_links() -> None:
    # With the code and the link, py3langid calls this English.
    prompt = (
        "Pourquoi ce code plante ?\n```python\nfor item in items:\n"
        "    print(item.name, item.value)\n    total = total + item.value\nreturn total\n```\n"
        "https://stackoverflow.com/questions/12345/how-to-sum-values-in-python-list"
    )
    assert categorize(_user(prompt)).language == "fr"


def test_flags_cover_every_tag() -> None:
    categories = PromptCategories(frozenset({"math"}), "en")
    assert categories.flags() == {f"is_{t}": t == "math" for t in TAGS}


def test_gradio_content_parts() -> None:
    conversation = [{"role": "user", "content": [{"type": "text", "text": "Write a limerick"}]}]
    assert categorize(conversation).tags == {"creative_writing"}
