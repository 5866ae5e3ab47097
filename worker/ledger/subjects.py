"""Data subjects: created on first sight under a keyed hash, each with its own subject key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from worker.crypto import SubjectKeys
from worker.ids import new_id
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import Subject
from worker.ledger.pseudonyms import Pseudonymizer


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


class SubjectRegistry:
    """Finds or creates subjects; never stores the upstream id itself."""

    def __init__(self, db: Database, pseudonyms: Pseudonymizer, keys: SubjectKeys) -> None:
        self.db = db
        self.pseudonyms = pseudonyms
        self.keys = keys

    def find(self, subject_id: str) -> SubjectRef | None:
        """The subject if the ledger knows it (erased subjects included)."""
        digest = self.pseudonyms.subject_hash(subject_id)
        with self.db.session() as s:
            row = s.scalars(select(Subject).where(Subject.subject_hash == digest)).first()
            return None if row is None else SubjectRef(row.id, row.key_id)

    def ensure(self, subject_id: str, consent: Consent | None = None) -> SubjectRef:
        """Find or create the subject; record ``consent`` when given.

        A subject erased earlier who comes back gets a fresh subject key: nothing of the old
        data is reachable again.
        """
        digest = self.pseudonyms.subject_hash(subject_id)
        with self.db.session() as s:
            row = s.scalars(select(Subject).where(Subject.subject_hash == digest)).first()
            if row is not None:
                if row.erased_at is not None:
                    row.erased_at = None
                    row.key_id = self.keys.create()
                    audit.append(s, "subject.returned", row.id)
                if consent is not None:
                    self._apply(row, consent)
                return SubjectRef(row.id, row.key_id)
        key_id = self.keys.create()
        with self.db.session() as s:
            row = s.scalars(select(Subject).where(Subject.subject_hash == digest)).first()
            if row is not None:  # created concurrently: keep theirs, shred our unused key
                self.keys.destroy(key_id)
                return SubjectRef(row.id, row.key_id)
            row = Subject(
                id=new_id(),
                subject_hash=digest,
                key_id=key_id,
                created_at=datetime.now(UTC),
            )
            self._apply(row, consent or Consent())
            s.add(row)
            s.flush()
            audit.append(s, "subject.created", row.id)
            return SubjectRef(row.id, key_id)

    @staticmethod
    def _apply(row: Subject, consent: Consent) -> None:
        row.research_consent = consent.research
        row.is_minor = consent.is_minor
        row.guardian_consent = consent.guardian
