"""Webhook signatures: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.

The receiver recomputes the HMAC over the raw body it received (before any JSON parsing) with
the ``webhook_secret`` printed by ``facemedia apikey create``, compares in constant time, and
rejects a timestamp older (or newer) than its tolerance, which defeats replays.
"""

from __future__ import annotations

import hashlib
import hmac
import time

#: The request header carrying the signature.
HEADER = "X-Facemedia-Signature"
#: Receivers reject signatures whose timestamp is further than this from their clock (seconds).
DEFAULT_TOLERANCE_S = 300


def _mac(secret: bytes, body: bytes, t: int) -> str:
    return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, t: int) -> str:
    """The header value for ``body`` sent at unix time ``t``: ``t=<t>,v1=<hex>``."""
    if not secret:
        raise ValueError("empty webhook secret")
    return f"t={int(t)},v1={_mac(secret, body, int(t))}"


def verify(
    secret: bytes,
    body: bytes,
    header: str,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs ``body`` under ``secret`` with a timestamp within
    ``tolerance_s`` of ``now`` (default: this clock). Any ``v1`` entry may match (several are
    allowed, as during a secret rotation); comparison is constant-time. Never raises on a
    malformed header: it is simply not valid."""
    if not secret or not header:
        return False
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if t is not None or not value.isdigit() or len(value) > 12:
                return False
            t = int(value)
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - t) > tolerance_s:
        return False
    expected = _mac(secret, body, t).encode()
    ok = False
    for candidate in candidates:
        # every candidate is compared (no early exit), each in constant time
        ok |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
    return ok
