"""The one "seal, put, record the row with its TTL, audit" helper.

Every object the services store has an ``objects`` row (class, expiry from the class's TTL,
size, version ids) so the sweep, erasure and the deleter can find it. Three orders are used, each
for a reason, and all three are here:

- :meth:`ObjectRecords.store` — put first, then the row, the caller's own row(s) and one audit
  entry in one transaction; if that transaction fails (a unique source job already recorded, the
  subject withdrew meanwhile) the object just put is deleted again. A crash between the put and
  the commit leaves an object with no row, which the orphan sweep deletes. (Research samples,
  staged k-Same material.)
- :meth:`ObjectRecords.reserve` + :meth:`ObjectRecords.seal` + :meth:`ObjectRecords.stored` —
  the row first (in the caller's transaction, with the job it belongs to), then the upload, then
  its size and version: a crash mid-upload leaves a row whose expiry the sweep honours.
  (Originals, streamed from the upstream.)
- :meth:`ObjectRecords.seal` then :meth:`ObjectRecords.add` in the caller's transaction — when
  the rows must commit with a state change (a job's outputs with its ``succeeded``).

Release files, sealed under a release's own key or public, are recorded then put as they are
(:meth:`ObjectRecords.put_sealed`); their key may be rewritten (a re-signed revocation list), so
the row is found by key and refreshed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO, cast

import structlog
from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.crypto import KekRef, WrappedKey, WrappedSubjectKey
from worker.ids import new_id
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import StoredObject, Subject, SubjectKeyRow
from worker.ledger.tenants import DEFAULT_TENANT
from worker.storage.base import PutResult

from .errors import ObjectsError
from .vault import Vault

__all__ = ["ObjectRecords", "ObjectSpec", "PutResult"]

log = structlog.get_logger("facemedia.objects")

_OBJECTS = cast(Table, StoredObject.__table__)


@dataclass(frozen=True)
class ObjectSpec:
    """One object to store: its key (:mod:`worker.objects.layout`), class, owning job and
    subject (ledger ids), and the name and media type it is exported under."""

    key: str
    object_class: str
    job_id: str | None = None
    subject_id: str | None = None
    name: str | None = None
    content_type: str | None = None


class ObjectRecords:
    """Seals, stores and records objects; the TTL of each class is ``ttl(object_class)``
    (``Settings.retention.ttl``; None: kept until deleted or revoked)."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        ttl: Callable[[str], timedelta | None],
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.vault = vault
        self.ttl = ttl
        self.clock = clock

    def expiry(self, object_class: str, at: datetime) -> datetime | None:
        """When an object of ``object_class`` written at ``at`` is due for deletion."""
        ttl = self.ttl(object_class)
        return None if ttl is None else at + ttl

    # ----- the parts --------------------------------------------------------------------------

    def seal(
        self,
        spec: ObjectSpec,
        key_id: str,
        body: BinaryIO | bytes,
        *,
        vault: Vault | None = None,
    ) -> PutResult:
        """Encrypt ``body`` under subject key ``key_id`` (context: key, class, job) while
        uploading it to ``spec.key``; no row. ``vault``: one holding the key already
        (:meth:`vault_for`), so the seal reads nothing from the ledger."""
        return (vault or self.vault).put(spec.key, spec.object_class, spec.job_id, key_id, body)

    def add(
        self,
        s: Session,
        spec: ObjectSpec,
        *,
        at: datetime,
        size: int | None = None,
        version_id: str | None = None,
        stored: bool = True,
    ) -> StoredObject:
        """Add the object's row (expiry from its class's TTL) to the caller's transaction.
        ``stored=False`` reserves it before the upload (no size, no stored time yet)."""
        row = StoredObject(**self._row(spec, at, size, version_id, stored))
        s.add(row)
        return row

    def add_stored(
        self,
        s: Session,
        objects: Sequence[tuple[ObjectSpec, int | None, str | None]],
        *,
        at: datetime,
    ) -> None:
        """The rows of objects just stored, each ``(spec, size, version id)``, as :meth:`add`
        writes them, in one INSERT on the caller's transaction's connection (no ORM unit of
        work: the job's end records its outputs this way)."""
        if objects:
            s.connection().execute(
                insert(_OBJECTS),
                [self._row(spec, at, size, version, True) for spec, size, version in objects],
            )

    def _row(
        self, spec: ObjectSpec, at: datetime, size: int | None, version_id: str | None, stored: bool
    ) -> dict[str, Any]:
        """An ``objects`` row's values (a new id; the expiry from the class's TTL)."""
        return {
            "id": new_id(),
            "key": spec.key,
            "object_class": spec.object_class,
            "job_id": spec.job_id,
            "subject_id": spec.subject_id,
            "name": spec.name,
            "content_type": spec.content_type,
            "size": size,
            "created_at": at,
            "stored_at": at if stored else None,
            "expires_at": self.expiry(spec.object_class, at),
            "version_ids": [version_id] if version_id else None,
        }

    def reserve(self, s: Session, spec: ObjectSpec, *, at: datetime) -> str:
        """Record the object before it is uploaded (in the caller's transaction, one INSERT on
        its connection: no ORM unit of work); its row id. The owning job's row must be flushed
        already."""
        row = self._row(spec, at, None, None, False)
        s.connection().execute(insert(_OBJECTS), row)
        return str(row["id"])

    def stored(self, object_id: str, put: PutResult) -> None:
        """Stamp a reserved row with what the upload wrote: one statement, committed on its own
        (on PostgreSQL in autocommit: no BEGIN and COMMIT round trips around it)."""
        statement = (
            update(StoredObject)
            .where(StoredObject.id == object_id)
            .values(
                size=put.size,
                stored_at=self.clock(),
                version_ids=[put.version_id] if put.version_id else None,
            )
        )
        done: Any
        if self.db.dialect == "postgresql":
            with self.db.engine.connect() as conn:
                done = conn.execution_options(isolation_level="AUTOCOMMIT").execute(statement)
                conn.commit()  # a no-op on the server (autocommit): ends SQLAlchemy's block
        else:
            with self.db.session() as s:
                done = s.execute(statement, execution_options={"synchronize_session": False})
        if getattr(done, "rowcount", 1) != 1:
            raise ObjectsError("no such object row")

    # ----- the whole ----------------------------------------------------------------------------

    def store(
        self,
        spec: ObjectSpec,
        key_id: str,
        data: BinaryIO | bytes,
        *,
        audit_event: str,
        check: Callable[[Session], None] | None = None,
        then: Callable[[Session, str, datetime], Any] | None = None,
    ) -> str:
        """Seal and put ``data``, then in one transaction: ``check(session)`` (may raise to
        refuse), the object row, ``then(session, object_id, now)`` (the caller's rows), one
        audit entry ``audit_event`` naming the object. Returns the object id. If the
        transaction fails the object just put is deleted again (or left to the orphan sweep
        if that fails too) and the error is raised."""
        put = self.seal(spec, key_id, data)
        t = self.clock()
        try:
            with self.db.session() as s:
                if check is not None:
                    check(s)
                row = self.add(s, spec, at=t, size=put.size, version_id=put.version_id)
                s.flush()
                if then is not None:
                    then(s, row.id, t)
                    s.flush()
                audit.append(
                    s,
                    audit_event,
                    row.id,
                    tenant=self._tenant(s, spec),
                    object_class=spec.object_class,
                )
                return row.id
        except BaseException:
            self.discard(spec)
            raise

    @staticmethod
    def _tenant(s: Session, spec: ObjectSpec) -> str:
        """The tenant an object's audit entry belongs to: its subject's (the operator's own
        objects, with no subject, are the default tenant's)."""
        if spec.subject_id is None:
            return DEFAULT_TENANT
        tenant = s.scalar(select(Subject.tenant).where(Subject.id == spec.subject_id))
        return DEFAULT_TENANT if tenant is None else str(tenant)

    def discard(self, spec: ObjectSpec) -> None:
        """Delete an object that was put but never recorded (no receipt: no row)."""
        try:
            self.vault.delete(spec.key)
        except ObjectsError:
            log.warning("objects.undo_failed", object_class=spec.object_class)

    # ----- release files ----------------------------------------------------------------------

    def record_key(self, spec: ObjectSpec, size: int | None) -> None:
        """Record ``spec.key`` (or refresh its row: size, stored time, not deleted)."""
        with self.db.session() as s:
            row = s.scalars(select(StoredObject).where(StoredObject.key == spec.key)).first()
            t = self.clock()
            if row is None:
                try:
                    with s.begin_nested():
                        self.add(s, spec, at=t, size=size)
                except IntegrityError:
                    pass  # recorded meanwhile by a concurrent writer
            else:
                row.size = size
                row.stored_at = t
                row.deleted_at = None

    def put_sealed(self, spec: ObjectSpec, body: BinaryIO | bytes) -> PutResult:
        """Record, put ``body`` as it is (sealed under its owner's key, or public), and record
        its size. The row is written first, so an object is never stored unrecorded."""
        self.record_key(spec, None)
        put = self.vault.put_raw(spec.key, body)
        self.record_key(spec, put.size)
        return put

    # ----- batch reads ------------------------------------------------------------------------

    def reader(self, key_ids: set[str]) -> Vault:
        """A vault that opens objects under the given subject keys, their wrapped keys fetched
        in one ledger query (destroyed keys left out: their objects do not open)."""
        with self.db.session() as s:
            rows = list(
                s.scalars(
                    select(SubjectKeyRow).where(
                        SubjectKeyRow.key_id.in_(key_ids),
                        SubjectKeyRow.wrapped.is_not(None),
                        SubjectKeyRow.destroyed_at.is_(None),
                    )
                )
            )
        return self.vault_for(rows)

    def vault_for(self, rows: Iterable[SubjectKeyRow]) -> Vault:
        """A vault that seals and opens objects under the subject keys of ``rows`` (read by the
        caller, in a transaction it needed anyway) without another ledger read; destroyed keys
        are left out (their objects neither open nor seal)."""
        return self.vault.with_keys(
            WrappedSubjectKey(r.key_id, WrappedKey(KekRef(r.keyring_id, r.kek_version), r.wrapped))
            for r in rows
            if r.wrapped is not None and r.destroyed_at is None
        )

    def __repr__(self) -> str:
        return f"ObjectRecords({self.vault!r})"
