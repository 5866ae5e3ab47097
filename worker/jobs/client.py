"""The client the upstream API calls: submit a job, read its status and outputs.

``submit`` encrypts the original under the subject's key while streaming it to the store,
records the job ``queued`` and enqueues ``facemedia.media.process`` with the job id only.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, BinaryIO

import structlog
from sqlalchemy import select

from worker.dispatch import names
from worker.ids import new_id
from worker.jobs import errors as codes
from worker.jobs import lifecycle
from worker.jobs.errors import JobError, JobNotFound, SubmitRefused
from worker.jobs.registry import handler
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import Job, StoredObject
from worker.ledger.subjects import Consent, SubjectErasurePending, SubjectRegistry
from worker.objects.errors import ObjectsError
from worker.objects.layout import original_key
from worker.objects.records import ObjectRecords, ObjectSpec
from worker.research.quasi import UnknownAttribute, generalize

log = structlog.get_logger("facemedia.client")


class _Limited:
    """A reader that refuses to pass more than ``limit`` bytes."""

    def __init__(self, inner: BinaryIO, limit: int) -> None:
        self._inner, self._limit, self.count = inner, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.count += len(data)
        if self.count > self._limit:
            raise SubmitRefused(codes.TOO_LARGE, "the upload exceeds the size limit")
        return data


class JobClient:
    """Submits jobs and reads results; ``enqueue`` sends a job id to the media queue."""

    def __init__(
        self,
        db: Database,
        records: ObjectRecords,
        subjects: SubjectRegistry,
        enqueue: Callable[[str], None],
        max_upload_bytes: int,
        send: Callable[[str, list[Any], str], None] | None = None,
    ) -> None:
        self.db = db
        # originals: recorded (expiring after ``retention.originals``) before the upload
        self.records = records
        self.subjects = subjects
        self.enqueue = enqueue
        self.max_upload_bytes = max_upload_bytes
        self.send = send

    def submit(
        self,
        media: bytes | BinaryIO,
        job_type: str,
        params: Mapping[str, Any] | None = None,
        *,
        subject_id: str,
        consent: Consent | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Store the original encrypted, record the job ``queued``, enqueue it; return its id.

        Refuses (SubmitRefused) an unknown job type, invalid params, an unknown attribute or an
        oversized upload before anything is kept. The caller's subject id is never stored: only
        its HMAC. ``attributes`` (``age``, ``region``, ``device``) are generalized here
        (:mod:`worker.research.quasi`) and, with research consent, recorded with the job in
        generalized form only; the raw values are kept nowhere.
        """
        try:
            clean = dict(handler(job_type).validate(dict(params or {})))
        except Exception as exc:
            code = getattr(exc, "code", codes.BAD_PARAMS)
            raise SubmitRefused(str(code), str(exc)) from None
        try:
            quasi = generalize(attributes)
        except UnknownAttribute as exc:
            raise SubmitRefused(codes.BAD_PARAMS, str(exc)) from None
        del attributes
        consent = consent or Consent()
        keep_quasi = consent.research and (not consent.is_minor or consent.guardian)
        try:
            ref = self.subjects.ensure(subject_id, consent)
        except SubjectErasurePending as exc:
            raise SubmitRefused(codes.SUBJECT_ERASED, str(exc)) from None
        subject, key_id = ref.id, ref.key_id
        job_id = new_id()
        spec = ObjectSpec(original_key(job_id), "original", job_id=job_id, subject_id=subject)
        t = datetime.now(UTC)
        with self.db.session() as s:
            lifecycle.create(
                s,
                job_id,
                subject_id=subject,
                job_type=job_type,
                params=clean,
                at=t,
                quasi=quasi.to_json() if keep_quasi else None,
            )
            s.flush()
            object_id = self.records.reserve(s, spec, at=t)
            audit.append(s, "job.submitted", job_id, job_type=job_type)
        src = io.BytesIO(media) if isinstance(media, bytes | bytearray) else media
        limited = _Limited(src, self.max_upload_bytes)
        try:
            put = self.records.seal(spec, key_id, limited)  # type: ignore[arg-type]
        except (SubmitRefused, ObjectsError) as exc:
            self._abandon(job_id, object_id, spec.key, exc)
            raise
        self.records.stored(object_id, put)
        log.info("job.submitted", job_id=job_id, job_type=job_type)
        self.enqueue(job_id)
        return job_id

    def _abandon(self, job_id: str, object_id: str, key: str, exc: Exception) -> None:
        """The upload failed: remove whatever reached the store and fail the job."""
        code = getattr(exc, "code", codes.INTERNAL_ERROR)
        try:
            self.records.vault.delete(key)
            deleted = True
        except ObjectsError:
            deleted = False  # the sweep removes it once the original's max age passes
        t = datetime.now(UTC)
        message = "the upload was refused" if code == codes.TOO_LARGE else "upload failed"
        with self.db.session() as s:
            lifecycle.fail(s, job_id, str(code), message, at=t)  # queued: never enqueued
            job = s.get(Job, job_id)
            obj = s.get(StoredObject, object_id)
            assert job is not None and obj is not None
            if deleted:
                obj.deleted_at = job.original_deleted_at = t
            audit.append(s, "job.failed", job_id, error_code=str(code))

    def subject_ref(self, subject_id: str) -> str | None:
        """The ledger's opaque id for an upstream subject id (None if never seen)."""
        ref = self.subjects.find(subject_id)
        return None if ref is None else ref.id

    def request_erasure(self, subject_id: str) -> bool:
        """Queue ``facemedia.privacy.erase`` for the subject; False if the ledger never saw it."""
        return self._privacy(names.ERASE, subject_id)

    def request_consent_withdrawal(self, subject_id: str) -> bool:
        """Queue ``facemedia.privacy.withdraw_consent`` for the subject."""
        return self._privacy(names.WITHDRAW, subject_id)

    def _privacy(self, task: str, subject_id: str) -> bool:
        ref = self.subject_ref(subject_id)
        if ref is None:
            return False
        if self.send is None:
            raise JobError("this client cannot send privacy tasks")
        self.send(task, [ref], names.queue_of(task))
        return True

    def job_exists(self, job_id: str) -> bool:
        """True if the ledger knows ``job_id``."""
        with self.db.session() as s:
            return s.get(Job, job_id) is not None

    def outputs(self, job_id: str) -> dict[str, bytes]:
        """Decrypt a succeeded job's outputs into memory, by name."""
        with self.db.session() as s:
            if s.get(Job, job_id) is None:
                raise JobNotFound("no such job")
            rows = list(
                s.scalars(
                    select(StoredObject).where(
                        StoredObject.job_id == job_id,
                        StoredObject.object_class == "output",
                        StoredObject.deleted_at.is_(None),
                    )
                )
            )
        return {str(r.name): self.records.vault.read(r.key, "output", job_id) for r in rows}
