"""PII scrubbing: a corpus of planted secrets must not survive, hard negatives must not change.

``tests/data/pii_corpus.jsonl`` holds one case a line: ``text``, ``secrets`` (exact substrings that
must be gone after scrubbing), ``types`` (the finding type of each secret, a key of
``PLACEHOLDERS``) and optionally ``keep`` (substrings that must survive, to catch over-scrubbing).
Lines with no secrets are hard negatives and must come back unchanged. The secrets are fake: made
up with a fixed seed, in each vendor's format, or documented test numbers (cards, IBANs).

Throughput is measured, not asserted: ``PYTHONPATH=. .venv/bin/python tests/test_pii.py`` scrubs
Markdown and Python files of the installed packages cut into 2 KB messages, and the corpus, and
prints MB/s, µs per KB and µs per message (single core).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from arena import pii
from arena.pii import PLACEHOLDERS, scrub, scrub_with_report

CORPUS_PATH = Path(__file__).parent / "data" / "pii_corpus.jsonl"
CORPUS: list[dict] = [json.loads(line) for line in CORPUS_PATH.read_text().splitlines()]
POSITIVES = [case for case in CORPUS if case["secrets"]]
NEGATIVES = [case for case in CORPUS if not case["secrets"]]


def _case_id(case: dict) -> str:
    kinds = ",".join(sorted(set(case["types"]))) or "negative"
    return f"{kinds}:{case['text'][:30]}"


def test_corpus_is_big_and_covers_every_type() -> None:
    assert len(CORPUS) >= 60
    assert len(NEGATIVES) >= 20
    assert {kind for case in CORPUS for kind in case["types"]} == set(PLACEHOLDERS)
    for case in CORPUS:
        assert len(case["secrets"]) == len(case["types"])
        assert all(secret in case["text"] for secret in case["secrets"])


@pytest.mark.parametrize("case", POSITIVES, ids=_case_id)
def test_planted_secrets_are_replaced_by_typed_placeholders(case: dict) -> None:
    out, report = scrub_with_report(case["text"])
    for secret in case["secrets"]:
        assert secret not in out, f"{secret!r} survived in {out!r}"
    for kind in set(case["types"]):
        assert PLACEHOLDERS[kind] in out
        assert report[kind] >= 1
    for kept in case.get("keep", []):
        assert kept in out, f"{kept!r} was scrubbed: {out!r}"
    # The report counts exactly the placeholders written.
    for kind, count in report.items():
        assert out.count(PLACEHOLDERS[kind]) == count


@pytest.mark.parametrize("case", NEGATIVES, ids=_case_id)
def test_hard_negatives_come_back_unchanged(case: dict) -> None:
    assert scrub_with_report(case["text"]) == (case["text"], Counter())


@pytest.mark.parametrize("case", CORPUS, ids=_case_id)
def test_scrubbing_is_idempotent(case: dict) -> None:
    once = scrub(case["text"])
    assert scrub_with_report(once) == (once, Counter())


def test_placeholders_are_documented() -> None:
    assert pii.__doc__ is not None
    for kind, placeholder in PLACEHOLDERS.items():
        assert placeholder == f"<{kind}>"
        assert f"``{kind}``" in pii.__doc__ and f"``{placeholder}``" in pii.__doc__


def test_empty_and_plain_text() -> None:
    assert scrub_with_report("") == ("", Counter())
    plain = "Which model writes better haiku? Both were fine, but B rhymed."
    assert scrub(plain) is plain or scrub(plain) == plain


def test_whole_conversation_mixes_types_and_counts_them() -> None:
    text = (
        "user: I'm at 203.0.113.9, mail me at a.b@example.org or call +1 415 555 0100.\n"
        "assistant: Don't paste keys like hf_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB here!\n"
        "user: fine, my card 4111-1111-1111-1111 then"
    )
    out, report = scrub_with_report(text)
    assert report == Counter(
        {"IP_ADDRESS": 1, "EMAIL": 1, "PHONE": 1, "API_KEY": 1, "CREDIT_CARD": 1}
    )
    assert out.startswith("user: I'm at <IP_ADDRESS>, mail me at <EMAIL> or call <PHONE>.\n")


@pytest.mark.parametrize(
    "text",
    [
        "ssh root@127.0.0.1 -p 2222",
        "uvicorn app:app --host 0.0.0.0 --port 8000",
        "curl http://[::1]:7860/ and netmask 255.255.0.0, multicast 224.0.0.251",
        "pip install 'numpy>=1.26.4' 'packaging==1.0.0.0' # section 7.4.7.1",
        "np.random.default_rng(5292808890472453840); seed = 4111111111111111",
        "Timestamp('2014-10-11 11:00:01.12345678'); ISBN 978-0137-02741-5; MA 01760-2098",
        "key: PositionalIndexer2D; password = credentials.password; secret_key = s3_conn",
        'passwd: "string"; api_key = os.environ["API_KEY"]; token = get_token()',
        "postgres://user:pass@localhost:5432/db and s3://{access_key}:{secret_key}@bucket",
        "return x\n\n\n@final\n@dataclasses.dataclass(frozen=True)\nclass A: ...",
        "tasks: task-1234567890abcdefghijKLMN, disk-ABCDEFGHIJ0123456789, my_hf_token_getter",
    ],
)
def test_more_hard_negatives(text: str) -> None:
    assert scrub(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A card number is found by its cue word even when its length is unusual.
        ("visa 4222222222222", "visa <CREDIT_CARD>"),
        # Bare digits are a phone number only next to a cue word.
        ("order 4155550123 shipped", "order 4155550123 shipped"),
        ("text me at 4155550123", "text me at <PHONE>"),
        # An IBAN glued to the next one, and one followed by capitals.
        (
            "GB82WEST12345698765432 NL91ABNA0417164300 EUR",
            "<IBAN> <IBAN> EUR",
        ),
        # A small address needs a cue; a large one does not.
        ("ping 10.0.0.5 now", "ping <IP_ADDRESS> now"),
        ("see 10.0.0.5", "see 10.0.0.5"),
        ("hit from 172.16.254.1", "hit from <IP_ADDRESS>"),
        # Credentials are cut out of the URL, which stays usable.
        (
            "git clone https://oauth2:glabc123XYZsecret@gitlab.example.com/g/p.git",
            "git clone https://<URL_CREDENTIALS>@gitlab.example.com/g/p.git",
        ),
        # A password literal; a bearer value.
        ("PGPASSWORD='n0t-s0-s3cret' psql", "PGPASSWORD='<SECRET>' psql"),
        ("-H 'authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l'", None),
    ],
)
def test_specific_behaviours(text: str, expected: str | None) -> None:
    out = scrub(text)
    if expected is None:
        assert "<SECRET>" in out
    else:
        assert out == expected


def test_text_whose_lowercase_changes_length() -> None:
    # "İ".lower() is two characters: the secret search must still line up with the text.
    text = "İstanbul ofisi: api_key = 'a8f5f167f44f4964e6c998dee827110c' İİİ"
    out, report = scrub_with_report(text)
    assert out == "İstanbul ofisi: api_key = '<SECRET>' İİİ"
    assert report == Counter({"SECRET": 1})


def test_validators() -> None:
    assert pii._luhn("4111111111111111") and not pii._luhn("4111111111111112")
    assert pii._iban_valid("DE89370400440532013000")
    assert not pii._iban_valid("DE89370400440532013001")
    assert pii._entropy("aaaa") == 0 and pii._entropy("abcd") == 2


# --- throughput ---------------------------------------------------------------------------------


def _bench_messages(pattern: str, limit_bytes: int, size: int = 2048) -> list[str]:
    """Files of the installed packages matching ``pattern``, cut into ``size``-char messages."""
    import sysconfig

    root = Path(sysconfig.get_paths()["purelib"])
    messages: list[str] = []
    total = 0
    for path in sorted(root.glob(pattern)):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for i in range(0, len(text), size):
            messages.append(text[i : i + size])
            total += len(messages[-1])
        if total >= limit_bytes:
            break
    return messages


def _measure(name: str, messages: list[str]) -> None:
    size = sum(len(m.encode()) for m in messages)
    start = time.perf_counter()
    findings: Counter[str] = Counter()
    for message in messages:
        findings.update(scrub_with_report(message)[1])
    elapsed = time.perf_counter() - start
    print(
        f"{name:>30}: {size / 1e6:5.1f} MB in {elapsed:5.2f} s = {size / 1e6 / elapsed:5.1f} MB/s,"
        f" {elapsed / (size / 1024) * 1e6:5.1f} µs per KB,"
        f" {elapsed / len(messages) * 1e6:5.1f} µs per message; {sum(findings.values())} findings"
    )


def main() -> None:
    """Single-core throughput on Markdown docs, Python source and the corpus itself."""
    scrub(CORPUS[0]["text"])  # warm up
    _measure("Markdown docs, 2 KB messages", _bench_messages("**/*.md", 10_000_000) * 5)
    _measure("Python source, 2 KB messages", _bench_messages("**/*.py", 10_000_000))
    _measure("corpus lines (dense PII) x 200", [case["text"] for case in CORPUS] * 200)


if __name__ == "__main__":
    main()


def test_scrub_all_on_several_processes_matches_scrub_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = [case["text"] for case in CORPUS] * 3
    monkeypatch.setattr(pii, "_PARALLEL_FROM", 10)  # take the worker path with a small input
    monkeypatch.setattr(pii.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert pii.scrub_all(texts) == [scrub(text) for text in texts]
