"""Delete objects from the store and record each deletion exactly once, with a receipt.

The one deletion mechanism: the job tail (originals), sweeps, erasure and consent withdrawal all
go through :class:`Deleter`. Store first (every version, verified), ledger second (compare-and-set
on ``deleted_at IS NULL``), so a crash between the two is finished by the next attempt and
nothing is recorded twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, update

from worker.ids import new_id
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import DeletionReceipt, Job, StoredObject
from worker.storage.base import ObjectStore

log = structlog.get_logger("facemedia.retention")


@dataclass(frozen=True)
class Doomed:
    """An object to delete: its ledger id, store key and class."""

    object_id: str
    key: str
    object_class: str


@dataclass(frozen=True)
class DeletionBatch:
    """What one call removed."""

    deleted: int = 0
    versions: int = 0
    unverified: tuple[str, ...] = field(default_factory=tuple)
    already: int = 0


class Deleter:
    """Deletes batches of objects (≤ 1000 keys per store call) and records receipts."""

    def __init__(self, db: Database, store: ObjectStore, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.store = store
        self.clock = clock

    def delete(self, doomed: Sequence[Doomed], reason: str) -> DeletionBatch:
        """Delete every version of each object, verify, record once. Raises store errors
        (TransientStorageError is the caller's cue to retry)."""
        if not doomed:
            return DeletionBatch()
        results = self.store.delete_many([d.key for d in doomed])
        t = self.clock()
        deleted = versions = already = 0
        unverified: list[str] = []
        with self.db.session() as s:
            for d in doomed:
                result = results[d.key]
                if not result.verified:
                    unverified.append(d.object_id)
                    continue
                changed = cast(
                    CursorResult[Any],
                    s.execute(
                        update(StoredObject)
                        .where(StoredObject.id == d.object_id, StoredObject.deleted_at.is_(None))
                        .values(
                            deleted_at=t,
                            versions_deleted=result.versions_removed,
                            claim_token=None,
                            claim_until=None,
                        )
                    ),
                ).rowcount
                if changed != 1:
                    already += 1
                    continue
                if d.object_class == "original":
                    row = s.get(StoredObject, d.object_id)
                    if row is not None and row.job_id is not None:
                        s.execute(
                            update(Job).where(Job.id == row.job_id).values(original_deleted_at=t)
                        )
                s.add(
                    DeletionReceipt(
                        id=new_id(),
                        object_id=d.object_id,
                        object_class=d.object_class,
                        versions_removed=result.versions_removed,
                        verified=True,
                        reason=reason,
                        deleted_at=t,
                    )
                )
                deleted += 1
                versions += result.versions_removed
            if deleted:
                entity = doomed[0].object_id if len(doomed) == 1 else None
                audit.append(s, "objects.deleted", entity, count=deleted, reason=reason)
        log.info("objects.deleted", count=deleted, versions=versions, reason=reason)
        return DeletionBatch(deleted, versions, tuple(unverified), already)
