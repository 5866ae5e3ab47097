"""The job lifecycle: claim → load → run → store outputs → commit → delete the original.

Every transition is a compare-and-set in the ledger (:mod:`worker.jobs.lifecycle`), so a task
delivered twice does the work once. A claim is a lease (token + expiry) renewed by a heartbeat
(:mod:`worker.jobs.lease`) while the job runs; a redelivered job
whose worker died is taken over once the lease lapses. Order inside a job: outputs written and
recorded → state committed → original deleted (all versions) → deletion recorded. A crash anywhere
leaves a state that the next delivery (or the sweep) finishes.

A job that runs to the end costs three ledger transactions (a test counts them on PostgreSQL):

1. the claim — the compare-and-set that takes the lease returns the job's row, the subject's
   wrapped key is read with it (the original is decrypted and the outputs sealed with that key,
   no further key reads), and ``job.claimed`` is audited;
2. the end — the original's row and the legal holds are read, the outputs recorded, the job
   moved to ``succeeded`` (compare-and-set on the lease token), ``job.succeeded`` audited, the
   research sampler's decision counted and the original marked due (so the sweep retries a
   delete that fails from here on);
3. the deletion record — after every version of the original is gone from the store, its
   receipt (:class:`~worker.objects.deleter.Deleter`).

A job shorter than a third of the lease sends no heartbeat. The research sampler decides on the
rows the claim read; only a sample it keeps costs transactions of its own. The audit checkpoint
that ends every unit of work (a task, an inline run) is one more, outside the service.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import Table, and_, bindparam, or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

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
from worker.ledger.models import Job, StoredObject, Subject, UtcDateTime
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
from worker.objects.vault import Vault

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


class Sampler(Protocol):
    """Research sampling as the service calls it: the job id and the decrypted original, the
    job's and subject's rows read with the claim, and ``defer`` taking a write for the
    transaction that ends the job. It never raises (a raise is counted and logged)."""

    def __call__(
        self,
        job_id: str,
        media: bytes,
        *,
        job: Job,
        subject: Subject | None,
        defer: Callable[[Callable[[Session], None]], None],
    ) -> object: ...


@dataclass(frozen=True)
class ProcessResult:
    """What one delivery did. ``retry_in`` set: the job is leased elsewhere; try again later."""

    job_id: str
    status: str
    ran: bool = False
    retry_in: float | None = None


@dataclass(frozen=True)
class Claim:
    """A won claim: the lease ``token``, the job's and its subject's rows as the claim read
    them (detached), the subject's key id and a vault holding that key (``None``: the key is
    destroyed, the subject erased), all read in the claim's transaction. ``deferred``: ledger
    writes for the transaction that ends the job (the research funnel's count)."""

    token: str
    job: Job
    subject: Subject | None
    key_id: str | None
    vault: Vault | None
    deferred: list[Callable[[Session], None]] = field(default_factory=list)


@dataclass(frozen=True)
class _Tail:
    """A job and its original, read in the transaction that ends it (or finds it ended): its
    status, whether its subject's erasure was requested, what to delete (``None``: already
    deleted, or never stored) and whether a legal hold keeps it."""

    status: str
    erasing: bool = False
    doomed: Doomed | None = None
    held: bool = False


class _SubjectErased(Exception):
    """The subject's erasure was requested while the job ran: its outputs are not recorded."""


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
        sampler: Sampler | None = None,
        on_ended: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        # Research sampling (worker.research.sampling.Sampler.sample): called inside the
        # lease, after the outputs are stored (see :class:`Sampler`).
        self.sampler = sampler
        # Called with the job id once a job this delivery ended (succeeded or failed) has had
        # its original deleted (or kept under a hold), outside any transaction, only for a job
        # submitted with a ``callback_url`` (the webhook service schedules its delivery).
        self.on_ended = on_ended
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
        job, token = claim.job, claim.token
        log.info("job.claimed", job_id=job_id, job_type=job.job_type, delivery=job.deliveries)
        if job.deliveries > self.config.max_deliveries:
            return self._fail_and_finish(
                job, token, codes.WORKER_LOST, "the job stopped its worker repeatedly"
            )
        try:
            with Lease(self.db, job_id, token, self.config.lease_seconds):
                media = self._load(claim)
                outcome = self._run(job, media)
                versions = self._store_outputs(claim, outcome)
                self._sample(claim, media)
                del media
        except JobFailed as exc:
            self._discard_outputs(job_id)
            return self._fail_and_finish(job, token, exc.code, exc.message)
        except TransientJobError as exc:
            if job.retries >= self.config.max_retries:
                self._discard_outputs(job_id)
                return self._fail_and_finish(
                    job, token, codes.RETRIES_EXHAUSTED, f"gave up after retries: {exc}"
                )
            self._release(job, token)
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
            return self._fail_and_finish(
                job, token, codes.INTERNAL_ERROR, "internal error while processing"
            )
        try:
            tail = self._commit_success(claim, outcome, versions)
        except _SubjectErased:
            self._discard_outputs(job_id)
            return self._fail_and_finish(job, token, codes.SUBJECT_ERASED, "the subject was erased")
        except (OperationalError, InterfaceError) as exc:
            log.warning("job.ledger_unavailable", job_id=job_id)
            raise TransientJobError("the ledger is unavailable") from exc
        if tail is None:  # the lease was lost: another delivery owns the job now
            return ProcessResult(job_id, self.status(job_id)["status"], ran=True)
        try:
            self._delete_original(job_id, tail)
        finally:
            self._ended(job)
        return ProcessResult(job_id, JobStatus.SUCCEEDED.value, ran=True)

    # ----- claim / release ----------------------------------------------------------------------

    def _claim(self, job_id: str) -> Claim | ProcessResult:
        """Take the job's lease, its row and its subject's key in one transaction; or say why
        not (ended: its tail is finished here; leased elsewhere: when to look again)."""
        t = self.clock()
        token = uuid.uuid4().hex
        lease = timedelta(seconds=self.config.lease_seconds)
        with self.db.session() as s:
            taken = lifecycle.take_with_subject(s, job_id, token=token, at=t, lease=lease)
            if taken is None:
                seen = s.execute(
                    select(Job.status, Job.lease_until).where(Job.id == job_id)
                ).one_or_none()
            else:
                job, subject, key = taken
                audit.append(s, "job.claimed", job_id, tenant=job.tenant, delivery=job.deliveries)
        if taken is not None:
            live = key is not None and key.wrapped is not None and key.destroyed_at is None
            return Claim(
                token,
                job,
                subject,
                key.key_id if key is not None else None,
                self.records.vault_for([key]) if live and key is not None else None,
            )
        if seen is None:
            raise JobNotFound("no such job")
        status, lease_until = seen
        if status in ENDED:
            return self._finish_tail(job_id)
        if lease_until is not None and lease_until > t:
            return ProcessResult(job_id, status, retry_in=(lease_until - t).total_seconds() + 1)
        # free again by now: somebody else claimed it and ended its lease meanwhile
        return ProcessResult(job_id, status, retry_in=float(self.config.lease_seconds))

    def _release(self, job: Job, token: str) -> None:
        """Hand a claimed job back (transient fault): queued again, retry count bumped."""
        with self.db.session() as s:
            lifecycle.release(s, job.id, token)
            audit.append(s, "job.released", job.id, tenant=job.tenant, reason="transient")

    # ----- the work ----------------------------------------------------------------------------

    def _load(self, claim: Claim) -> bytes:
        """The decrypted original, in memory (never on disk), opened with the claim's key."""
        job = claim.job
        if claim.vault is None:
            raise JobFailed(codes.SUBJECT_ERASED, "the subject was erased")
        try:
            with stage(job.job_type, "decode"):
                media = claim.vault.read(
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

    def _run(self, job: Job, media: bytes) -> JobOutcome:
        """Validate the params and run the handler on the original."""
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

    def _sample(self, claim: Claim, media: bytes) -> None:
        """Offer the decrypted original to research sampling, with the rows the claim read; the
        sampler's count waits for the transaction that ends the job. Its failures never fail
        the job."""
        if self.sampler is None:
            return
        job = claim.job
        try:
            with stage(job.job_type, "research"):
                self.sampler(
                    job.id, media, job=job, subject=claim.subject, defer=claim.deferred.append
                )
        except Exception as exc:  # the sampler catches its own errors; this is the backstop
            RESEARCH_SAMPLING.labels("error", "sampler_crashed").inc()
            log.warning(
                "research.sample_failed",
                job_id=job.id,
                reason="sampler_crashed",
                exc_type=type(exc).__name__,
            )

    def _store_outputs(self, claim: Claim, outcome: JobOutcome) -> dict[str, str | None]:
        """Encrypt each output under the claim's key and store it; return the version id each
        put created."""
        job = claim.job
        if claim.vault is None or claim.key_id is None:
            raise JobFailed(codes.SUBJECT_ERASED, "the subject was erased")
        versions: dict[str, str | None] = {}
        for out in outcome.outputs:
            try:
                with stage(job.job_type, "store"):
                    put = self.records.seal(
                        _output(job, out.name), claim.key_id, out.data, vault=claim.vault
                    )
                versions[out.name] = put.version_id
            except ObjectUnavailable as exc:
                raise TransientJobError(str(exc)) from exc
            except ObjectsError as exc:
                raise JobFailed(codes.INTERNAL_ERROR, f"could not store an output: {exc}") from exc
        return versions

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
        claim: Claim,
        outcome: JobOutcome,
        versions: dict[str, str | None] | None = None,
    ) -> _Tail | None:
        """One transaction: the outputs recorded, the job ``succeeded`` (only under the claim's
        lease), audited, its original read and marked due. None if the lease was lost; raises
        :class:`_SubjectErased` (nothing written) if the subject's erasure was requested."""
        job = claim.job
        t = self.clock()
        # Only a first, uninterrupted attempt knows every version of its output keys; after a
        # takeover or a hand-back an earlier attempt may have left versions: list them on delete.
        known = versions if job.deliveries == 1 and job.retries == 0 else None
        with self.db.session() as s:
            tail = self._doom_original(s, job.id, t)
            if tail.erasing:
                raise _SubjectErased  # rolls the transaction back: nothing written
            won = lifecycle.succeed(
                s,
                job.id,
                claim.token,
                at=t,
                summary={"faces": outcome.faces, **dict(outcome.summary)},
            )
            if not won:
                log.warning("job.lease_lost", job_id=job.id)
                return None
            self.records.add_stored(
                s,
                [
                    (
                        _output(job, out.name, out.content_type),
                        len(out.data),
                        _known(known, out.name),
                    )
                    for out in outcome.outputs
                ],
                at=t,
            )
            for write in claim.deferred:
                write(s)
            audit.append(
                s,
                "job.succeeded",
                job.id,
                tenant=job.tenant,
                outputs=len(outcome.outputs),
                faces=outcome.faces,
            )
        job_ended(job.job_type, JobStatus.SUCCEEDED.value)
        log.info("job.succeeded", job_id=job.id, outputs=len(outcome.outputs), faces=outcome.faces)
        return tail

    def _fail(self, job_id: str, token: str | None, code: str, message: str) -> Job | None:
        """Fail the job (with ``token``: only under that lease); its row if this call ended it."""
        t = self.clock()
        with self.db.session() as s:
            won = lifecycle.fail(s, job_id, code, message, at=t, token=token)
            row = s.get(Job, job_id) if won else None
            if row is not None:
                audit.append(s, "job.failed", job_id, tenant=row.tenant, error_code=code)
        if row is not None:
            job_ended(row.job_type or "unknown", "failed", code)
            log.info("job.failed", job_id=job_id, error_code=code)
        return row

    def _fail_and_finish(self, job: Job, token: str, code: str, message: str) -> ProcessResult:
        """Fail a claimed job, delete its original, then tell ``on_ended``."""
        ended = self._fail(job.id, token, code, message)
        try:
            return self._finish_tail(job.id)
        finally:
            if ended is not None:
                self._ended(ended)

    def fail(self, job_id: str, code: str, message: str) -> ProcessResult:
        """Fail a job that has not ended, then delete its original."""
        ended = self._fail(job_id, None, code, message)
        try:
            return self._finish_tail(job_id)
        finally:
            if ended is not None:
                self._ended(ended)

    def _ended(self, job: Job) -> None:
        """A job this service ended: schedule its webhook if it was submitted with one (never
        raises: the job's end is committed whatever happens here)."""
        if not job.callback_url or self.on_ended is None:
            return
        try:
            self.on_ended(job.id)
        except Exception as exc:
            log.warning("job.on_ended_failed", job_id=job.id, exc_type=type(exc).__name__)

    # ----- the tail: delete the original -------------------------------------------------------

    def _doom_original(self, s: Session, job_id: str, at: datetime) -> _Tail:
        """In the caller's transaction: the job's status, whether its subject's erasure was
        requested, its original (if not yet deleted) and whether a legal hold (the job's or its
        subject's) keeps it; the original is marked due at ``at`` (so the sweep retries a
        delete that fails, or deletes it once the hold is released). One statement on
        PostgreSQL (the mark in a ``WITH``), a read and an update elsewhere."""
        conn = s.connection()
        params = {"p_job": job_id, "p_at": at}
        postgresql = conn.dialect.name == "postgresql"
        row = conn.execute(_TAIL_AND_DUE if postgresql else _TAIL, params).one_or_none()
        if row is None:
            raise JobNotFound("no such job")
        erasing = row.erase_requested_at is not None
        if row.object_id is None or row.deleted_at is not None:
            return _Tail(row.status, erasing)
        if not postgresql and (row.expires_at is None or row.expires_at > at):
            conn.execute(_DUE, params)
        versions = tuple(row.version_ids) if row.version_ids else None
        return _Tail(
            row.status,
            erasing,
            Doomed(row.object_id, row.key, row.object_class, versions),
            bool(row.job_hold or row.subject_hold),
        )

    def _delete_original(self, job_id: str, tail: _Tail) -> None:
        """Delete every version of the original (unless held) and record it (the deleter's
        transaction). Raises TransientJobError when the store must be tried again."""
        if tail.doomed is None:
            return
        if tail.held:
            log.info("job.original_held", job_id=job_id)
            return
        try:
            batch = self.deleter.delete([tail.doomed], reason="job_ended")
        except ObjectUnavailable as exc:
            raise TransientJobError(str(exc)) from exc
        if batch.unverified:
            raise TransientJobError("a version of the original survived the delete")

    def _finish_tail(self, job_id: str) -> ProcessResult:
        """Delete the original of an ended job (every version) and record it. Idempotent.

        Under a legal hold the original is kept but marked due, so the first sweep after the
        hold is released deletes it.
        """
        with self.db.session() as s:
            tail = self._doom_original(s, job_id, self.clock())
        self._delete_original(job_id, tail)
        return ProcessResult(job_id, tail.status)

    # ----- reads -------------------------------------------------------------------------------

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's public summary (ids, state, error code, counts, output names)."""
        return job_status(self.db, job_id)


# ----- the tail's statements (prebuilt: they run in every job's last transaction) ---------------

_O = cast(Table, StoredObject.__table__)
_JOBS = cast(Table, Job.__table__)
_SUBJECTS = cast(Table, Subject.__table__)
_ORIGINAL = and_(_O.c.job_id == bindparam("p_job"), _O.c.object_class == "original")
# the job, its subject's hold and erasure, its original: one row (the original's columns NULL
# when there is none)
_TAIL = (
    select(
        _JOBS.c.status,
        _JOBS.c.legal_hold.label("job_hold"),
        _SUBJECTS.c.legal_hold.label("subject_hold"),
        _SUBJECTS.c.erase_requested_at,
        _O.c.id.label("object_id"),
        _O.c.key,
        _O.c.object_class,
        _O.c.version_ids,
        _O.c.deleted_at,
        _O.c.expires_at,
    )
    .select_from(
        _JOBS.outerjoin(_SUBJECTS, _SUBJECTS.c.id == _JOBS.c.subject_id).outerjoin(
            _O, and_(_O.c.job_id == _JOBS.c.id, _O.c.object_class == "original")
        )
    )
    .where(_JOBS.c.id == bindparam("p_job"))
)
# the original marked due at ``p_at`` (unless deleted, or due earlier already)
_DUE = (
    update(_O)
    .where(
        _ORIGINAL,
        _O.c.deleted_at.is_(None),
        or_(_O.c.expires_at.is_(None), _O.c.expires_at > bindparam("p_at", type_=UtcDateTime())),
    )
    .values(expires_at=bindparam("p_at", type_=UtcDateTime()))
    .returning(_O.c.id)
)
# both in one statement (PostgreSQL runs a data-modifying WITH whether or not it is read; the
# select sees the row as it was before the mark)
_TAIL_AND_DUE = _TAIL.add_cte(_DUE.cte("due"))
