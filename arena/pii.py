"""Scrubbing personal data and secrets out of conversation text before it is published.

``scrub(text)`` returns the text with each finding replaced by a typed placeholder;
``scrub_with_report(text)`` also counts the findings per type; ``scrub_all(texts)`` scrubs many
on every core. Both are pure functions (no I/O,
no state), safe to call from any thread, and idempotent: scrubbing scrubbed text changes nothing.
They run on user and model turns alike, since models echo what users paste.

Types and placeholders (``PLACEHOLDERS`` maps each type to its placeholder):

==================  =====================  ====================================================
Type                Placeholder            What is replaced
==================  =====================  ====================================================
``PRIVATE_KEY``     ``<PRIVATE_KEY>``      A whole ``-----BEGIN ... PRIVATE KEY-----`` block (PEM,
                                           OpenSSH, PGP); without an END line, the BEGIN line and
                                           the base64 lines under it.
``URL_CREDENTIALS`` ``<URL_CREDENTIALS>``  The ``user:password`` part of ``scheme://user:pw@host``;
                                           scheme, host and path are kept, and so are templates
                                           (``{user}:{pw}``) and textbook ``user:pass``.
``JWT``             ``<JWT>``              JSON Web Tokens (``eyJ...``.``...``.``...``).
``API_KEY``         ``<API_KEY>``          Tokens with a known vendor format: Hugging Face ``hf_``,
                                           ``api_org_``; OpenAI ``sk-``, ``sk-proj-``; Anthropic
                                           ``sk-ant-``; GitHub ``ghp_ gho_ ghu_ ghs_ ghr_
                                           github_pat_``; AWS ``AKIA ASIA ABIA ACCA``; Slack
                                           ``xox?-``, ``xapp-`` and webhook paths; Google ``AIza``,
                                           ``ya29.``; Stripe ``sk_live_`` etc.; GitLab ``glpat-``;
                                           npm ``npm_``; Groq ``gsk_``; Replicate ``r8_``.
``SECRET``          ``<SECRET>``           The value of an assignment to a secret-looking name
                                           (``api_key=``, ``token:``, ``"client_secret": ...``,
                                           ``password=``) when it looks random (length, letters
                                           and digits, entropy) or, for passwords, when it is a
                                           literal; also ``Bearer``/``Basic`` header values.
``EMAIL``           ``<EMAIL>``            E-mail addresses.
``IP_ADDRESS``      ``<IP_ADDRESS>``       IPv4 and IPv6 addresses, except loopback, unspecified,
                                           broadcast, multicast, reserved and netmask-like ones
                                           (``127.0.0.1``, ``0.0.0.0``, ``::1``,
                                           ``255.255.255.0``): they identify nobody and are
                                           everywhere in code. Dotted quads after "version" or
                                           "==", and ones whose parts are all below 32 ("7.4.7.1"
                                           is a section number) unless a word such as "ip",
                                           "host", "ssh" or "from" comes before, are kept.
``IBAN``            ``<IBAN>``             IBANs of the right length for their country whose
                                           ISO 7064 mod-97 check holds, with or without spaces.
``CREDIT_CARD``     ``<CREDIT_CARD>``      13-19 digit card numbers in 4-digit (or Amex 4-6-5)
                                           groups, with a card-network prefix and a valid Luhn
                                           check digit; ungrouped, only 15/16 digits not after
                                           "seed", "hash", "id"..., or any length after a word
                                           such as "card" or "visa".
``PHONE``           ``<PHONE>``            International ``+CC ...`` numbers (8-15 digits), North
                                           American ``(555) 123-4567`` / ``555-123-4567``, national
                                           numbers with a trunk ``0`` in consistent groups
                                           (``020 7946 0958``), and bare 10-11 digit numbers only
                                           next to a word such as "phone", "call" or "whatsapp".
==================  =====================  ====================================================

Precision. Ordinary text must survive: version numbers (3.11.7), dates and times, arithmetic,
ISBNs, hex colours, UUIDs, git SHAs, plain URLs and words like "sk-learn" are left alone because
every numeric type needs a checksum or a strict shape and word boundaries, and every token type
needs its vendor prefix plus a random-looking body. The price is recall on free-form data: a
phone number written as bare digits with no cue word, or a low-entropy value assigned to
``token=``, is kept.

Speed. Each detector starts from a cheap seed (a substring test, a two-character scan, the "@"
signs, the runs of digits) instead of a regex tried at every position, all numeric types share
one scan, and every regex is ASCII-only. Measured single-core on this project's 2-core machines
with ``PYTHONPATH=. .venv/bin/python tests/test_pii.py`` (2 KB messages cut from the installed
packages' files): Markdown docs about 30 MB/s (33 µs per KB), Python source about 42 MB/s
(24 µs per KB), and about 18 µs per short message densely planted with findings. Figures drop by
up to a third when the other core is busy.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import multiprocessing
import os
import re
import string
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

__all__ = ["PLACEHOLDERS", "VERSION", "scrub", "scrub_all", "scrub_with_report"]

VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
"""Which scrubber this is: a hash of this file, so that any change to it makes copies scrubbed
by an earlier version stale (the store keeps each message's scrubbed copy with the version that
made it, and the export scrubs again whatever another version made). Nobody has to remember to
bump it."""

PLACEHOLDERS: dict[str, str] = {
    kind: f"<{kind}>"
    for kind in (
        "PRIVATE_KEY",
        "URL_CREDENTIALS",
        "JWT",
        "API_KEY",
        "SECRET",
        "EMAIL",
        "IP_ADDRESS",
        "IBAN",
        "CREDIT_CARD",
        "PHONE",
    )
}
"""Finding type -> the placeholder that replaces it (see the module docstring)."""

_Report = Counter[str]


def _ascii(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """Compile with ``re.ASCII``: ASCII classes scan about 1.5 times faster on non-ASCII text."""
    return re.compile(pattern, flags | re.ASCII)


def scrub(text: str) -> str:
    """``text`` with every finding replaced by its type's placeholder."""
    return scrub_with_report(text)[0]


