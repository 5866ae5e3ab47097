"""Data subjects: created on first sight under a keyed hash, each with its own subject key.

A subject whose erasure completed and who comes back (the upstream submits for the same id
again) is a new subject: a new ``subjects`` row with a new id, a new subject key and only the
consent given now. The erased row keeps its tombstone state (erased, key destroyed, on the
revocation list of the releases that held its samples) but gives up the keyed hash, which is
replaced by ``retired:<row id>`` in one compare-and-set statement; nothing links the new row to
the old one except the upstream id, which the ledger never stores. So the old erasure stays
complete (nothing of it is reachable through the new record), the sweep's pending-erasure pass
can never reach the new row or its key, and the new row's research samples, given consent, may
enter future releases (the old row's revocation is untouched and keeps reaching old releases).

Subjects are namespaced by tenant (:mod:`worker.ledger.tenants`): the pseudonym is computed in the
tenant's namespace and the row carries the tenant, so tenant A's ``u1`` is never tenant B's.

A subject whose erasure was requested but has not completed (a legal hold keeps it pending, or
it is running) is refused (:class:`SubjectErasurePending`): new data accepted then would be
erased with the old, silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.crypto import SubjectKeys
from worker.ids import new_id
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.errors import LedgerError, SubjectErasurePending
from worker.ledger.models import Subject, SubjectKeyRow
from worker.ledger.pseudonyms import Pseudonymizer
from worker.ledger.tenants import DEFAULT_TENANT

RETIRED_PREFIX = "retired:"
"""The ``subject_hash`` of an erased row a returning subject replaced (never a hex digest)."""

_ATTEMPTS = 5


@dataclass(frozen=True)
class Consent:
    """What the subject agreed to, as the upstream recorded it."""

    research: bool = False
    is_minor: bool = False
    guardian: bool = False


@dataclass(frozen=True)
class SubjectRef:
    """The ledger's handles on a subject: its row id and its live subject key id."""

    id: str
    key_id: str


@dataclass(frozen=True)
class LiveSubject:
    """A live subject read in the caller's transaction (:meth:`SubjectRegistry.find_live`):
    its handles and its key's row (None if the key's row is missing), so the caller seals
    under the key without another read."""

    ref: SubjectRef
    key: SubjectKeyRow | None = field(repr=False)


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


