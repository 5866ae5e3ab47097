"""Append-only, hash-chained audit log.

Each row stores ``hash = SHA-256(prev_hash ‖ canonical(seq, ts, event, entity, details))``; the
first row chains from 64 zeros. Editing, deleting or reordering any row breaks the chain at that
row, which :func:`verify` reports. Details hold ids and counts only, never personal data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from worker.ledger.errors import AuditChainBroken
from worker.ledger.models import AuditEntry

GENESIS = "0" * 64
_PG_AUDIT_LOCK = 0x46_4D_41_55  # "FMAU": serialises appenders on PostgreSQL


def _digest(prev: str, seq: int, ts: str, event: str, entity: str | None, details: str) -> str:
    body = json.dumps([seq, ts, event, entity, details], separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


def append(session: Session, event: str, entity: str | None = None, **details: Any) -> AuditEntry:
    """Append one entry inside the caller's transaction (so it commits with the change)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})
    last = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()
    seq = 1 if last is None else last.seq + 1
    prev = GENESIS if last is None else last.hash
    ts = datetime.now(UTC).isoformat()
    payload = json.dumps(dict(details), sort_keys=True, separators=(",", ":"), default=str)
    entry = AuditEntry(
        seq=seq,
        ts=ts,
        event=event,
        entity=entity,
        details=payload,
        prev_hash=prev,
        hash=_digest(prev, seq, ts, event, entity, payload),
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class AuditReport:
    """The outcome of :func:`verify`."""

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    reason: str | None = None

    def to_json(self) -> Mapping[str, Any]:
        """A JSON-ready view."""
        return {
            "ok": self.ok,
            "rows": self.rows,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
        }


def verify(session: Session) -> AuditReport:
    """Walk the chain from the first row; report the first row that does not verify."""
    prev = GENESIS
    expected_seq = 1
    rows = 0
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.seq)):
        rows += 1
        if entry.seq != expected_seq:
            return AuditReport(False, rows, entry.seq, f"row missing before seq {entry.seq}")
        if entry.prev_hash != prev:
            return AuditReport(False, rows, entry.seq, "previous-hash link broken")
        digest = _digest(prev, entry.seq, entry.ts, entry.event, entry.entity, entry.details)
        if digest != entry.hash:
            return AuditReport(False, rows, entry.seq, "row content does not match its hash")
        prev = entry.hash
        expected_seq += 1
    return AuditReport(True, rows)


def require_intact(session: Session) -> int:
    """Raise :class:`AuditChainBroken` unless the chain verifies; return the row count."""
    report = verify(session)
    if not report.ok:
        raise AuditChainBroken(f"audit chain broken at seq {report.first_bad_seq}: {report.reason}")
    return report.rows