_PARALLEL_FROM = 20_000
"""Fewer texts than this are scrubbed in this process: forking workers and sending them the texts
would cost more than the second core saves."""


def scrub_all(texts: list[str]) -> list[str]:
    """`scrub` of each text, on every core this process may use (the scrub is pure Python)."""
    workers = len(os.sched_getaffinity(0))
    if workers < 2 or len(texts) < _PARALLEL_FROM:
        return [scrub(text) for text in texts]
    # fork: spawn and forkserver workers re-import the caller's __main__ (app.py imports Gradio,
    # seconds per worker). The workers run only this module's pure Python code and exit with
    # os._exit, never touching the DuckDB connection or the threads they were forked beside.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        chunk = max(1, len(texts) // (workers * 8))
        return list(pool.map(scrub, texts, chunksize=chunk))


def scrub_with_report(text: str) -> tuple[str, Counter[str]]:
    """``text`` scrubbed, and how many findings of each type (a key of ``PLACEHOLDERS``) it had."""
    report: _Report = Counter()
    if not text:
        return text, report
    for step in _STEPS:
        text = step(text, report)
    return text, report


# --- helpers -----------------------------------------------------------------------------------


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _before(text: str, i: int) -> str:
    """The character before index ``i``, or a space at the start."""
    return text[i - 1] if i > 0 else " "


def _after(text: str, i: int) -> str:
    """The character at index ``i``, or a space past the end."""
    return text[i] if i < len(text) else " "


def _entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _looks_random(body: str) -> bool:
    """A token body drawn at random has a digit or mixes upper and lower case."""
    return any(c.isdigit() for c in body) or (body != body.lower() and body != body.upper())


def _sub(
    pattern: re.Pattern[str],
    kind: str,
    check: Callable[[str, re.Match[str]], bool] | None = None,
    group: int = 0,
) -> Callable[[str, _Report], str]:
    """A step replacing ``group`` of each match of ``pattern`` that passes ``check`` by ``kind``."""
    placeholder = PLACEHOLDERS[kind]

    def step(text: str, report: _Report) -> str:
        def replace(m: re.Match[str]) -> str:
            if check is not None and not check(text, m):
                return m.group()
            report[kind] += 1
            if group == 0:
                return placeholder
            whole, start = m.group(), m.start()
            return whole[: m.start(group) - start] + placeholder + whole[m.end(group) - start :]

        return pattern.sub(replace, text)

    return step


