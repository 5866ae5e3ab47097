"""The webhook signature: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from worker.webhooks import sign, verify

SECRET = b"whsec_0123456789abcdef0123456789abcdef"
BODY = b'{"job_id":"ab","status":"succeeded"}'
T = 1_780_000_000


def test_the_header_is_the_stripe_scheme_over_t_dot_body() -> None:
    header = sign(SECRET, BODY, T)
    expected = hmac.new(SECRET, b"1780000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={expected}"
    assert verify(SECRET, BODY, header, now=T + 10)


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        (b"whsec_other", BODY, T),  # another key's secret
        (SECRET, BODY + b" ", T),  # one byte more
        (SECRET, BODY.replace(b"succeeded", b"failed"), T),  # tampered
        (SECRET, BODY, T + 301),  # too old: a replay
        (SECRET, BODY, T - 301),  # from the future
    ],
)
def test_verify_rejects_wrong_secret_tampering_and_stale_timestamps(
    secret: bytes, body: bytes, now: int
) -> None:
    assert not verify(secret, body, sign(SECRET, BODY, T), now=now)


def test_tolerance_is_the_receivers_choice() -> None:
    header = sign(SECRET, BODY, T)
    assert verify(SECRET, BODY, header, tolerance_s=3600, now=T + 3000)
    assert not verify(SECRET, BODY, header, tolerance_s=60, now=T + 61)


def test_any_v1_entry_may_match() -> None:
    good = sign(SECRET, BODY, T).split(",")[1]
    assert verify(SECRET, BODY, f"t={T},v1={'0' * 64},{good}", now=T)
    assert not verify(SECRET, BODY, f"t={T},v1={'0' * 64}", now=T)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"v1={'a' * 64}",  # no timestamp
        f"t={T}",  # no signature
        f"t=-5,v1={'a' * 64}",
        f"t={T},t={T},v1={'a' * 64}",  # two timestamps
        f"t=1e9,v1={'a' * 64}",
        f"t={T},v1=é",
    ],
)
def test_malformed_headers_are_invalid_not_errors(header: str) -> None:
    assert verify(SECRET, BODY, header, now=T) is False


def test_an_empty_secret_neither_signs_nor_verifies() -> None:
    with pytest.raises(ValueError):
        sign(b"", BODY, T)
    assert not verify(b"", BODY, sign(SECRET, BODY, T), now=T)
