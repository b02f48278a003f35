"""Pseudonymising client addresses before they reach the store or the logs."""

import hashlib
import hmac
import ipaddress


def hash_ip(ip: str, salt: str) -> str:
    """The HMAC-SHA256 of a client IP address keyed with a secret salt, as 64 hex digits.

    The same address gives the same hash under one salt, so votes from one address can be grouped
    (rate limits, anomaly tests) without keeping the address; without the salt the hash cannot be
    reversed by hashing the small IPv4 space. The address is hashed as given: normalise it first
    if different spellings of one address should match.
    """
    return hmac.new(salt.encode(), ip.encode(), hashlib.sha256).hexdigest()


def client_ip(peer: str | None, forwarded_for: str | None, proxy_hops: int) -> str | None:
    """The client's address as seen by the outermost of ``proxy_hops`` trusted proxies.

    Each proxy appends the address it received the request from to ``X-Forwarded-For``, and a
    client may put anything before that, so only the entry added by our own outermost proxy (the
    ``proxy_hops``-th from the right) can be trusted. With no proxies the socket peer is the
    client. Normalised, so ``::ffff:1.2.3.4`` and ``1.2.3.4`` hash alike.
    """
    if proxy_hops == 0:
        candidate = peer
    else:
        hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
        candidate = hops[-proxy_hops] if len(hops) >= proxy_hops else peer
    if not candidate:
        return None
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return candidate
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)
