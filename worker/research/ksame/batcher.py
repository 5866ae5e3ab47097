"""The k-Same batch builder: claims the staged jobs of ≥ k distinct subjects atomically, runs
k-Same over their crops, pastes each cluster average back, gates each result, writes the
members' research samples, and deletes the batch's staged objects (with receipts) and rows;
prunes rows whose object is gone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, Delete, delete, or_, select, update
from sqlalchemy.orm import Session

from pipelines.deid.align import paste_into
from pipelines.deid.gate import DEFAULT_GATE_THRESHOLD
from pipelines.deid.operators.k_same import k_same
from pipelines.faces.detector import FaceDetector
from pipelines.media.image import encode_image
from worker.ids import new_id
from worker.ledger.db import Database
from worker.ledger.models import Job, ResearchSample, StagedFace, StoredObject, Subject
from worker.metrics import KSAME_BATCHES
from worker.objects.deleter import Deleter, Doomed
from worker.objects.vault import Vault
from worker.research.store import (
    NotEligible,
    SampleRecord,
    SampleWriter,
    count,
    discard,
    ineligible,
)

from .gate import k_same_gate
from .material import unpack

__all__ = ["BatchReport", "BatcherConfig", "Claimed", "KSameBatcher"]

log = structlog.get_logger("facemedia.research")


def _cas_count(session: Session, stmt: Delete) -> int:
    """Run a DELETE; how many rows it removed."""
    return int(cast(CursorResult[Any], session.execute(stmt)).rowcount or 0)


@dataclass(frozen=True)
class Claimed:
    """One staged job claimed for a batch."""

    staged_id: str
    object_id: str
    key: str
    subject_id: str
    job_id: str
    quasi: dict[str, Any]
    versions: tuple[str, ...] | None


@dataclass(frozen=True)
class BatchReport:
    """What one batch build did (ids and counts only)."""

    batch_id: str
    outcome: str  # written | too_few | empty
    members: int = 0
    subjects: int = 0
    faces: int = 0
    written: int = 0
    discarded: int = 0
    deleted: int = 0
    dropped: int = 0
    claimed_ids: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (without the claimed ids)."""
        return {
            "batch_id": self.batch_id,
            "outcome": self.outcome,
            "members": self.members,
            "subjects": self.subjects,
            "faces": self.faces,
            "written": self.written,
            "discarded": self.discarded,
            "deleted": self.deleted,
            "dropped": self.dropped,
        }


@dataclass(frozen=True)
class BatcherConfig:
    """Batch knobs: ``k`` (settings.research.k_same_k), the most staged jobs in one batch, how
    long a claim lasts (a crashed builder's batch is taken over after it)."""

    k: int = 5
    max_members: int = 64
    claim_ttl: timedelta = timedelta(minutes=10)
    gate_threshold: float = DEFAULT_GATE_THRESHOLD