def _gated(needle: str, step: Callable[[str, _Report], str]) -> Callable[[str, _Report], str]:
    """Run ``step`` only on texts containing ``needle`` (a C-level scan, GB/s)."""

    def gated(text: str, report: _Report) -> str:
        return step(text, report) if needle in text else text

    return gated


# --- private keys, URL credentials, JWTs, vendor tokens --------------------------------------

_PRIVATE_KEY_RE = _ascii(
    r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----"
    r"(?:[\s\S]*?-----END \1-----"
    r"|(?:\r?\n[ \t]*(?:[A-Za-z0-9+/=]{8,}|(?:Proc-Type|DEK-Info|Comment|Version):[^\n]*))*)"
)

_URL_CREDENTIALS_RE = _ascii(r"://((?:[^\s/@:?#]+:[^\s/@?#]*|:[^\s/@?#]+))@(?=[\w\[])")


_EXAMPLE_CREDENTIALS = frozenset(
    {"user:pass", "user:password", "username:password", "login:password", "foo:bar", ":pass"}
)


def _credentials_ok(text: str, m: re.Match[str]) -> bool:
    """Templates (``{user}:{password}``, ``<user>:<pass>``) and textbook examples are kept."""
    userinfo = m.group(1)
    return not any(c in userinfo for c in "{}<>$") and userinfo.lower() not in _EXAMPLE_CREDENTIALS


