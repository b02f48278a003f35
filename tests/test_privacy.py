"""Client addresses: which one to trust behind proxies."""

from __future__ import annotations

import pytest

from arena.privacy import client_ip


@pytest.mark.parametrize(
    ("peer", "forwarded", "hops", "expected"),
    [
        ("10.0.0.5", None, 0, "10.0.0.5"),
        ("10.0.0.5", "6.6.6.6", 0, "10.0.0.5"),  # no proxy: a client-written header is ignored
        ("10.0.0.5", "6.6.6.6, 203.0.113.7", 1, "203.0.113.7"),  # the spoofed hop is skipped
        ("10.0.0.5", "203.0.113.7, 10.1.1.1", 2, "203.0.113.7"),
        ("10.0.0.5", "", 1, "10.0.0.5"),  # fewer hops than configured: the peer
        ("::ffff:198.51.100.4", None, 0, "198.51.100.4"),
        (None, None, 0, None),
    ],
)
def test_client_ip_trusts_only_our_own_proxies(peer, forwarded, hops, expected):
    assert client_ip(peer, forwarded, hops) == expected
