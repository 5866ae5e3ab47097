"""Retention policy: how long each class of object, and each ledger table, may hold data.

TTLs are settings (``[retention]`` in config/default.toml, ``FACEMEDIA_RETENTION__OUTPUTS=7d``).
:data:`TABLE_POLICY` states, for every ledger table, what personal data it can hold and what ends
it; a coverage test fails when a table or an object class has no entry (DELF's static check).
"""

from __future__ import annotations

import re
from datetime import timedelta

OBJECT_CLASSES = ("original", "output", "research", "staging", "release")

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
FOREVER_WORDS = frozenset({"never", "until_revoked"})


def parse_ttl(text: str) -> timedelta | None:
    """``"24h"``, ``"7d"``, ``"3y"`` → a timedelta; ``"until_revoked"``/``"never"`` → None."""
    if text.strip() in FOREVER_WORDS:
        return None
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 24h, 7d, 3y or until_revoked)")
    value = int(match.group(1)) * _UNITS[match.group(2)]
    if value <= 0:
        raise ValueError("a retention must be positive")
    return timedelta(seconds=value)


# What each ledger table may hold and what removes it. Every table must be listed.
TABLE_POLICY: dict[str, str] = {
    "subjects": "keyed hash of the upstream id, consent flags, holds: the row stays as a tombstone "
    "after erasure (hash kept so a returning user gets a new key; no key, no objects)",
    "subject_keys": "wrapped subject key: bytes destroyed on erasure (crypto-shredding)",
    "service_keys": "wrapped pseudonym key: no personal data; rotated with the KEK",
    "jobs": "opaque ids, job type, params, state: kept for the audit policy; no media, no names; "
    "generalized quasi-identifiers (research consent only) cleared when the job ends; the "
    "tenant, the caller's idempotency key and callback URL (the URL cleared once its webhook is "
    "delivered or dead)",
    "objects": "object keys (opaque ids), class, expiry: the object is deleted at expiry, "
    "the row stays with deleted_at as the record of deletion",
    "deletion_receipts": "object id, class, versions removed: no personal data (audit policy)",
    "audit_log": "event names and opaque ids: no personal data (audit policy)",
    "audit_checkpoints": "audit head seq numbers and hashes: no personal data (audit policy)",
    "locks": "sweep lock: no personal data",
    "kek_epochs": "KEK versions (KMS key ARNs) and counts of epoch changes: no personal data",
    "revocations": "opaque subject id of a consent withdrawal: kept while releases exist",
    "research_samples": "opaque subject id, generalized quasi-identifiers (age band, province, "
    "device family, month): deleted with the sample (research TTL, withdrawal, erasure)",
    "staged_faces": "opaque subject id and generalized quasi-identifiers of a staged k-Same crop: "
    "deleted when its batch is written or its staging TTL ends",
    "releases": "release ids, counts and wrapped release keys: no personal data; kept until "
    "revoked",
    "release_grants": "fingerprints of researchers' public keys: no personal data of subjects",
    "research_funnel": "counts of research-sampling decisions per month, outcome and reason: "
    "no ids, no personal data; kept while the service runs (the loss funnel of releases)",
    "api_keys": "API key ids, tenants, scopes, limits, a SHA-256 of each key and the webhook "
    "secret wrapped by the KEK: no personal data of subjects; kept until revoked and beyond "
    "(the audit log names keys by id)",
    "api_rate_buckets": "token counts per API key id: no personal data",
    "alembic_version": "schema revision: no personal data",
}
