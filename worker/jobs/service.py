"""The job lifecycle: claim → load → run → store outputs → commit → delete the original.

Every transition is a compare-and-set in the ledger (:mod:`worker.jobs.lifecycle`), so a task
delivered twice does the work once. A claim is a lease (token + expiry) renewed by a heartbeat
(:mod:`worker.jobs.lease`) while the job runs; a redelivered job
whose worker died is taken over once the lease lapses. Order inside a job: outputs written and
recorded → state committed → original deleted (all versions) → deletion recorded. A crash anywhere
leaves a state that the next delivery (or the sweep) finishes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from pipelines.errors import PipelineError
from worker.jobs import errors as codes
from worker.jobs import lifecycle
from worker.jobs.errors import JobFailed, JobNotFound, TransientJobError, UnknownJobType
from worker.jobs.lease import Lease
from worker.jobs.lifecycle import ENDED, JobStatus
from worker.jobs.reads import job_status
from worker.jobs.registry import JobOutcome, Tools, handler
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import Job, StoredObject, Subject
from worker.metrics import RESEARCH_SAMPLING, job_ended, stage, timed_detector
from worker.objects.deleter import Deleter, Doomed
from worker.objects.errors import (
    ObjectCorrupt,
    ObjectMissing,
    ObjectsError,
    ObjectShredded,
    ObjectTooBig,
    ObjectUnavailable,
)
from worker.objects.layout import original_key, output_key, outputs_prefix
from worker.objects.records import ObjectRecords, ObjectSpec

log = structlog.get_logger("facemedia.jobs")

_OUT_OF_MEMORY = "the media needs more memory than the decode limit allows"


def _allocation_failure(exc: Exception) -> bool:
    """An OpenCV ``cv2.error`` for a failed allocation (code -4, StsNoMem)."""
    return type(exc).__module__.startswith("cv2") and "Insufficient memory" in str(exc)


def _known(versions: dict[str, str | None] | None, name: str) -> str | None:
    """The one version id of output ``name`` when it is certain, else None."""
    return None if versions is None else versions.get(name)


def _output(job: Job, name: str, content_type: str | None = None) -> ObjectSpec:
    """Output ``name`` of ``job``: where it is stored and what its row says."""
    return ObjectSpec(
        output_key(job.id, name),
        "output",
        job_id=job.id,
        subject_id=job.subject_id,
        name=name,
        content_type=content_type,
    )


def now() -> datetime:
    """The ledger's clock (UTC)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ServiceConfig:
    """Knobs of the lifecycle (from the settings)."""

    lease_seconds: int = 30
    max_deliveries: int = 5
    max_retries: int = 6
    max_upload_bytes: int = 200 * 1024 * 1024


@dataclass(frozen=True)
class ProcessResult:
    """What one delivery did. ``retry_in`` set: the job is leased elsewhere; try again later."""

    job_id: str
    status: str
    ran: bool = False
    retry_in: float | None = None


