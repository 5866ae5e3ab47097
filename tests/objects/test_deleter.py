"""The deleter (worker/objects/deleter.py): store first (every version, verified), then the
ledger once — a compare-and-set on ``deleted_at IS NULL`` and one receipt per object, however
often it is asked. Real parts: the embedded SQLite ledger and LocalStore."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from worker.ledger.models import AuditEntry, DeletionReceipt, StoredObject
from worker.objects.deleter import Doomed
from worker.objects.layout import research_key
from worker.objects.records import ObjectSpec


def _stored(embedded: Any, n: int) -> list[Doomed]:
    ref = embedded.subjects.ensure("deleter-subject")
    doomed = []
    for i in range(n):
        spec = ObjectSpec(research_key(f"{i:032x}"), "research", subject_id=ref.id)
        embedded.records.store(spec, ref.key_id, b"sample", audit_event="research.sampled")
        with embedded.db.session() as s:
            row = s.scalars(select(StoredObject).where(StoredObject.key == spec.key)).one()
            doomed.append(Doomed.of(row))
    return doomed


def _count(embedded: Any, model: Any, *where: Any) -> int:
    with embedded.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_delete_removes_records_and_receipts_once(embedded: Any) -> None:
    doomed = _stored(embedded, 3)
    batch = embedded.deleter.delete(doomed, reason="test")
    assert (batch.deleted, batch.versions, batch.unverified, batch.already) == (3, 3, (), 0)
    assert not any(embedded.store.exists(d.key) for d in doomed)
    assert _count(embedded, StoredObject, StoredObject.deleted_at.is_(None)) == 0
    assert _count(embedded, DeletionReceipt, DeletionReceipt.reason == "test") == 3
    assert _count(embedded, AuditEntry, AuditEntry.event == "objects.deleted") == 1
    # asked again (a redelivery, a second sweeper): nothing is recorded twice
    again = embedded.deleter.delete(doomed, reason="test")
    assert (again.deleted, again.already) == (0, 3)
    assert _count(embedded, DeletionReceipt) == 3
    assert _count(embedded, AuditEntry, AuditEntry.event == "objects.deleted") == 1


def test_a_crash_between_store_and_ledger_is_finished_by_the_next_call(embedded: Any) -> None:
    """The store half ran (objects gone), the ledger half did not: the next call records it."""
    doomed = _stored(embedded, 2)
    embedded.deleter.remove(doomed)  # the process dies here
    assert _count(embedded, DeletionReceipt) == 0
    batch = embedded.deleter.delete(doomed, reason="test")
    assert batch.deleted == 2 and not batch.unverified
    assert _count(embedded, DeletionReceipt) == 2