class SubjectRegistry:
    """Finds or creates subjects; never stores the upstream id itself."""

    def __init__(self, db: Database, pseudonyms: Pseudonymizer, keys: SubjectKeys) -> None:
        self.db = db
        self.pseudonyms = pseudonyms
        self.keys = keys

    def find(self, subject_id: str, *, tenant: str = DEFAULT_TENANT) -> SubjectRef | None:
        """The subject if the ledger knows it in ``tenant`` (erased subjects included, until
        they return)."""
        digest = self.pseudonyms.subject_hash(subject_id, tenant=tenant)
        with self.db.session() as s:
            row = s.scalars(self._by_hash(digest, tenant)).first()
            return None if row is None else SubjectRef(row.id, row.key_id)

    @staticmethod
    def _by_hash(digest: str, tenant: str) -> Any:
        return select(Subject).where(Subject.subject_hash == digest, Subject.tenant == tenant)

    def find_live(
        self, s: Session, subject_id: str, consent: Consent, *, tenant: str = DEFAULT_TENANT
    ) -> LiveSubject | None:
        """In the caller's transaction: the subject, if the ledger knows it live in ``tenant``,
        with its key's row (one statement), ``consent`` recorded (an UPDATE only if it
        changed); None if it must be created or has returned after an erasure (then
        :meth:`ensure`, outside any transaction). :class:`SubjectErasurePending` as
        :meth:`ensure`."""
        digest = self.pseudonyms.subject_hash(subject_id, tenant=tenant)
        row = s.execute(
            select(
                Subject.id,
                Subject.key_id,
                Subject.erased_at,
                Subject.erase_requested_at,
                Subject.research_consent,
                Subject.is_minor,
                Subject.guardian_consent,
                SubjectKeyRow.keyring_id,
                SubjectKeyRow.kek_version,
                SubjectKeyRow.wrapped,
                SubjectKeyRow.created_at,
                SubjectKeyRow.destroyed_at,
            )
            .outerjoin(SubjectKeyRow, SubjectKeyRow.key_id == Subject.key_id)
            .where(Subject.subject_hash == digest, Subject.tenant == tenant)
            .limit(1)
        ).first()
        if row is None or row.erased_at is not None:
            return None
        if row.erase_requested_at is not None:
            raise SubjectErasurePending()
        given = (consent.research, consent.is_minor, consent.guardian)
        if (row.research_consent, row.is_minor, row.guardian_consent) != given:
            s.execute(
                update(Subject)
                .where(Subject.id == row.id)
                .values(
                    research_consent=consent.research,
                    is_minor=consent.is_minor,
                    guardian_consent=consent.guardian,
                ),
                execution_options={"synchronize_session": False},
            )
        key = None
        if row.keyring_id is not None:
            key = SubjectKeyRow(
                key_id=row.key_id,
                keyring_id=row.keyring_id,
                kek_version=row.kek_version,
                wrapped=row.wrapped,
                created_at=row.created_at,
                destroyed_at=row.destroyed_at,
            )
        return LiveSubject(SubjectRef(str(row.id), str(row.key_id)), key)

    def ensure(
        self, subject_id: str, consent: Consent | None = None, *, tenant: str = DEFAULT_TENANT
    ) -> SubjectRef:
        """Find or create the subject in ``tenant``; record ``consent`` when given.

        A subject erased earlier who comes back is a new subject (see the module docstring):
        a new row and key, consent as given now. :class:`SubjectErasurePending` if an erasure
        of the subject is still pending. The new key is created before any ledger transaction
        is opened (on SQLite writers are serialised: a key written from inside an open write
        transaction waited on that transaction's own lock until ``database is locked``).
        """
        digest = self.pseudonyms.subject_hash(subject_id, tenant=tenant)
        for _ in range(_ATTEMPTS):
            with self.db.session() as s:
                row = s.scalars(self._by_hash(digest, tenant)).first()
                if row is not None and row.erased_at is None:
                    if row.erase_requested_at is not None:
                        raise SubjectErasurePending()
                    if consent is not None:
                        self._apply(row, consent)
                    return SubjectRef(row.id, row.key_id)
                erased = None if row is None else row.id
            key_id = self.keys.create()
            try:
                ref = self._record(digest, key_id, erased, consent or Consent(), tenant)
            except IntegrityError:  # another process recorded this subject first
                ref = None
            if ref is not None:
                return ref
            self.keys.destroy(key_id)  # ours lost the race: shred it unused, read theirs
        raise LedgerError("the subject could not be recorded (concurrent changes); retry")

    def _record(
        self, digest: str, key_id: str, erased: str | None, consent: Consent, tenant: str
    ) -> SubjectRef | None:
        """Insert the subject's row; for a returning subject first retire the erased row's
        hash with a compare-and-set (None if it is no longer this subject's erased row)."""
        with self.db.session() as s:
            if erased is not None:
                retired = s.execute(
                    update(Subject)
                    .where(
                        Subject.id == erased,
                        Subject.tenant == tenant,
                        Subject.subject_hash == digest,
                        Subject.erased_at.is_not(None),
                    )
                    .values(subject_hash=RETIRED_PREFIX + erased),
                    execution_options={"synchronize_session": False},
                )
                if _rowcount(retired) != 1:
                    return None
            row = Subject(
                id=new_id(),
                tenant=tenant,
                subject_hash=digest,
                key_id=key_id,
                created_at=datetime.now(UTC),
            )
            self._apply(row, consent)
            s.add(row)
            s.flush()
            event = "subject.returned" if erased else "subject.created"
            audit.append(s, event, row.id, tenant=tenant)
            return SubjectRef(row.id, key_id)

    @staticmethod
    def _apply(row: Subject, consent: Consent) -> None:
        row.research_consent = consent.research
        row.is_minor = consent.is_minor
        row.guardian_consent = consent.guardian