class JobService:
    """Runs jobs against the ledger and the objects layer; collaborators are injected."""

    def __init__(
        self,
        db: Database,
        records: ObjectRecords,
        tools: Tools,
        config: ServiceConfig,
        clock: Callable[[], datetime] = now,
        deleter: Deleter | None = None,
        sampler: Callable[[str, bytes], object] | None = None,
        subject_key_id: Callable[[str], str] | None = None,
    ) -> None:
        self.db = db
        # The id of the key a subject's objects are sealed under (a ledger read by default).
        # Its ledger errors mid-job are transient, like every ledger error the job meets.
        self.subject_key_id = subject_key_id or self._subject_key_id
        # Research sampling (worker.research.sampling.Sampler.sample): called with the job id
        # and the decrypted original inside the lease, after the outputs are stored.
        self.sampler = sampler
        # outputs: sealed, stored, recorded with ``retention.outputs`` (and the vault, for
        # reading the original)
        self.records = records
        self.vault = records.vault
        self.deleter = deleter or Deleter(db, records.vault.store, lambda: self.clock())
        self.tools = tools
        self.config = config
        self.clock = clock

    # ----- the one entry point a task calls ---------------------------------------------------

    def process(self, job_id: str) -> ProcessResult:
        """Run one delivery of ``job_id``. Raises TransientJobError when a retry is due.

        A transient fault after ``max_retries`` hand-backs fails the job (``retries_exhausted``).
        """
        claim = self._claim(job_id)
        if isinstance(claim, ProcessResult):
            return claim
        token, job = claim
        log.info("job.claimed", job_id=job_id, job_type=job.job_type, delivery=job.deliveries)
        if job.deliveries > self.config.max_deliveries:
            self._fail(job_id, token, codes.WORKER_LOST, "the job stopped its worker repeatedly")
            return self._finish_tail(job_id)
        try:
            with Lease(self.db, job_id, token, self.config.lease_seconds):
                media = self._load(job)
                outcome = self._run(job, media)
                versions = self._store_outputs(job, outcome)
                self._sample(job, media)
                del media
        except JobFailed as exc:
            self._discard_outputs(job_id)
            self._fail(job_id, token, exc.code, exc.message)
            return self._finish_tail(job_id)
        except TransientJobError as exc:
            if job.retries >= self.config.max_retries:
                self._discard_outputs(job_id)
                self._fail(job_id, token, codes.RETRIES_EXHAUSTED, f"gave up after retries: {exc}")
                return self._finish_tail(job_id)
            self._release(job_id, token)
            exc.attempt = job.retries + 1
            raise
        except (OperationalError, InterfaceError) as exc:
            # The ledger is unreachable (e.g. PostgreSQL restarting): not the job's fault, and
            # nothing can be recorded now. Retry; the lease lapses and the next delivery takes over.
            log.warning("job.ledger_unavailable", job_id=job_id)
            raise TransientJobError("the ledger is unavailable") from exc
        except Exception:
            log.exception("job.internal_error", job_id=job_id)
            self._discard_outputs(job_id)
            self._fail(job_id, token, codes.INTERNAL_ERROR, "internal error while processing")
            return self._finish_tail(job_id)
        if not self._commit_success(job, token, outcome, versions):
            return ProcessResult(job_id, self.status(job_id)["status"], ran=True)
        result = self._finish_tail(job_id)
        return ProcessResult(job_id, result.status, ran=True)

    # ----- claim / release ----------------------------------------------------------------------

    def _claim(self, job_id: str) -> tuple[str, Job] | ProcessResult:
        t = self.clock()
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound("no such job")
            status, lease_until, old_token = job.status, job.lease_until, job.lease_token
        if status in ENDED:
            return self._finish_tail(job_id)
        if status == JobStatus.PROCESSING and lease_until is not None and lease_until > t:
            return ProcessResult(job_id, status, retry_in=(lease_until - t).total_seconds() + 1)
        token = uuid.uuid4().hex
        with self.db.session() as s:
            won = lifecycle.claim(
                s,
                job_id,
                seen=status,
                old_token=old_token,
                token=token,
                at=t,
                lease=timedelta(seconds=self.config.lease_seconds),
            )
            if not won:  # somebody else claimed it between our read and our write
                return ProcessResult(
                    job_id, JobStatus.PROCESSING.value, retry_in=float(self.config.lease_seconds)
                )
            job = s.get(Job, job_id)
            assert job is not None
            s.refresh(job)
            audit.append(s, "job.claimed", job_id, delivery=job.deliveries)
            return token, job

    def _release(self, job_id: str, token: str) -> None:
        """Hand a claimed job back (transient fault): queued again, retry count bumped."""
        with self.db.session() as s:
            lifecycle.release(s, job_id, token)
            audit.append(s, "job.released", job_id, reason="transient")

    # ----- the work ----------------------------------------------------------------------------

    def _load(self, job: Job) -> bytes:
        """The decrypted original, in memory (never on disk)."""
        try:
            with stage(job.job_type, "decode"):
                media = self.vault.read(
                    original_key(job.id), "original", job.id, max_bytes=self.config.max_upload_bytes
                )
        except ObjectUnavailable as exc:
            raise TransientJobError(str(exc)) from exc
        except ObjectMissing:
            raise JobFailed(codes.ORIGINAL_MISSING, "the original is no longer stored") from None
        except ObjectShredded:
            raise JobFailed(codes.SUBJECT_ERASED, "the subject was erased") from None
        except ObjectTooBig:
            raise JobFailed(codes.TOO_LARGE, "the original exceeds the size limit") from None
        except ObjectCorrupt:
            raise JobFailed(codes.CORRUPT_MEDIA, "the stored original failed to decrypt") from None
        return media

    def _run(self, job: Job, media: bytes | None = None) -> JobOutcome:
        """Validate the params and run the handler on the original (loaded if not given)."""
        if media is None:
            media = self._load(job)
        try:
            h = handler(job.job_type)
            params = h.validate(job.params or {})
            started = time.perf_counter()
            detector = self.tools.detector
            tools = replace(self.tools, detector=lambda: timed_detector(detector(), job.job_type))
            with stage(job.job_type, "pipeline"):
                outcome = h.run(media, params, tools)
        except PipelineError as exc:
            raise JobFailed(exc.code, str(exc)) from None
        except UnknownJobType as exc:
            raise JobFailed(codes.BAD_PARAMS, str(exc)) from None
        except MemoryError:  # past the decode memory ceiling (decode_memory_limit_mb)
            raise JobFailed(codes.TOO_LARGE, _OUT_OF_MEMORY) from None
        except Exception as exc:
            if _allocation_failure(exc):  # OpenCV's own out-of-memory error
                raise JobFailed(codes.TOO_LARGE, _OUT_OF_MEMORY) from None
            raise
        log.info(
            "job.pipeline_done",
            job_id=job.id,
            job_type=job.job_type,
            faces=outcome.faces,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return outcome

    def _sample(self, job: Job, media: bytes) -> None:
        """Offer the decrypted original to research sampling; its failures never fail the job."""
        if self.sampler is None:
            return
        try:
            with stage(job.job_type, "research"):
                self.sampler(job.id, media)
        except Exception as exc:  # the sampler catches its own errors; this is the backstop
            RESEARCH_SAMPLING.labels("error", "sampler_crashed").inc()
            log.warning(
                "research.sample_failed",
                job_id=job.id,
                reason="sampler_crashed",
                exc_type=type(exc).__name__,
            )

    def _store_outputs(self, job: Job, outcome: JobOutcome) -> dict[str, str | None]:
        """Encrypt and store each output; return the version id each put created."""
        key_id = self.subject_key_id(job.subject_id)
        versions: dict[str, str | None] = {}
        for out in outcome.outputs:
            try:
                with stage(job.job_type, "store"):
                    put = self.records.seal(_output(job, out.name), key_id, out.data)
                versions[out.name] = put.version_id
            except ObjectUnavailable as exc:
                raise TransientJobError(str(exc)) from exc
            except ObjectsError as exc:
                raise JobFailed(codes.INTERNAL_ERROR, f"could not store an output: {exc}") from exc
        return versions

    def _subject_key_id(self, subject_id: str) -> str:
        """The subject's key id, read from the ledger."""
        with self.db.session() as s:
            subject = s.get(Subject, subject_id)
            assert subject is not None
            return subject.key_id

    def _discard_outputs(self, job_id: str) -> None:
        """No partial output survives a failed job (outputs are not yet recorded)."""
        try:
            keys = self.vault.keys(outputs_prefix(job_id))
        except ObjectsError:
            log.warning("job.discard_failed", job_id=job_id)
            return
        for key in keys:
            try:
                self.vault.delete(key)
            except ObjectsError:
                log.warning("job.discard_failed", job_id=job_id)

    # ----- state transitions -------------------------------------------------------------------

    def _commit_success(
        self,
        job: Job,
        token: str,
        outcome: JobOutcome,
        versions: dict[str, str | None] | None = None,
    ) -> bool:
        t = self.clock()
        # Only a first, uninterrupted attempt knows every version of its output keys; after a
        # takeover or a hand-back an earlier attempt may have left versions: list them on delete.
        known = versions if job.deliveries == 1 and job.retries == 0 else None
        with self.db.session() as s:
            won = lifecycle.succeed(
                s,
                job.id,
                token,
                at=t,
                summary={"faces": outcome.faces, **dict(outcome.summary)},
            )
            if not won:
                log.warning("job.lease_lost", job_id=job.id)
                return False
            for out in outcome.outputs:
                self.records.add(
                    s,
                    _output(job, out.name, out.content_type),
                    at=t,
                    size=len(out.data),
                    version_id=_known(known, out.name),
                )
            audit.append(
                s, "job.succeeded", job.id, outputs=len(outcome.outputs), faces=outcome.faces
            )
        job_ended(job.job_type, JobStatus.SUCCEEDED.value)
        log.info("job.succeeded", job_id=job.id, outputs=len(outcome.outputs), faces=outcome.faces)
        return True

    def _fail(self, job_id: str, token: str | None, code: str, message: str) -> None:
        t = self.clock()
        with self.db.session() as s:
            won = lifecycle.fail(s, job_id, code, message, at=t, token=token)
            if won:
                audit.append(s, "job.failed", job_id, error_code=code)
                job_type = s.scalar(select(Job.job_type).where(Job.id == job_id))
        if won:
            job_ended(job_type or "unknown", "failed", code)
            log.info("job.failed", job_id=job_id, error_code=code)

    def fail(self, job_id: str, code: str, message: str) -> ProcessResult:
        """Fail a job that has not ended, then delete its original."""
        self._fail(job_id, None, code, message)
        return self._finish_tail(job_id)

    # ----- the tail: delete the original -------------------------------------------------------

    def _finish_tail(self, job_id: str) -> ProcessResult:
        """Delete the original of an ended job (every version) and record it. Idempotent.

        Under a legal hold the original is kept but marked due, so the first sweep after the
        hold is released deletes it.
        """
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound("no such job")
            status = job.status
            original = s.scalars(
                select(StoredObject).where(
                    StoredObject.job_id == job_id, StoredObject.object_class == "original"
                )
            ).one_or_none()
            if original is None or original.deleted_at is not None:
                return ProcessResult(job_id, status)
            subject = s.get(Subject, job.subject_id)
            held = job.legal_hold or (subject is not None and subject.legal_hold)
            doomed = Doomed.of(original)
            if original.expires_at is None or original.expires_at > self.clock():
                original.expires_at = self.clock()  # due now: the sweep retries a failed delete
        if held:
            log.info("job.original_held", job_id=job_id)
            return ProcessResult(job_id, status)
        try:
            batch = self.deleter.delete([doomed], reason="job_ended")
        except ObjectUnavailable as exc:
            raise TransientJobError(str(exc)) from exc
        if batch.unverified:
            raise TransientJobError("a version of the original survived the delete")
        return ProcessResult(job_id, status)

    # ----- reads -------------------------------------------------------------------------------

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's public summary (ids, state, error code, counts, output names)."""
        return job_status(self.db, job_id)
