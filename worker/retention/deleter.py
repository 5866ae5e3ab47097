"""Delete objects from the store and record each deletion exactly once, with a receipt.

The one deletion mechanism: the job tail (originals), sweeps, erasure and consent withdrawal all
go through :class:`Deleter`. Store first (every version, verified), ledger second (compare-and-set
on ``deleted_at IS NULL``), so a crash between the two is finished by the next attempt and
nothing is recorded twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import structlog
from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    any_,
    bindparam,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import DeletionReceipt, Job, StoredObject, UtcDateTime
from worker.metrics import DELETION_FAILURES, DELETIONS
from worker.storage.base import DeleteResult, ObjectStore

log = structlog.get_logger("facemedia.retention")

# Core tables: the bulk statements below skip the ORM's per-statement bookkeeping.
_OBJECTS = cast(Table, StoredObject.__table__)
_RECEIPTS = cast(Table, DeletionReceipt.__table__)
_JOBS = cast(Table, Job.__table__)


def id_in(db: Database, column: ColumnElement[Any], ids: Sequence[str]) -> ColumnElement[bool]:
    """``column IN ids`` as one array parameter on PostgreSQL (``= ANY(%s)``: one bind, and a
    query text the driver has seen before) and as an expanding ``IN`` elsewhere."""
    if db.dialect == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(String())))
    return column.in_(list(ids))


@dataclass(frozen=True)
class Doomed:
    """An object to delete: its ledger id, store key and class."""

    object_id: str
    key: str
    object_class: str
    versions: tuple[str, ...] | None = None

    @classmethod
    def of(cls, row: StoredObject) -> Doomed:
        """From a ledger row."""
        versions = tuple(row.version_ids) if row.version_ids else None
        return cls(row.id, row.key, row.object_class, versions)


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
        return self.record(doomed, self.remove(doomed), reason)

    def remove(self, doomed: Sequence[Doomed]) -> dict[str, DeleteResult]:
        """The store half: delete every version of each object and verify (no ledger)."""
        if not doomed:
            return {}
        known = {d.key: d.versions for d in doomed if d.versions}
        return self.store.delete_many([d.key for d in doomed], known)

    def record(
        self, doomed: Sequence[Doomed], results: Mapping[str, DeleteResult], reason: str
    ) -> DeletionBatch:
        """The ledger half: stamp verified objects deleted (once) and write their receipts."""
        if not doomed:
            return DeletionBatch()
        t = self.clock()
        verified = [d for d in doomed if results[d.key].verified]
        unverified = tuple(d.object_id for d in doomed if not results[d.key].verified)
        by_count: dict[int, list[str]] = {}
        for d in verified:
            by_count.setdefault(results[d.key].versions_removed, []).append(d.object_id)
        with self.db.session() as s:
            # Compare-and-set in bulk (one UPDATE per distinct version count, usually one):
            # only rows still undeleted are stamped, so each object gets one receipt, ever.
            open_rows: dict[str, str | None] = {}
            objects = _OBJECTS.c
            for count, ids in by_count.items():
                for row in s.execute(
                    update(_OBJECTS)
                    .where(id_in(self.db, objects.id, ids), objects.deleted_at.is_(None))
                    .values(
                        deleted_at=t, versions_deleted=count, claim_token=None, claim_until=None
                    )
                    .returning(objects.id, objects.job_id)
                ):
                    open_rows[row.id] = row.job_id
            fresh = [d for d in verified if d.object_id in open_rows]
            if fresh:
                jobs = [
                    open_rows[d.object_id]
                    for d in fresh
                    if d.object_class == "original" and open_rows[d.object_id]
                ]
                if jobs:
                    s.execute(
                        update(_JOBS)
                        .where(id_in(self.db, _JOBS.c.id, [j for j in jobs if j]))
                        .values(original_deleted_at=t)
                    )
                # Receipts built in the database from the rows just stamped (receipt id = object
                # id: one receipt per object), no per-row round trip through Python.
                s.execute(
                    insert(_RECEIPTS).from_select(
                        [
                            "id",
                            "object_id",
                            "object_class",
                            "versions_removed",
                            "verified",
                            "reason",
                            "deleted_at",
                        ],
                        select(
                            objects.id,
                            objects.id,
                            objects.object_class,
                            objects.versions_deleted,
                            true(),
                            literal(reason),
                            literal(t, UtcDateTime()),
                        ).where(id_in(self.db, objects.id, list(open_rows))),
                    )
                )
                entity = doomed[0].object_id if len(doomed) == 1 else None
                audit.append(s, "objects.deleted", entity, count=len(fresh), reason=reason)
        deleted = len(fresh)
        versions = sum(results[d.key].versions_removed for d in fresh)
        already = len(verified) - deleted
        DELETIONS.labels(reason).inc(deleted)
        if unverified:
            DELETION_FAILURES.labels(reason).inc(len(unverified))
        log.info("objects.deleted", count=deleted, versions=versions, reason=reason)
        return DeletionBatch(deleted, versions, unverified, already)
