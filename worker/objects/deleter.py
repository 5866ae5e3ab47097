"""Delete objects from the store and record each deletion exactly once, with a receipt.

The one deletion mechanism: the job tail (originals), sweeps, erasure and consent withdrawal all
go through :class:`Deleter`. Store first (every version, verified), ledger second (compare-and-set
on ``deleted_at IS NULL``), so a crash between the two is finished by the next attempt and
nothing is recorded twice. Store failures are raised as :mod:`worker.objects.errors`
(:class:`~worker.objects.errors.ObjectUnavailable` is the caller's cue to retry).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
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
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import DeletionReceipt, Job, StoredObject, UtcDateTime
from worker.metrics import DELETION_FAILURES, DELETIONS
from worker.objects.vault import translated
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
        """Delete every version of each object, verify, record once. Raises
        :class:`~worker.objects.errors.ObjectUnavailable` (retry) or another objects error."""
        return self.record(doomed, self.remove(doomed), reason)

    def remove(self, doomed: Sequence[Doomed]) -> dict[str, DeleteResult]:
        """The store half: delete every version of each object and verify (no ledger)."""
        if not doomed:
            return {}
        known = {d.key: d.versions for d in doomed if d.versions}
        with translated():
            return self.store.delete_many([d.key for d in doomed], known)

    def record(
        self,
        doomed: Sequence[Doomed],
        results: Mapping[str, DeleteResult],
        reason: str,
        session: Session | None = None,
    ) -> DeletionBatch:
        """The ledger half: stamp verified objects deleted (once) and write their receipts —
        in ``session``'s transaction if given (the caller commits), else in one of its own."""
        if not doomed:
            return DeletionBatch()
        t = self.clock()
        verified = [d for d in doomed if results[d.key].verified]
        unverified = tuple(d.object_id for d in doomed if not results[d.key].verified)
        stamp = self._stamp_postgresql if self.db.dialect == "postgresql" else self._stamp
        with nullcontext(session) if session is not None else self.db.session() as s:
            # Compare-and-set: only rows still undeleted are stamped, so each object gets one
            # receipt, ever (receipt id = object id).
            deleted, versions = stamp(s, verified, results, reason, t) if verified else (0, 0)
            if deleted:
                entity = doomed[0].object_id if len(doomed) == 1 else None
                audit.append(s, "objects.deleted", entity, count=deleted, reason=reason)
        already = len(verified) - deleted
        DELETIONS.labels(reason).inc(deleted)
        if unverified:
            DELETION_FAILURES.labels(reason).inc(len(unverified))
        log.info("objects.deleted", count=deleted, versions=versions, reason=reason)
        return DeletionBatch(deleted, versions, unverified, already)

    def _stamp_postgresql(
        self,
        s: Session,
        verified: Sequence[Doomed],
        results: Mapping[str, DeleteResult],
        reason: str,
        t: datetime,
    ) -> tuple[int, int]:
        """Stamp, write receipts and mark originals' jobs in one statement per distinct version
        count (usually one); (stamped, versions).

        The ids go as one comma-joined string (ids are hex: no comma), so neither side converts
        a list element by element; ``id = ANY(...)`` keeps every plan, custom or generic, on
        the primary key (a join against the id list let a generic plan loop over the table).
        """
        deleted = versions = 0
        conn = s.connection()  # a plain statement: no ORM execution around it
        for count, ids in _by_count(verified, results).items():
            row = conn.execute(
                _PG_STAMP, {"ids": ",".join(ids), "n": count, "t": t, "reason": reason}
            ).one()
            deleted += int(row.deleted)
            versions += int(row.deleted) * count
        return deleted, versions

    def _stamp(
        self,
        s: Session,
        verified: Sequence[Doomed],
        results: Mapping[str, DeleteResult],
        reason: str,
        t: datetime,
    ) -> tuple[int, int]:
        """The same in portable statements (SQLite has no data-modifying WITH): one UPDATE per
        distinct version count (usually one), then the jobs and the receipts."""
        objects = _OBJECTS.c
        stamped: dict[str, tuple[str | None, str, int]] = {}
        for count, ids in _by_count(verified, results).items():
            for row in s.execute(
                update(_OBJECTS)
                .where(id_in(self.db, objects.id, ids), objects.deleted_at.is_(None))
                .values(deleted_at=t, versions_deleted=count, claim_token=None, claim_until=None)
                .returning(objects.id, objects.job_id, objects.object_class)
            ):
                stamped[row.id] = (row.job_id, row.object_class, count)
        if not stamped:
            return 0, 0
        jobs = [job for job, cls, _ in stamped.values() if cls == "original" and job]
        if jobs:
            s.execute(
                update(_JOBS).where(id_in(self.db, _JOBS.c.id, jobs)).values(original_deleted_at=t)
            )
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
                ).where(id_in(self.db, objects.id, list(stamped))),
            )
        )
        return len(stamped), sum(n for _, _, n in stamped.values())


def _by_count(
    verified: Sequence[Doomed], results: Mapping[str, DeleteResult]
) -> dict[int, list[str]]:
    """Object ids grouped by the number of versions removed."""
    groups: dict[int, list[str]] = {}
    for d in verified:
        groups.setdefault(results[d.key].versions_removed, []).append(d.object_id)
    return groups


# Stamp (compare-and-set on deleted_at IS NULL), receipts from the stamped rows, and the jobs of
# stamped originals, in one statement: the rows are read once, nothing comes back but a count.
_PG_STAMP = text(
    """
    WITH stamped AS (
        UPDATE objects
        SET deleted_at = :t, versions_deleted = :n, claim_token = NULL, claim_until = NULL
        WHERE id = ANY(string_to_array(:ids, ',')) AND deleted_at IS NULL
        RETURNING id, job_id, object_class
    ), receipts AS (
        INSERT INTO deletion_receipts
            (id, object_id, object_class, versions_removed, verified, reason, deleted_at)
        SELECT id, id, object_class, :n, true, :reason, :t FROM stamped
    ), originals AS (
        UPDATE jobs SET original_deleted_at = :t
        WHERE id IN (SELECT job_id FROM stamped WHERE object_class = 'original')
    )
    SELECT count(*) AS deleted FROM stamped
    """
)
