"""The job lifecycle: claim → load → run → store outputs → commit → delete the original.

Every transition is a compare-and-set in the ledger, so a task delivered twice does the work once.
A claim is a lease (token + expiry) renewed by a heartbeat while the job runs; a redelivered job
whose worker died is taken over once the lease lapses. Order inside a job: outputs written and
recorded → state committed → original deleted (all versions) → deletion recorded. A crash anywhere
leaves a state that the next delivery (or the sweep) finishes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, Update, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from pipelines.errors import PipelineError
from worker.crypto import CryptoError, KeyShreddedError
from worker.ids import new_id
from worker.jobs import errors as codes
from worker.jobs.errors import JobFailed, JobNotFound, TransientJobError, UnknownJobType
from worker.jobs.registry import JobOutcome, Tools, handler
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import Job, StoredObject, Subject
from worker.metrics import JOBS, RESEARCH_SAMPLING, stage, timed_detector
from worker.retention.deleter import Deleter, Doomed
from worker.storage.errors import ObjectMissing, StorageError, TransientStorageError
from worker.storage.vault import TooBig, Vault, original_key, output_key

log = structlog.get_logger("facemedia.jobs")

ENDED = frozenset({"succeeded", "failed", "expired"})
_OUT_OF_MEMORY = "the media needs more memory than the decode limit allows"


def _allocation_failure(exc: Exception) -> bool:
    """An OpenCV ``cv2.error`` for a failed allocation (code -4, StsNoMem)."""
    return type(exc).__module__.startswith("cv2") and "Insufficient memory" in str(exc)


def _cas(session: Session, stmt: Update) -> int:
    """Run a compare-and-set UPDATE; return how many rows it changed (0 or 1)."""
    result = session.execute(stmt)
    return int(cast(CursorResult[Any], result).rowcount)


def _known(versions: dict[str, str | None] | None, name: str) -> list[str] | None:
    """The one version id of output ``name`` when it is certain, else None."""
    version = None if versions is None else versions.get(name)
    return [version] if version else None


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
    output_retention: timedelta | None = timedelta(days=7)


@dataclass(frozen=True)
class ProcessResult:
    """What one delivery did. ``retry_in`` set: the job is leased elsewhere; try again later."""

    job_id: str
    status: str
    ran: bool = False
    retry_in: float | None = None


class _Lease:
    """Renews a claim's expiry from a background thread while the job runs."""

    def __init__(self, db: Database, job_id: str, token: str, seconds: int) -> None:
        self._db, self._job_id, self._token, self._seconds = db, job_id, token, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._seconds / 3):
            try:
                with self._db.session() as s:
                    _cas(
                        s,
                        update(Job)
                        .where(Job.id == self._job_id, Job.lease_token == self._token)
                        .values(lease_until=now() + timedelta(seconds=self._seconds)),
                    )
            except Exception:  # a missed beat only shortens the lease; the job goes on
                log.warning("lease.heartbeat_failed", job_id=self._job_id)


