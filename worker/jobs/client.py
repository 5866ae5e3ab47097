"""The client the upstream API calls: submit a job, read its status and outputs.

``submit`` encrypts the original under the subject's key while streaming it to the store,
records the job ``queued`` and enqueues ``facemedia.media.process`` with the job id only.

Every call takes a keyword-only ``tenant`` (default :data:`~worker.ledger.tenants.DEFAULT_TENANT`):
subjects are looked up and created in that tenant's namespace and a job belongs to the tenant it
was submitted under. ``submit`` with an ``idempotency_key`` is idempotent per tenant: the same
(tenant, key) answers the job recorded first (whatever its state, even failed), and nothing is
stored twice, even when two submissions race (a unique index decides).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.dispatch import names
from worker.ids import new_id
from worker.jobs import errors as codes
from worker.jobs import lifecycle
from worker.jobs.errors import JobError, JobNotFound, SubmitRefused
from worker.jobs.registry import handler
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.errors import SubjectErasurePending
from worker.ledger.models import Job, StoredObject, SubjectKeyRow
from worker.ledger.subjects import Consent, SubjectRegistry
from worker.ledger.tenants import DEFAULT_TENANT, check_tenant
from worker.objects.errors import ObjectsError
from worker.objects.layout import original_key
from worker.objects.records import ObjectRecords, ObjectSpec
from worker.research.quasi import UnknownAttribute, generalize

log = structlog.get_logger("facemedia.client")

IDEMPOTENCY_KEY_MAX_CHARS = 128


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


@dataclass(frozen=True)
class _JobRecord:
    """What :meth:`JobClient._record` writes of a submission (validated, generalized)."""

    job_id: str
    job_type: str
    params: dict[str, Any]
    quasi: dict[str, Any] | None
    tenant: str
    idempotency_key: str | None
    callback_url: str | None
    api_key_id: str | None


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
        tenant: str = DEFAULT_TENANT,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        api_key_id: str | None = None,
    ) -> str:
        """Store the original encrypted, record the job ``queued``, enqueue it; return its id.

        Refuses (SubmitRefused) an unknown job type, invalid params, an unknown attribute or an
        oversized upload before anything is kept. The caller's subject id is never stored: only
        its HMAC in ``tenant``'s namespace. ``attributes`` (``age``, ``region``, ``device``) are
        generalized here (:mod:`worker.research.quasi`) and, with research consent, recorded
        with the job in generalized form only; the raw values are kept nowhere.

        With ``idempotency_key`` (1-128 characters) a second submission with the same key in
        the same tenant returns the first job's id and stores nothing (the media is not read);
        an upload that failed or was refused (too large, cut short) gives its key up, so a
        retry submits anew.
        ``callback_url`` (checked by the caller) and ``api_key_id`` (the submitting key's id,
        never the key) are recorded with the job for the webhook delivery.
        """
        check_tenant(tenant)
        if idempotency_key is not None:
            if not 0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX_CHARS:
                raise SubmitRefused(codes.BAD_PARAMS, "the idempotency key must be 1-128 chars")
            existing = self.find_idempotent(tenant, idempotency_key)
            if existing is not None:
                return existing
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
        job_id = new_id()
        record = _JobRecord(
            job_id=job_id,
            job_type=job_type,
            params=clean,
            quasi=quasi.to_json() if keep_quasi else None,
            tenant=tenant,
            idempotency_key=idempotency_key,
            callback_url=callback_url,
            api_key_id=api_key_id,
        )
        try:
            try:
                # one transaction for a subject seen before: subject and key read, consent,
                # job, object row, audit entry
                with self.db.session() as s:
                    live = self.subjects.find_live(s, subject_id, consent, tenant=tenant)
                    if live is not None:
                        subject, key_id, key_row = live.ref.id, live.ref.key_id, live.key
                        spec, object_id = self._record(s, record, subject)
                if live is None:  # first sight (or back after an erasure): created first
                    ref = self.subjects.ensure(subject_id, consent, tenant=tenant)
                    subject, key_id = ref.id, ref.key_id
                    with self.db.session() as s:
                        key_row = s.get(SubjectKeyRow, key_id)
                        spec, object_id = self._record(s, record, subject)
            except SubjectErasurePending as exc:
                raise SubmitRefused(codes.SUBJECT_ERASED, str(exc)) from None
        except IntegrityError:
            # a concurrent submission with the same (tenant, idempotency key) recorded first
            existing = None
            if idempotency_key is not None:
                existing = self.find_idempotent(tenant, idempotency_key)
            if existing is None:
                raise
            return existing
        src = io.BytesIO(media) if isinstance(media, bytes | bytearray) else media
        limited = _Limited(src, self.max_upload_bytes)
        vault = None  # a key not in the ledger, or destroyed: the vault's own path says why
        if key_row is not None and key_row.wrapped is not None and key_row.destroyed_at is None:
            vault = self.records.vault_for([key_row])
        try:
            put = self.records.seal(spec, key_id, limited, vault=vault)  # type: ignore[arg-type]
        except (SubmitRefused, ObjectsError) as exc:
            self._abandon(job_id, object_id, spec.key, exc)
            raise
        self.records.stored(object_id, put)
        log.info("job.submitted", job_id=job_id, job_type=job_type)
        self.enqueue(job_id)
        return job_id

    def _record(self, s: Session, record: _JobRecord, subject: str) -> tuple[ObjectSpec, str]:
        """In the caller's transaction: the job ``queued``, its original's row reserved, and
        ``job.submitted`` last (the audit chain's lock is held from there to the commit)."""
        spec = ObjectSpec(
            original_key(record.job_id), "original", job_id=record.job_id, subject_id=subject
        )
        t = datetime.now(UTC)
        lifecycle.create(
            s,
            record.job_id,
            subject_id=subject,
            job_type=record.job_type,
            params=record.params,
            at=t,
            quasi=record.quasi,
            tenant=record.tenant,
            idempotency_key=record.idempotency_key,
            callback_url=record.callback_url,
            api_key_id=record.api_key_id,
        )
        object_id = self.records.reserve(s, spec, at=t)
        audit.append(
            s, "job.submitted", record.job_id, tenant=record.tenant, job_type=record.job_type
        )
        return spec, object_id

    def find_idempotent(self, tenant: str, idempotency_key: str) -> str | None:
        """The id of the job ``tenant`` submitted with ``idempotency_key``, if any (so the API
        can answer a retry before reading its body)."""
        with self.db.session() as s:
            found = s.scalars(
                select(Job.id).where(Job.tenant == tenant, Job.idempotency_key == idempotency_key)
            ).first()
        return None if found is None else str(found)

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
            # An upload cut short was never accepted: the caller's retry with the same
            # Idempotency-Key submits anew instead of answering this failed job.
            job.idempotency_key = None
            audit.append(s, "job.failed", job_id, tenant=job.tenant, error_code=str(code))

    def subject_ref(self, subject_id: str, *, tenant: str = DEFAULT_TENANT) -> str | None:
        """The ledger's opaque id for an upstream subject id in ``tenant`` (None if never
        seen there)."""
        ref = self.subjects.find(subject_id, tenant=tenant)
        return None if ref is None else ref.id

    def request_erasure(self, subject_id: str, *, tenant: str = DEFAULT_TENANT) -> bool:
        """Queue ``facemedia.privacy.erase`` for the subject; False if the ledger never saw it
        in ``tenant``."""
        return self._privacy(names.ERASE, subject_id, tenant)

    def request_consent_withdrawal(self, subject_id: str, *, tenant: str = DEFAULT_TENANT) -> bool:
        """Queue ``facemedia.privacy.withdraw_consent`` for the subject; False if the ledger
        never saw it in ``tenant``."""
        return self._privacy(names.WITHDRAW, subject_id, tenant)

    def _privacy(self, task: str, subject_id: str, tenant: str) -> bool:
        # The task carries the opaque id only: it is already the tenant's subject.
        ref = self.subject_ref(subject_id, tenant=tenant)
        if ref is None:
            return False
        if self.send is None:
            raise JobError("this client cannot send privacy tasks")
        self.send(task, [ref], names.queue_of(task))
        return True

    def job_exists(self, job_id: str, *, tenant: str | None = None) -> bool:
        """True if the ledger knows ``job_id`` (as ``tenant``'s job, when one is given)."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            return job is not None and (tenant is None or job.tenant == tenant)

    def outputs(self, job_id: str, *, tenant: str | None = None) -> dict[str, bytes]:
        """Decrypt a succeeded job's outputs into memory, by name (:class:`JobNotFound` for
        an unknown job or, with ``tenant``, another tenant's)."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or (tenant is not None and job.tenant != tenant):
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
