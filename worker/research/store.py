"""Writing research samples: encrypted under the subject's key, one ledger row per source job.

Shared by the job-time sampler (:mod:`worker.research.sampling`) and the k-Same batch builder
(:mod:`worker.research.ksame`). The object key is ``research/{sample_id}`` (a random id: no
personal data; :mod:`worker.objects.layout`); the encryption context binds it, the class
``research`` and the source job id. The store is written first, the ledger second
(:meth:`worker.objects.records.ObjectRecords.store`): a crash in between leaves an object with no
row, which the orphan sweep deletes; a second writer for the same job loses on the unique
``source_job_id`` and deletes what it wrote, so a redelivered job keeps one sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.ids import new_id
from worker.ledger.db import Database
from worker.ledger.models import Base, ResearchSample, Subject
from worker.metrics import RESEARCH_SAMPLING, RESIDUAL_DISCARDS
from worker.objects.layout import research_key
from worker.objects.records import ObjectRecords, ObjectSpec

log = structlog.get_logger("facemedia.research")


def ineligible(subject: Subject | None) -> str | None:
    """Why the subject's data may not become a research sample now, or ``None`` if it may.

    Read from the subjects row when the decision is made, so a withdrawal or an erasure recorded
    before the job (or the batch) runs wins. A minor needs a guardian's consent as well.
    """
    if subject is None:
        return "no_subject"
    if subject.erased_at is not None or subject.erase_requested_at is not None:
        return "erased"
    if subject.consent_withdrawn_at is not None:
        return "withdrawn"
    if not subject.research_consent:
        return "no_consent"
    if subject.is_minor and not subject.guardian_consent:
        return "minor_without_guardian"
    return None


class NotEligible(Exception):
    """The subject became ineligible (withdrew, erased) between the decision and the write;
    nothing was kept. ``reason`` is the stable code of :func:`ineligible`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def count(outcome: str, reason: str) -> None:
    """Count one sampling decision (``facemedia_research_sampling_total``)."""
    RESEARCH_SAMPLING.labels(outcome, reason).inc()


def discard(profile: str, reason: str, job_id: str) -> None:
    """A de-identified derivative failed its gate: count it (both counters) and log the code."""
    RESIDUAL_DISCARDS.labels(profile, reason).inc()
    count("discarded", reason)
    log.info("research.discarded", job_id=job_id, reason=reason)


@dataclass(frozen=True)
class SampleRecord:
    """One de-identified derivative to keep, with what the ledger records about it."""

    job_id: str
    subject_id: str
    key_id: str
    media_kind: str
    operator: str
    data: bytes
    faces: int
    quasi: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    gate: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file name the sample is exported under."""
        return "sample.mp4" if self.media_kind == "video" else "sample.jpg"

    @property
    def content_type(self) -> str:
        """Its media type."""
        return "video/mp4" if self.media_kind == "video" else "image/jpeg"


class SampleWriter:
    """Stores research samples (expiring after ``retention.research``) and records them once
    per source job."""

    def __init__(self, db: Database, records: ObjectRecords) -> None:
        self.db = db
        self.records = records

    def exists(self, job_id: str) -> bool:
        """True if a sample of ``job_id`` is already recorded."""
        with self.db.session() as s:
            found = s.scalars(
                select(ResearchSample.id).where(ResearchSample.source_job_id == job_id)
            ).first()
            return found is not None

    def write(self, record: SampleRecord) -> str | None:
        """Encrypt and store the sample, then record it; its id, or ``None`` if the job already
        has one (what this call stored is deleted again). Raises :class:`NotEligible` if the
        subject withdrew or is being erased by now."""
        sample_id = new_id()

        def row(object_id: str, t: datetime) -> ResearchSample:
            return ResearchSample(
                id=sample_id,
                object_id=object_id,
                subject_id=record.subject_id,
                source_job_id=record.job_id,
                media_kind=record.media_kind,
                operator=record.operator,
                params=dict(record.params),
                faces=record.faces,
                gate=dict(record.gate),
                quasi=dict(record.quasi),
                created_at=t,
            )

        stored = store_once(
            self.records,
            ObjectSpec(
                research_key(sample_id),
                "research",
                job_id=record.job_id,
                subject_id=record.subject_id,
                name=record.name,
                content_type=record.content_type,
            ),
            record.key_id,
            record.data,
            row,
            audit_event="research.sampled",
        )
        if not stored:
            return None
        log.info("research.sampled", job_id=record.job_id, sample_id=sample_id)
        return sample_id


def store_once(
    records: ObjectRecords,
    spec: ObjectSpec,
    key_id: str,
    data: bytes,
    row: Callable[[str, datetime], Base],
    audit_event: str,
) -> bool:
    """Encrypt and store ``data``, then record its object row and ``row(object_id, now)`` in one
    transaction (:meth:`ObjectRecords.store`). False when the row's unique source job says this
    job was already recorded: the object just stored is deleted again (or left to the orphan
    sweep if that fails).

    The transaction re-reads the subject (``FOR UPDATE`` on PostgreSQL; SQLite's writers are
    serialised) and raises :class:`NotEligible` if it withdrew or is being erased: a withdrawal
    either commits first (and nothing is kept) or after (and its deletion finds this object).
    """

    def check(s: Session) -> None:
        why = ineligible(s.get(Subject, spec.subject_id, with_for_update=True))
        if why is not None:
            raise NotEligible(why)

    def then(s: Session, object_id: str, t: datetime) -> None:
        s.add(row(object_id, t))

    try:
        records.store(spec, key_id, data, audit_event=audit_event, check=check, then=then)
    except IntegrityError:
        return False
    return True


__all__ = [
    "NotEligible",
    "SampleRecord",
    "SampleWriter",
    "count",
    "discard",
    "ineligible",
    "store_once",
]
