"""The audit checkpoint that ends every unit of work (``Checkpointer.write``), on SQLite and
PostgreSQL: one read brings the previous checkpoint, the rows since it and the legacy prefix's
length; a stretch longer than one batch is read again, streamed. Either way every row since the
previous checkpoint is verified before the head is signed, and a head past a forged row is
never signed.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from worker.ledger import audit, checkpoints
from worker.ledger.models import AuditCheckpoint, AuditEntry


@pytest.fixture
def ledger(either_ledger: Any) -> Any:
    """A container whose ledger is SQLite or PostgreSQL (its store local)."""
    return either_ledger


def _append(c: Any, n: int) -> int:
    """Append ``n`` entries (each in its own transaction); the head's seq."""
    for i in range(n):
        with c.db.session() as s:
            entry = audit.append(s, "test.event", None, n=i)
    return int(entry.seq)


def _recorded(c: Any) -> list[int]:
    with c.db.session() as s:
        return list(s.scalars(select(AuditCheckpoint.seq).order_by(AuditCheckpoint.seq)))


def _forge(c: Any, seq: int) -> None:
    """Edit a row's details as a ledger writer without the audit key would."""
    with c.db.session() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == seq).values(details='{"n":999}'))


@pytest.mark.parametrize("batch", [3, 2000], ids=["streamed", "one-read"])
def test_the_writer_signs_the_head_only_over_verified_rows(
    ledger: Any, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = ledger
    monkeypatch.setattr(checkpoints, "_SINCE_BATCH", batch)
    head = _append(c, 8)
    first = c.checkpoints.write()
    assert first is not None and first.seq == head and first.legacy_rows == 0
    assert c.checkpoints.write() is None  # nothing new since: nothing written
    assert _recorded(c) == [head]

    head = _append(c, 8)
    second = c.checkpoints.write()
    assert second is not None and second.seq == head
    with c.db.session() as s:
        assert second.hash == s.scalar(select(AuditEntry.hash).where(AuditEntry.seq == head))
    assert c.checkpoints.verify().ok

    # a forged row since the last checkpoint: the writer refuses every later head
    forged = head + 4
    head = _append(c, 8)
    _forge(c, forged)
    assert c.checkpoints.write() is None
    _append(c, 2)
    assert c.checkpoints.write() is None
    assert _recorded(c) == [first.seq, second.seq]
    assert "hash_mismatch" in {p.code for p in c.checkpoints.verify().problems}