class JobService:
    """Runs jobs against the ledger and the vault; collaborators are injected."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        tools: Tools,
        config: ServiceConfig,
        clock: Callable[[], datetime] = now,
        deleter: Deleter | None = None,
        sampler: Callable[[str, bytes], object] | None = None,
    ) -> None:
        self.db = db
        # Research sampling (worker.research.sampling.Sampler.sample): called with the job id
        # and the decrypted original inside the lease, after the outputs are stored.
        self.sampler = sampler
        self.vault = vault
        self.deleter = deleter or Deleter(db, vault.store, lambda: self.clock())
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
            with _Lease(self.db, job_id, token, self.config.lease_seconds):
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
        if status == "processing" and lease_until is not None and lease_until > t:
            return ProcessResult(job_id, status, retry_in=(lease_until - t).total_seconds() + 1)
        token = uuid.uuid4().hex
        with self.db.session() as s:
            cond = [Job.id == job_id, Job.status == status]
            cond.append(
                Job.lease_token.is_(None) if old_token is None else Job.lease_token == old_token
            )
            changed = _cas(
                s,
                update(Job)
                .where(*cond)
                .values(
                    status="processing",
                    lease_token=token,
                    lease_until=t + timedelta(seconds=self.config.lease_seconds),
                    deliveries=Job.deliveries + 1,
                    started_at=t,
                ),
            )
            if changed != 1:  # somebody else claimed it between our read and our write
                return ProcessResult(
                    job_id, "processing", retry_in=float(self.config.lease_seconds)
                )
            job = s.get(Job, job_id)
            assert job is not None
            s.refresh(job)
            audit.append(s, "job.claimed", job_id, delivery=job.deliveries)
            return token, job

    def _release(self, job_id: str, token: str) -> None:
        """Hand a claimed job back (transient fault): queued again, retry count bumped."""
        with self.db.session() as s:
            _cas(
                s,
                update(Job)
                .where(Job.id == job_id, Job.lease_token == token, Job.status == "processing")
                .values(status="queued", lease_until=None, retries=Job.retries + 1),
            )
            audit.append(s, "job.released", job_id, reason="transient")

    # ----- the work ----------------------------------------------------------------------------

    def _load(self, job: Job) -> bytes:
        """The decrypted original, in memory (never on disk)."""
        try:
            with stage(job.job_type, "decode"):
                media = self.vault.read(
                    original_key(job.id), "original", job.id, max_bytes=self.config.max_upload_bytes
                )
        except TransientStorageError as exc:
            raise TransientJobError(str(exc)) from exc
        except ObjectMissing:
            raise JobFailed(codes.ORIGINAL_MISSING, "the original is no longer stored") from None
        except KeyShreddedError:
            raise JobFailed(codes.SUBJECT_ERASED, "the subject was erased") from None
        except TooBig:
            raise JobFailed(codes.TOO_LARGE, "the original exceeds the size limit") from None
        except CryptoError:
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
        key_id = self._key_id(job)
        versions: dict[str, str | None] = {}
        for out in outcome.outputs:
            try:
                with stage(job.job_type, "store"):
                    put = self.vault.put(
                        output_key(job.id, out.name), "output", job.id, key_id, out.data
                    )
                versions[out.name] = put.version_id
            except TransientStorageError as exc:
                raise TransientJobError(str(exc)) from exc
            except StorageError as exc:
                raise JobFailed(codes.INTERNAL_ERROR, f"could not store an output: {exc}") from exc
        return versions

    def _key_id(self, job: Job) -> str:
        with self.db.session() as s:
            subject = s.get(Subject, job.subject_id)
            assert subject is not None
            return subject.key_id

    def _discard_outputs(self, job_id: str) -> None:
        """No partial output survives a failed job (outputs are not yet recorded)."""
        prefix = f"outputs/{job_id}/"
        for key in list(self.vault.store.keys(prefix)):
            try:
                self.vault.delete(key)
            except StorageError:
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
            changed = _cas(
                s,
                update(Job)
                .where(Job.id == job.id, Job.lease_token == token, Job.status == "processing")
                .values(
                    status="succeeded",
                    finished_at=t,
                    lease_until=None,
                    summary={"faces": outcome.faces, **dict(outcome.summary)},
                    error_code=None,
                    error_message=None,
                    quasi=None,  # sampling is decided: the generalized attributes go
                ),
            )
            if changed != 1:
                log.warning("job.lease_lost", job_id=job.id)
                return False
            for out in outcome.outputs:
                key = output_key(job.id, out.name)
                s.add(
                    StoredObject(
                        id=new_id(),
                        key=key,
                        object_class="output",
                        job_id=job.id,
                        subject_id=job.subject_id,
                        name=out.name,
                        content_type=out.content_type,
                        size=len(out.data),
                        created_at=t,
                        stored_at=t,
                        expires_at=None
                        if self.config.output_retention is None
                        else t + self.config.output_retention,
                        version_ids=_known(known, out.name),
                    )
                )
            audit.append(
                s, "job.succeeded", job.id, outputs=len(outcome.outputs), faces=outcome.faces
            )
        JOBS.labels(job.job_type, "succeeded").inc()
        log.info("job.succeeded", job_id=job.id, outputs=len(outcome.outputs), faces=outcome.faces)
        return True

    def _fail(self, job_id: str, token: str | None, code: str, message: str) -> None:
        t = self.clock()
        with self.db.session() as s:
            cond = [Job.id == job_id, Job.status.in_(("queued", "processing"))]
            if token is not None:
                cond.append(Job.lease_token == token)
            changed = _cas(
                s,
                update(Job)
                .where(*cond)
                .values(
                    status="failed",
                    error_code=code,
                    error_message=message,
                    finished_at=t,
                    lease_until=None,
                    quasi=None,
                ),
            )
            if changed == 1:
                audit.append(s, "job.failed", job_id, error_code=code)
        if changed == 1:
            JOBS.labels("any", "failed").inc()
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
        except TransientStorageError as exc:
            raise TransientJobError(str(exc)) from exc
        if batch.unverified:
            raise TransientJobError("a version of the original survived the delete")
        return ProcessResult(job_id, status)

    # ----- reads -------------------------------------------------------------------------------

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's public summary (ids, state, error code, counts, output names)."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound("no such job")
            outputs = [
                o.name
                for o in s.query(StoredObject)
                .filter_by(job_id=job_id, object_class="output")
                .order_by(StoredObject.name)
                if o.deleted_at is None
            ]
            return {
                "job_id": job.id,
                "job_type": job.job_type,
                "status": job.status,
                "error_code": job.error_code,
                "error_message": job.error_message,
                "faces": (job.summary or {}).get("faces"),
                "outputs": outputs,
                "original_deleted": job.original_deleted_at is not None,
                "deliveries": job.deliveries,
                "retries": job.retries,
            }
