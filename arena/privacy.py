"""Pseudonymising client addresses before they reach the store or the logs."""

import hashlib
import hmac


def hash_ip(ip: str, salt: str) -> str:
    """The HMAC-SHA256 of a client IP address keyed with a secret salt, as 64 hex digits.

    The same address gives the same hash under one salt, so votes from one address can be grouped
    (rate limits, anomaly tests) without keeping the address; without the salt the hash cannot be
    reversed by hashing the small IPv4 space. The address is hashed as given: normalise it first
    if different spellings of one address should match.
    """
    return hmac.new(salt.encode(), ip.encode(), hashlib.sha256).hexdigest()
