"""The retention sweep: everything past its time, deleted completely, verifiably, once.

One sweep at a time (a ledger lock with an expiry). Each batch is claimed atomically — row locks
with ``SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite — and the claim itself expires,
so a sweep killed mid-batch is finished by the next one. Held objects are never claimed.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, Select, Table, and_, func, or_, select, update

from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import Job, StoredObject, Subject
from worker.metrics import DELETION_LAG, DELETION_RATE
from worker.retention.deleter import Deleter, Doomed
from worker.retention.locks import LedgerLock
from worker.storage.base import DeleteResult, ObjectStore

log = structlog.get_logger("facemedia.retention")

ACTIVE = ("queued", "processing")
_OBJECTS = cast(Table, StoredObject.__table__)

# A claim in the store's hands: its objects and the pending DeleteObjects batches.
_Claim = tuple[list[Doomed], list[Future[dict[str, DeleteResult]]]]


def utcnow() -> datetime:
    """Wall-clock UTC (locks and claims always use real time)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class SweepConfig:
    """Sweep knobs (from the settings)."""

    batch: int = 1000
    lock_ttl: timedelta = timedelta(minutes=10)
    original_ttl: timedelta | None = timedelta(hours=24)
    requeue_after: timedelta = timedelta(minutes=15)
    # A processing job whose lease lapsed this long ago lost its worker (heartbeats stopped):
    # :meth:`Sweeper.rescue` hands it back to the queue.
    rescue_grace: timedelta = timedelta(seconds=3)
    orphan_grace: timedelta = timedelta(hours=24)
    # DeleteObjects calls in flight at once (a thread each): the store is another process or
    # service, so a second call keeps it busy while this process claims, sends and records.
    store_threads: int = 2
    # Store batches per ledger claim: one claim, one record and one audit entry per this many
    # DeleteObjects calls.
    claim_batches: int = 2