_JWT_RE = _ascii(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")

_API_KEY_RE = _ascii(
    r"(?:hf_|api_org_)[A-Za-z0-9]{30,}"
    r"|sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-|or-v1-)[A-Za-z0-9_-]{20,}"
    r"|sk-[A-Za-z0-9]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|github_pat_[A-Za-z0-9_]{40,}"
    r"|(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}"
    r"|xox[abposer]-[A-Za-z0-9-]{10,}"
    r"|xapp-\d-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{20,}"
    r"|glpat-[A-Za-z0-9_-]{20,}"
    r"|npm_[A-Za-z0-9]{36}"
    r"|gsk_[A-Za-z0-9]{40,}"
    r"|r8_[A-Za-z0-9]{30,}"
)
# Where a vendor token may be: a separator followed by 20 letters and digits (every format has
# one, or starts with "sk-" or "glpat-"), or an AWS or Google prefix. A regex starting with the
# prefixes' letters would try every word and scan ten times slower.
_API_KEY_SEED_RE = _ascii(r"[_-][A-Za-z0-9]{20}")
_API_KEY_UPPER_SEED_RE = _ascii(r"A(?:KIA|SIA|BIA|CCA|Iza)")
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
_OTHER_TOKENS_RE = _ascii(
    r"ya29\.[0-9A-Za-z_-]{20,}|(?<=hooks\.slack\.com/services/)T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+"
)


def _api_key_ok(text: str, s: int, e: int) -> bool:
    before = _before(text, s)
    if _word_char(before) or before == "-" or _word_char(_after(text, e)):
        return False
    return _looks_random(text[s + 4 : e])


def _api_key_step(text: str, report: _Report) -> str:
    seeds = [m.start() for m in _API_KEY_SEED_RE.finditer(text)]
    seeds += [m.start() for m in _API_KEY_UPPER_SEED_RE.finditer(text)]
    for literal in ("sk-", "glpat-"):
        i = text.find(literal)
        while i >= 0:
            seeds.append(i)
            i = text.find(literal, i + 1)
    spans: list[tuple[int, int, str]] = []
    end = 0
    for p in sorted(seeds):
        if p < end:
            continue
        start = p  # back up to the start of the run of token characters holding the seed
        while start > end and start > p - 200 and text[start - 1] in _TOKEN_CHARS:
            start -= 1
        for s in (start, p) if start != p else (p,):
            m = _API_KEY_RE.match(text, s)
            if m is not None and m.end() > p and _api_key_ok(text, s, m.end()):
                spans.append((s, m.end(), "API_KEY"))
                end = m.end()
                break
    if "ya29." in text or "hooks.slack.com" in text:
        for m in _OTHER_TOKENS_RE.finditer(text):
            if _api_key_ok(text, *m.span()) and not _overlaps(spans, *m.span()):
                spans.append((m.start(), m.end(), "API_KEY"))
        spans.sort()
    return _replace_spans(text, spans, report)


# --- generic secrets: assignments to secret-looking names, Authorization headers ---------------

# After a secret-looking word (found with str.find): the rest of the name, an assignment operator
# (=, :, :=, =>), an optional quote and the value.
_ASSIGN_TAIL_RE = _ascii(
    r"(?P<suffix>[a-z0-9_.-]*)[\"']?[ \t]*(?::=|=>|[:=])[ \t]*[\"'`]?"
    r"(?P<val>[^\s\"'`<>(){}\[\],;]{6,})"
)
_SECRET_WORDS = ("key", "secret", "token", "passw", "pwd", "credential")
_NOT_SECRET_WORDS = ("secretar", "tokeniz")  # "secretary", "tokenizer"
_AUTH_HEADER_RE = _ascii(
    r"(?:bearer|authorization:[ \t]*basic)[ \t]+(?P<val>[a-z0-9._~+/-]{16,}=*)"
)
_NOT_SECRET_SUFFIXES = _ascii(
    r"path|file|dir|url|uri|env|var|name|type|len|count|_id|ids|limit|size|max|min|prefix|header"
    r"|field|format|usage|sha\d*|hash|digest|checksum|fingerprint|alias|policy|regex|pattern|class"
)
_PLACEHOLDER_VALUES = _ascii(r"(?:x+|\*+|\.+|your[_-].*|<.*|\$.*|none|null|true|false)")
# Code, not data: a word, snake_case or CONSTANT_CASE words and numbers ("DIRECT_KEY_128"),
# dotted attribute paths ("credentials.password") and CamelCase names ("PositionalIndexer2D").
_IDENTIFIER = _ascii(
    r"[A-Za-z]+\d*(?:_(?:[A-Za-z]+\d*|\d+))*"
    r"|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+"
    r"|(?:[A-Z][a-z]+)+\d*[A-Z]?"
)
_FORMAT_SPEC = _ascii(r"%[-#0 +]*\d*(?:\.\d+)?[sdifrxXeEgGc(]")
_PASSWORD_SIGNS = frozenset("0123456789!@#$%^&*+=~")


def _secret_value_ok(key: str, suffix: str, value: str, following: str) -> bool:
    """Whether ``value``, assigned to a name made of ``key`` + ``suffix``, is worth scrubbing."""
    if _NOT_SECRET_SUFFIXES.search(suffix) or following in "([":
        return False
    if _PLACEHOLDER_VALUES.fullmatch(value.lower()) or _IDENTIFIER.fullmatch(value):
        return False
    if "://" in value or _FORMAT_SPEC.search(value) or value[0] in "/~.":
        return False
    if key.startswith(("passw", "pwd")):
        # Passwords are rarely random, but a literal one has a digit or a sign somewhere.
        return len(value) >= 6 and any(c in _PASSWORD_SIGNS for c in value)
    if "/" in value and not all(c.isalnum() or c in "+/=" for c in value):
        return False  # a path, not base64
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return len(value) >= 12 and has_digit and has_alpha and _entropy(value) >= 3.0


def _not_secret_word(low: str, i: int, after: int) -> bool:
    """ "secretary", "tokenizer", "max_tokens": the word is part of an unrelated name."""
    if low.startswith(_NOT_SECRET_WORDS, i):
        return True
    return low.startswith("tokens", i) and not _word_char(_after(low, after + 1))


def _secret_step(text: str, report: _Report) -> str:
    low = text.lower()
    if len(low) != len(text):  # lower() changed some lengths ("İ"): keep the offsets right
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    values: dict[tuple[int, int], None] = {}
    for word in _SECRET_WORDS:
        i = low.find(word)
        while i >= 0:
            after = i + len(word)
            m = None if _not_secret_word(low, i, after) else _ASSIGN_TAIL_RE.match(low, after)
            if m is not None:
                s, e = m.span("val")
                if _secret_value_ok(word, m["suffix"], text[s:e], _after(text, e)):
                    values[(s, e)] = None
            i = low.find(word, after)
    if "bearer" in low or "authorization" in low:
        for m in _AUTH_HEADER_RE.finditer(low):
            s, e = m.span("val")
            if _looks_random(text[s:e]):
                values[(s, e)] = None
    spans = sorted((s, e, "SECRET") for s, e in values)
    return _replace_spans(text, spans, report)


def _replace_spans(text: str, spans: list[tuple[int, int, str]], report: _Report) -> str:
    """Replace sorted, non-overlapping ``(start, end, kind)`` spans of ``text``."""
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for s, e, kind in spans:
        if s < last:
            continue
        out.append(text[last:s])
        out.append(PLACEHOLDERS[kind])
        report[kind] += 1
        last = e
    out.append(text[last:])
    return "".join(out)


# --- e-mail, IPv6 ---------------------------------------------------------------------------

_EMAIL_LOCAL_RE = _ascii(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}\Z")
_EMAIL_DOMAIN_RE = _ascii(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)


def _email_step(text: str, report: _Report) -> str:
    """E-mail addresses, found from each "@" outwards (a regex scan from the local part is slow)."""
    spans: list[tuple[int, int, str]] = []
    at = text.find("@")
    while at >= 0:
        domain = _EMAIL_DOMAIN_RE.match(text, at + 1)
        local = _EMAIL_LOCAL_RE.search(text, max(0, at - 64), at) if domain else None
        if domain and local:
            s, e = local.start(), domain.end()
            # The local part starts after a non-address character; "git@host:org/repo" is SSH.
            ssh = text.startswith("git@", s) and _after(text, e) == ":"
            if not ssh and not (spans and s < spans[-1][1]):
                spans.append((s, e, "EMAIL"))
        at = text.find("@", at + 1)
    return _replace_spans(text, spans, report)


_IPV6_SEED_RE = _ascii(r":[0-9A-Fa-f]{0,4}:")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_NOT_PII_IPS = frozenset(
    {
        ipaddress.ip_address("::"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("0.0.0.0"),
        ipaddress.ip_address("255.255.255.255"),
    }
)


def _ip_is_pii(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if ip in _NOT_PII_IPS or ip.is_loopback or ip.is_multicast or ip.is_reserved:
        return False
    if ip.version == 4:
        octets = ip.packed
        return not all(o in (0, 255) for o in octets)  # netmasks like 255.255.0.0
    return True


def _ipv6_step(text: str, report: _Report) -> str:
    if "::" not in text and not _IPV6_SEED_RE.search(text):
        return text
    spans: list[tuple[int, int, str]] = []
    covered = -1
    n = len(text)
    for m in _IPV6_SEED_RE.finditer(text):
        if m.start() < covered:
            continue
        s, e = m.start(), m.end()
        while s > 0 and text[s - 1] in _IPV6_CHARS:
            s -= 1
        while e < n and text[e] in _IPV6_CHARS:
            e += 1
        covered = e
        while e > s and (text[e - 1] == "." or (text[e - 1] == ":" and text[e - 2 : e] != "::")):
            e -= 1
        if text[s] == ":" and text[s : s + 2] != "::":
            s += 1
        if _word_char(_before(text, s)) or _word_char(_after(text, e)) or e - s < 6:
            continue
        candidate = text[s:e]
        groups = [g for g in re.split(r"[:.]", candidate) if g]
        if len(groups) < 2 or not (
            len(groups) >= 3 or any(c.isalpha() for c in candidate.replace(":", ""))
        ):
            continue
        try:
            ip = ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        if _ip_is_pii(ip):
            spans.append((s, e, "IP_ADDRESS"))
    return _replace_spans(text, spans, report)


# --- IBAN -------------------------------------------------------------------------------------

_IBAN_LENGTHS = {
    entry[:2]: int(entry[2:])
    for entry in re.findall(
        r"[A-Z]{2}\d\d",
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 "
        "DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 "
        "HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 "
        "MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 RO24 "
        "RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 VA22 "
        "VG24 XK20 YE30",
    )
}
_IBAN_RE = _ascii(r"[A-Z]{2}\d\d(?: ?[A-Z0-9]){11,30}")


def _iban_valid(compact: str) -> bool:
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# --- numbers: IPv4, card numbers, phone numbers (one shared scan) ---------------------------

_NUMERIC_RE = _ascii(r"\d[\d ().-]{5,}\d")
_DIGITS_RE = _ascii(r"\d+")
_IPV4_RE = _ascii(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w/]|\.\d)"
)
_PHONE_INTL_RE = _ascii(r"\+[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,6})){1,6}")
_PHONE_NANP_RE = _ascii(r"(?:1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}")
_PHONE_TRUNK_RE = _ascii(r"0\d{1,4}([ .-])\d{2,8}(?:\1\d{2,8}){0,4}")
_PHONE_BARE_RE = _ascii(r"\d{10,11}")
_PHONE_CUES = _ascii(
    r"\b(?:phone|call|tel|mobile|cell|whatsapp|sms|text me|contact|fax|reach me)\b"
)
_CARD_CUES = _ascii(
    r"\b(?:card|credit|debit|visa|master ?card|amex|american express|discover|diners|jcb"
    r"|unionpay|maestro|cc|pan)\b"
)
_NOT_CARD_CUES = _ascii(r"seed|rng|random|hash|\bid\b|timestamp|epoch|nonce")
_IP_CUES = _ascii(
    r"\b(?:ip|ips|ipv4|address|addr|host|server|ping|ssh|dns|gateway|router|curl|http|https"
    r"|connect|connected|subnet|proxy|from|client|remote|nginx|firewall|vpn|wan|lan)\b|@|://"
)
_VERSION_CUES = _ascii(r"(?:version|release|build|rfc|section|chapter|==|§)\W{0,3}$")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    amex = digits[:2] in ("34", "37")
    if len(digits) == 15 and not amex:
        return False
    return digits[0] in "3456" or 2221 <= int(digits[:4]) <= 2720


def _card_shape_ok(groups: list[int]) -> bool:
    if len(groups) == 1:
        return True
    if groups in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4 and len(groups) >= 4


class _Context:
    """Lower-cased text before a position, for cue words; ``lower()`` is paid only when asked."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._low: str | None = None

    def before(self, i: int, width: int = 40) -> str:
        if self._low is None:
            self._low = self.text.lower()
            if len(self._low) != len(self.text):
                self._low = self.text  # lower() changed lengths: no cue words, no offsets shift
        return self._low[max(0, i - width) : i]


def _find_cards(
    text: str, rs: int, re_: int, taken: list[tuple[int, int, str]], ctx: _Context
) -> None:
    groups = [(m.start(), m.end()) for m in _DIGITS_RE.finditer(text, rs, re_)]
    i = 0
    while i < len(groups):
        best = None
        sep = None
        total = 0
        for j in range(i, len(groups)):
            if j > i:
                between = text[groups[j - 1][1] : groups[j][0]]
                if between not in (" ", "-") or (sep is not None and between != sep):
                    break
                sep = between
            total += groups[j][1] - groups[j][0]
            if total > 19:
                break
            s, e = groups[i][0], groups[j][1]
            if total < 13 or not _card_shape_ok([b - a for a, b in groups[i : j + 1]]):
                continue
            if _word_char(_before(text, s)) or _before(text, s) in ".-":
                continue
            if _word_char(_after(text, e)) or _after(text, e) == "-" or text[e : e + 2] in _DECIMAL:
                continue
            digits = "".join(text[a:b] for a, b in groups[i : j + 1])
            if not (_card_prefix_ok(digits) and _luhn(digits)) or _overlaps(taken, s, e):
                continue
            if sep is None:
                # A lone long number is more often a seed, hash or timestamp than a card.
                context = ctx.before(s)
                cued = _CARD_CUES.search(context) is not None
                if not cued and (len(digits) not in (15, 16) or _NOT_CARD_CUES.search(context)):
                    continue
            best = (s, e, j)
        if best is not None:
            taken.append((best[0], best[1], "CREDIT_CARD"))
            i = best[2] + 1
        else:
            i += 1


_DROP_SEPARATORS = str.maketrans("", "", " ().-")
_DECIMAL = frozenset(f"{sep}{d}" for sep in ".," for d in "0123456789")


def _overlaps(spans: list[tuple[int, int, str]], s: int, e: int) -> bool:
    return any(a < e and s < b for a, b, _ in spans)


def _phone_bounded(text: str, s: int, e: int) -> bool:
    """No word, decimal point, hyphenated or time-like neighbour: "978-0137-02741-5" is no phone."""
    before, after = _before(text, s), _after(text, e)
    if _word_char(before) or before in "-.:/,+" or _word_char(after) or after == "-":
        return False
    return text[e : e + 2] not in _DECIMAL


def _ipv4_is_pii(text: str, s: int, e: int, ctx: _Context) -> bool:
    ip = ipaddress.IPv4Address(text[s:e])
    if not _ip_is_pii(ip):
        return False
    context = ctx.before(s, 24)
    if _VERSION_CUES.search(context):
        return False
    # "7.4.7.1", "1.0.0.0", "2.4.8.19": section and version numbers look like small addresses.
    return max(ip.packed) >= 32 or _IP_CUES.search(ctx.before(s, 60)) is not None


def _find_ibans(text: str, ws: int, we: int, found: list[tuple[int, int, str]]) -> None:
    """IBANs starting in ``text[ws:we]``, appended to ``found`` (sorted, non-overlapping)."""
    pos = max(ws, found[-1][1] if found else 0)
    while (m := _IBAN_RE.search(text, pos, we + 34)) is not None and m.start() < we:
        s = m.start()
        pos = s + 1  # a greedy match may run into the next IBAN: resume inside it on failure
        length = _IBAN_LENGTHS.get(text[s : s + 2])
        if length is None or _word_char(_before(text, s)):
            continue
        # Walk the match until the country's length is reached; the IBAN must end there.
        count, e = 0, s
        while e < m.end() and count < length:
            count += text[e] != " "
            e += 1
        valid = count == length and not _word_char(_after(text, e))
        if valid and _iban_valid(text[s:e].replace(" ", "")):
            found.append((s, e, "IBAN"))
            pos = e


def _numeric_step(text: str, report: _Report) -> str:
    spans: list[tuple[int, int, str]] = []
    ibans: list[tuple[int, int, str]] = []
    ctx = _Context(text)
    n = len(text)
    for m in _NUMERIC_RE.finditer(text):
        rs, re_ = m.span()
        if rs > 0 and text[rs - 1] in "+(":
            rs -= 1
        n_digits = len(m.group().translate(_DROP_SEPARATORS))
        taken: list[tuple[int, int, str]] = []
        if n_digits >= 8:
            # Every IBAN holds a run of 8+ digits: look for one starting shortly before it.
            _find_ibans(text, max(0, rs - 34), re_, ibans)
            taken = [span for span in ibans[-2:] if span[0] < re_ and rs < span[1]]
        if "." in m.group():
            for ip in _IPV4_RE.finditer(text, rs, min(n, re_ + 2)):
                s, e = ip.span()
                if _ipv4_is_pii(text, s, e, ctx) and not _overlaps(taken, s, e):
                    taken.append((s, e, "IP_ADDRESS"))
        if n_digits < 8:  # too short for a phone or card number
            spans.extend(taken)
            continue
        if n_digits >= 13:
            _find_cards(text, rs, re_, taken, ctx)
        for pattern in (_PHONE_INTL_RE, _PHONE_NANP_RE, _PHONE_TRUNK_RE, _PHONE_BARE_RE):
            for p in pattern.finditer(text, rs, re_):
                s, e = p.span()
                if not _phone_bounded(text, s, e) or _overlaps(taken, s, e):
                    continue
                count = sum(c.isdigit() for c in p.group())
                if pattern is _PHONE_INTL_RE and not 8 <= count <= 15:
                    continue
                if pattern is _PHONE_TRUNK_RE and not 10 <= count <= 12:
                    continue
                if pattern is _PHONE_BARE_RE and not _PHONE_CUES.search(ctx.before(s)):
                    continue
                taken.append((s, e, "PHONE"))
        spans.extend(span for span in taken if span[2] != "IBAN")
    spans.extend(ibans)
    spans.sort()
    return _replace_spans(text, spans, report)


# --- the pipeline -----------------------------------------------------------------------------

# Order matters: whole blocks and URLs first, so that their parts are not reported as e-mails,
# numbers or generic secrets; placeholders contain no digits, "@" or ":" and are never re-matched.
_STEPS: tuple[Callable[[str, _Report], str], ...] = (
    _gated("PRIVATE KEY", _sub(_PRIVATE_KEY_RE, "PRIVATE_KEY")),
    _gated("://", _sub(_URL_CREDENTIALS_RE, "URL_CREDENTIALS", _credentials_ok, group=1)),
    _gated("eyJ", _sub(_JWT_RE, "JWT")),
    _api_key_step,
    _secret_step,
    _email_step,
    _gated(":", _ipv6_step),
    _numeric_step,
)