class KSameBatcher:
    """Claims staged faces of ≥ k subjects, writes their k-Same samples, deletes the staging."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        deleter: Deleter,
        writer: SampleWriter,
        detector: Callable[[], FaceDetector],
        config: BatcherConfig,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.vault = vault
        self.deleter = deleter
        self.writer = writer
        self.detector = detector
        self.config = config
        self.clock = clock

    def _claimable(self, now: datetime) -> Any:
        return (
            select(StagedFace.id)
            .join(StoredObject, StoredObject.id == StagedFace.object_id)
            .join(Subject, Subject.id == StagedFace.subject_id)
            .outerjoin(Job, Job.id == StoredObject.job_id)
            .where(
                StoredObject.deleted_at.is_(None),
                StagedFace.expires_at > now,
                or_(StagedFace.claim_until.is_(None), StagedFace.claim_until < now),
                # held material is neither batched nor deleted here (the hold keeps it)
                ~Subject.legal_hold,
                or_(Job.id.is_(None), ~Job.legal_hold),
            )
        )

    def claim(self, batch_id: str) -> list[Claimed]:
        """Atomically claim the oldest claimable staged job of each subject, up to
        ``max_members``, if they are at least k distinct subjects; else claim nothing.

        PostgreSQL: the candidates are locked ``FOR UPDATE SKIP LOCKED`` (two builders get
        disjoint sets); SQLite: the claim is a compare-and-set on ``claim_until`` under the
        write lock every ledger transaction takes (``BEGIN IMMEDIATE``).
        """
        now = self.clock()
        with self.db.session() as s:
            query = (
                self._claimable(now)
                .add_columns(StagedFace.subject_id)
                .order_by(StagedFace.created_at, StagedFace.id)
                .limit(self.config.max_members)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=StagedFace)
            picked: dict[str, str] = {}
            for staged_id, subject_id in s.execute(query):
                picked.setdefault(subject_id, staged_id)
            if len(picked) < self.config.k:
                return []
            rows = s.execute(
                update(StagedFace)
                .where(
                    StagedFace.id.in_(list(picked.values())),
                    or_(StagedFace.claim_until.is_(None), StagedFace.claim_until < now),
                )
                .values(batch_id=batch_id, claim_until=now + self.config.claim_ttl)
                .returning(StagedFace.id)
            ).all()
            ids = [r.id for r in rows]
            if len({subject for subject, st in picked.items() if st in ids}) < self.config.k:
                # Lost part of the compare-and-set to another builder: undo ours, claim nothing.
                s.execute(
                    update(StagedFace)
                    .where(StagedFace.id.in_(ids), StagedFace.batch_id == batch_id)
                    .values(batch_id=None, claim_until=None)
                )
                return []
            found = s.execute(
                select(
                    StagedFace.id,
                    StagedFace.object_id,
                    StoredObject.key,
                    StagedFace.subject_id,
                    StagedFace.source_job_id,
                    StagedFace.quasi,
                    StoredObject.version_ids,
                )
                .join(StoredObject, StoredObject.id == StagedFace.object_id)
                .where(StagedFace.id.in_(ids))
                .order_by(StagedFace.created_at, StagedFace.id)
            ).all()
        return [
            Claimed(
                r[0], r[1], r[2], r[3], str(r[4]), dict(r[5] or {}), tuple(r[6]) if r[6] else None
            )
            for r in found
        ]

    def _release(self, batch_id: str, ids: Sequence[str]) -> None:
        with self.db.session() as s:
            s.execute(
                update(StagedFace)
                .where(StagedFace.id.in_(list(ids)), StagedFace.batch_id == batch_id)
                .values(batch_id=None, claim_until=None)
            )

    def _load(self, members: Sequence[Claimed]) -> tuple[list[Any], list[Claimed]]:
        """(eligible members with their material and key id, members to drop)."""
        loaded: list[Any] = []
        dropped: list[Claimed] = []
        for m in members:
            with self.db.session() as s:
                subject = s.get(Subject, m.subject_id)
                why = ineligible(subject)
                key_id = None if subject is None else subject.key_id
            if why is not None or key_id is None:
                count("skipped", why or "no_subject")
                dropped.append(m)
                continue
            try:
                material = unpack(self.vault.read(m.key, "staging", m.job_id))
            except Exception as exc:  # unreadable staging (shredded key, corrupt): drop it
                log.warning(
                    "research.staged_unreadable", job_id=m.job_id, reason=type(exc).__name__
                )
                count("error", "staged_unreadable")
                dropped.append(m)
                continue
            loaded.append((m, material, key_id))
        return loaded, dropped

    def build_one(self) -> BatchReport:
        """Claim and write one batch (see the module docstring)."""
        batch_id = new_id()
        members = self.claim(batch_id)
        if not members:
            return BatchReport(batch_id, "empty")
        claimed_ids = tuple(m.staged_id for m in members)
        loaded, dropped = self._load(members)
        subjects = {m.subject_id for m, _, _ in loaded}
        doomed = [Doomed(m.object_id, m.key, "staging", m.versions) for m in dropped]
        if len(subjects) < self.config.k:
            # Someone withdrew between staging and now: the rest waits for the next batch.
            self._release(batch_id, [m.staged_id for m, _, _ in loaded])
            deleted = self._delete(doomed, batch_id, [m.staged_id for m in dropped])
            KSAME_BATCHES.labels("too_few").inc()
            return BatchReport(
                batch_id,
                "too_few",
                members=len(loaded),
                subjects=len(subjects),
                deleted=deleted,
                dropped=len(dropped),
                claimed_ids=claimed_ids,
            )
        crops = [c for _, mat, _ in loaded for c in mat.crops]
        averaged = iter(k_same(crops, self.config.k))
        detector = self.detector()
        written = discarded = 0
        for m, mat, key_id in loaded:
            out = mat.background.copy()
            for face, transform in zip(mat.faces, mat.transforms, strict=True):
                paste_into(out, next(averaged), transform, face, mat.dilation)
            verdict = k_same_gate(
                out,
                detector,
                mat.faces,
                mat.dilation,
                len(subjects),
                self.config.k,
                self.config.gate_threshold,
            )
            if not verdict.passed:
                discard("k_same", verdict.reason, m.job_id)
                discarded += 1
                continue
            if self.writer.exists(m.job_id):
                continue  # an earlier, interrupted build of this batch wrote it
            try:
                sample = self.writer.write(
                    SampleRecord(
                        job_id=m.job_id,
                        subject_id=m.subject_id,
                        key_id=key_id,
                        media_kind="image",
                        operator="k_same",
                        data=encode_image(out, "jpeg", 90),
                        faces=len(mat.faces),
                        quasi=m.quasi,
                        params={
                            "k": self.config.k,
                            "size": mat.transforms[0].size,
                            "dilation": mat.dilation,
                        },
                        gate=verdict.to_json(),
                    )
                )
            except NotEligible as exc:  # withdrew or erased since the claim: not kept
                count("skipped", exc.reason)
                continue
            if sample is not None:
                written += 1
                count("sampled", "k_same")
        doomed += [Doomed(m.object_id, m.key, "staging", m.versions) for m, _, _ in loaded]
        deleted = self._delete(doomed, batch_id, list(claimed_ids))
        KSAME_BATCHES.labels("written").inc()
        log.info("research.ksame_batch", count=written, faces=len(crops), reason="written")
        return BatchReport(
            batch_id,
            "written",
            members=len(loaded),
            subjects=len(subjects),
            faces=len(crops),
            written=written,
            discarded=discarded,
            deleted=deleted,
            dropped=len(dropped),
            claimed_ids=claimed_ids,
        )

    def _delete(self, doomed: Sequence[Doomed], batch_id: str, staged_ids: Sequence[str]) -> int:
        """Delete the staged objects (every version, receipts), then the rows of those that
        are gone; a row whose delete was not verified stays claimed until its claim lapses."""
        if not doomed:
            return 0
        result = self.deleter.delete(doomed, reason="ksame_batch")
        failed = set(result.unverified)
        keep = [d.object_id for d in doomed if d.object_id in failed]
        with self.db.session() as s:
            s.execute(
                delete(StagedFace).where(
                    StagedFace.id.in_(list(staged_ids)), StagedFace.object_id.not_in(keep)
                )
            )
        return result.deleted + result.already

    def prune(self) -> int:
        """Delete staged-face and research-sample rows whose object is gone (swept at expiry,
        erased, withdrawn); how many rows."""
        with self.db.session() as s:
            gone = select(StoredObject.id).where(StoredObject.deleted_at.is_not(None))
            staged = _cas_count(s, delete(StagedFace).where(StagedFace.object_id.in_(gone)))
            samples = _cas_count(
                s, delete(ResearchSample).where(ResearchSample.object_id.in_(gone))
            )
        return staged + samples

    def build(self, max_batches: int = 20) -> list[BatchReport]:
        """Prune, then build batches while there are enough subjects (at most ``max_batches``)."""
        self.prune()
        reports: list[BatchReport] = []
        for _ in range(max_batches):
            report = self.build_one()
            if report.outcome == "empty":
                break
            reports.append(report)
            if report.outcome == "too_few":
                break
        return reports