@dataclass(frozen=True)
class SweepReport:
    """What a sweep found and did; ids and counts only."""

    as_of: str
    dry_run: bool
    locked_out: bool = False
    due: int = 0
    deleted: int = 0
    versions: int = 0
    unverified: int = 0
    already_deleted: int = 0
    held: int = 0
    jobs_requeued: int = 0
    jobs_expired: int = 0
    erasures_completed: int = 0
    lag_seconds: float = 0.0
    seconds: float = 0.0
    per_second: float = 0.0
    more: bool = False
    batches: int = 0
    requeued_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view (without the requeued ids)."""
        data = asdict(self)
        data.pop("requeued_ids")
        return data


def _not_held() -> Any:
    return and_(
        or_(StoredObject.subject_id.is_(None), ~Subject.legal_hold),
        or_(StoredObject.job_id.is_(None), ~Job.legal_hold),
    )


def _due_query(as_of: datetime) -> Select[Any]:
    return (
        select(StoredObject)
        .outerjoin(Subject, StoredObject.subject_id == Subject.id)
        .outerjoin(Job, StoredObject.job_id == Job.id)
        .where(StoredObject.deleted_at.is_(None), StoredObject.expires_at <= as_of)
    )


class Sweeper:
    """Runs sweeps; collaborators injected, ``complete_erasures`` supplied by the rights service."""

    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        deleter: Deleter,
        config: SweepConfig,
        complete_erasures: Callable[[datetime], int] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.store = store
        self.deleter = deleter
        self.config = config
        self.complete_erasures = complete_erasures
        self.clock = clock

    # ----- the whole sweep ---------------------------------------------------------------------

    def run(
        self, as_of: datetime | None = None, dry_run: bool = False, max_batches: int | None = None
    ) -> SweepReport:
        """Delete everything due at ``as_of`` (default now), at most ``max_batches`` batches."""
        as_of = as_of or self.clock()
        if dry_run:
            return self._preview(as_of)
        lock = LedgerLock(self.db, "sweep", self.config.lock_ttl, self.clock)
        if not lock.acquire():
            log.info("sweep.locked_out")
            return SweepReport(as_of=as_of.isoformat(), dry_run=False, locked_out=True)
        started = time.perf_counter()
        try:
            requeued, expired = self._jobs(as_of)
            erasures = self.complete_erasures(as_of) if self.complete_erasures else 0
            lag = self._lag(as_of)
            due, held = self._counts(as_of)
            deleted = versions = unverified = already = batches = 0
            more = False
            # Pipelined: while the store works through the last two claims (each split into
            # DeleteObjects batches, ``store_threads`` at a time), the ledger records the older
            # one as soon as all its batches are back, then claims the next. Each object is
            # still claimed, removed, then recorded, in that order.
            size = self.config.batch
            per_claim = max(1, self.config.claim_batches)
            threads = max(1, self.config.store_threads)
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sweep-store") as pool:
                in_flight: deque[_Claim] = deque()
                exhausted = False
                try:
                    while True:
                        while not exhausted and len(in_flight) < 2:
                            allowed = per_claim if max_batches is None else max_batches - batches
                            doomed = self._claim(as_of, size * min(per_claim, allowed))
                            if not doomed:
                                exhausted = True
                                break
                            chunks = [doomed[i : i + size] for i in range(0, len(doomed), size)]
                            in_flight.append(
                                (doomed, [pool.submit(self.deleter.remove, c) for c in chunks])
                            )
                            batches += len(chunks)
                        if not in_flight:
                            break
                        oldest, removals = in_flight.popleft()
                        results: dict[str, DeleteResult] = {}
                        for removal in removals:
                            results.update(removal.result())
                        batch = self.deleter.record(oldest, results, reason="retention")
                        deleted += batch.deleted
                        versions += batch.versions
                        unverified += len(batch.unverified)
                        already += batch.already
                        lock.renew()
                except BaseException:
                    # Batches not yet sent stay claimed (the claim lapses, the next sweep
                    # takes them); only the ones already in the store's hands finish.
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
            if max_batches is not None and batches >= max_batches:
                more = self._counts(as_of)[0] > 0
        finally:
            lock.release()
        seconds = time.perf_counter() - started
        report = SweepReport(
            as_of=as_of.isoformat(),
            dry_run=False,
            due=due,
            deleted=deleted,
            versions=versions,
            unverified=unverified,
            already_deleted=already,
            held=held,
            jobs_requeued=len(requeued),
            jobs_expired=expired,
            erasures_completed=erasures,
            lag_seconds=lag,
            seconds=round(seconds, 3),
            per_second=round(deleted / seconds, 1) if seconds > 0 else 0.0,
            more=more,
            batches=batches,
            requeued_ids=requeued,
        )
        DELETION_LAG.set(lag)
        DELETION_RATE.set(report.per_second)
        with self.db.session() as s:
            audit.append(s, "sweep.ran", None, **report.to_json())
        log.info("sweep.done", count=deleted, duration_ms=round(seconds * 1000, 1))
        return report

    def _preview(self, as_of: datetime) -> SweepReport:
        due, held = self._counts(as_of)
        return SweepReport(
            as_of=as_of.isoformat(),
            dry_run=True,
            due=due,
            held=held,
            lag_seconds=self._lag(as_of),
        )

    # ----- parts -------------------------------------------------------------------------------

    def _counts(self, as_of: datetime) -> tuple[int, int]:
        """(due and not held, due but held)."""
        with self.db.session() as s:
            base = _due_query(as_of).with_only_columns(func.count(StoredObject.id))
            due = int(s.scalar(base.where(_not_held())) or 0)
            held = int(s.scalar(base.where(~_not_held())) or 0)
        return due, held

    def _lag(self, as_of: datetime) -> float:
        """Seconds between ``as_of`` and the oldest due time not yet deleted."""
        with self.db.session() as s:
            oldest = s.scalar(
                _due_query(as_of)
                .where(_not_held())
                .with_only_columns(func.min(StoredObject.expires_at))
            )
        if oldest is None:
            return 0.0
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return float(max(0.0, (as_of - oldest).total_seconds()))

    def _claim(self, as_of: datetime, limit: int | None = None) -> list[Doomed]:
        """Atomically claim up to ``limit`` (default: one batch) due, unheld, unclaimed objects."""
        if limit is not None and limit <= 0:
            return []
        now = self.clock()
        token = uuid.uuid4().hex
        objects = _OBJECTS.c
        with self.db.session() as s:
            candidates = (
                _due_query(as_of)
                .where(_not_held())
                .where(or_(StoredObject.claim_until.is_(None), StoredObject.claim_until < now))
                .with_only_columns(StoredObject.id)
                .order_by(StoredObject.key)
                .limit(limit or self.config.batch)
            )
            if self.db.dialect == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True, of=StoredObject)
            # One statement claims the batch: UPDATE ... WHERE id IN (SELECT ... SKIP LOCKED)
            # (on the Core table: no ORM bookkeeping for a bulk statement).
            claimed = s.execute(
                update(_OBJECTS)
                .where(objects.id.in_(candidates.scalar_subquery()))
                .values(claim_token=token, claim_until=now + self.config.lock_ttl)
                .returning(objects.id, objects.key, objects.object_class, objects.version_ids)
            ).all()
            return sorted(
                (
                    Doomed(r.id, r.key, r.object_class, tuple(r.version_ids or ()) or None)
                    for r in claimed
                ),
                key=lambda d: d.key,
            )

    def _jobs(self, as_of: datetime) -> tuple[list[str], int]:
        """Expire jobs whose original is past its maximum age; re-queue stuck ones.

        Returns (ids to re-enqueue, number expired).
        """
        expired = 0
        requeue: list[str] = []
        with self.db.session() as s:
            if self.config.original_ttl is not None:
                limit = as_of - self.config.original_ttl
                stale = list(
                    s.scalars(select(Job).where(Job.status.in_(ACTIVE), Job.created_at < limit))
                )
                for job in stale:
                    job.status, job.error_code = "expired", "expired"
                    job.error_message = "the job did not run within the originals' maximum age"
                    job.finished_at, job.lease_until = as_of, None
                    s.execute(
                        update(StoredObject)
                        .where(
                            StoredObject.job_id == job.id,
                            StoredObject.object_class == "original",
                            StoredObject.deleted_at.is_(None),
                        )
                        .values(expires_at=as_of)
                    )
                    audit.append(s, "job.expired", job.id)
                    expired += 1
            stuck_before = as_of - self.config.requeue_after
            stuck = list(
                s.scalars(
                    select(Job).where(
                        or_(
                            and_(Job.status == "processing", Job.lease_until < stuck_before),
                            and_(
                                Job.status == "queued",
                                Job.created_at < stuck_before,
                                or_(Job.started_at.is_(None), Job.started_at < stuck_before),
                            ),
                        )
                    )
                )
            )
            for job in stuck:
                # The broker lost it, or its worker died and nothing redelivered it: send it
                # again. The lease makes a duplicate harmless.
                requeue.append(job.id)
                job.started_at = as_of
                audit.append(s, "job.requeued", job.id)
        return requeue, expired

    def rescue(self, as_of: datetime | None = None) -> list[str]:
        """Hand back every ``processing`` job whose lease lapsed more than ``rescue_grace`` ago
        (its worker stopped heartbeating: it died, with the whole process on Redis, where the
        broker would only redeliver after its visibility timeout). Each is set ``queued`` with
        no lease, compare-and-set on its old token, audited; returns the ids to enqueue again.

        A worker that is alive but lost its lease finds its token gone at its next
        compare-and-set and discards its work, as after any takeover.
        """
        t = as_of or self.clock()
        before = t - self.config.rescue_grace
        with self.db.session() as s:
            lapsed = list(
                s.execute(
                    select(Job.id, Job.lease_token).where(
                        Job.status == "processing", Job.lease_until < before
                    )
                )
            )
        rescued: list[str] = []
        for job_id, token in lapsed:
            with self.db.session() as s:
                changed = s.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.status == "processing",
                        Job.lease_token == token,
                        Job.lease_until < before,
                    )
                    .values(status="queued", lease_token=None, lease_until=None, started_at=t)
                )
                if cast(CursorResult[Any], changed).rowcount == 1:
                    audit.append(s, "job.rescued", job_id)
                    rescued.append(job_id)
        if rescued:
            log.info("jobs.rescued", count=len(rescued))
        return rescued

    # ----- orphans -----------------------------------------------------------------------------

    def orphans(self, as_of: datetime | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Delete store objects with no live ledger row, older than the grace period."""
        as_of = as_of or self.clock()
        cutoff = as_of - self.config.orphan_grace
        found: list[str] = []
        page: list[str] = []

        def flush() -> None:
            if not page:
                return
            with self.db.session() as s:
                live = set(
                    s.scalars(
                        select(StoredObject.key).where(
                            StoredObject.key.in_(page), StoredObject.deleted_at.is_(None)
                        )
                    )
                )
            found.extend(k for k in page if k not in live)
            page.clear()

        for entry in self.store.entries():
            if entry.modified < cutoff:
                page.append(entry.key)
                if len(page) >= 500:
                    flush()
        flush()
        removed = 0
        if not dry_run:
            for start in range(0, len(found), self.config.batch):
                chunk = found[start : start + self.config.batch]
                results = self.store.delete_many(chunk)
                removed += sum(1 for r in results.values() if r.verified)
            if found:
                with self.db.session() as s:
                    audit.append(s, "orphans.deleted", None, count=removed)
        return {"orphans": len(found), "deleted": removed, "dry_run": dry_run}
