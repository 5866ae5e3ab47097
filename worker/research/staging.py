"""k-Same staging: a job's aligned face crops wait, encrypted, for a batch of ≥ k subjects.

k-Same-Pixel (``pipelines.deid.operators.k_same``) replaces each face by the average of a cluster
of at least k faces, so it needs several people's faces at once; a job has one person's. At job
time (:class:`Stager`) the sampler stores, encrypted under the subject's key as class ``staging``
(key ``staging/{staged_id}``, expiring after ``retention.staging``, 24 h):

* the image with every face already masked (solid ellipse, the same dilation the paste uses), as
  a JPEG, and
* each face's aligned crop (lossless) with its alignment transform and detection,

and records a :class:`~worker.ledger.models.StagedFace` row. The batch builder
(:class:`KSameBatcher`, task ``facemedia.research.build_ksame_batches``) claims the staged jobs of
at least k distinct subjects (one per subject, oldest first) atomically, runs k-Same over all
their crops, pastes each cluster average back into each member's masked image, checks each
result with :func:`k_same_gate`, writes the members' research samples, and deletes every staged
object of the batch (with receipts) and the batch's rows. Fewer than k eligible subjects: nothing
is written and the claim is not taken. A staged object that reaches its expiry is deleted by the
retention sweep; its row is no longer claimable (expired or object deleted) and is pruned.

**The k-Same gate.** The residual-face gate fails on any face, and a k-Same output is a face by
design (the cluster average), so it cannot be the check here. :func:`k_same_gate` re-detects at
the gate's low threshold (0.2) and passes only if every face found lies on a region that was
replaced by a cluster average (IoU ≥ 0.3 with the replaced face's box, or its centre inside the
replaced ellipse's rectangle) — a face found anywhere else is a face that was missed and left as
it was — and the batch had at least k distinct subjects. It fails closed.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
import structlog
from numpy.typing import NDArray
from sqlalchemy import CursorResult, Delete, delete, or_, select, update
from sqlalchemy.orm import Session

from pipelines.deid.align import AlignTransform, align_face, paste_into
from pipelines.deid.gate import DEFAULT_GATE_THRESHOLD, gate_detector
from pipelines.deid.geometry import ellipse_region, fill_region
from pipelines.deid.operators.k_same import k_same
from pipelines.faces.detector import Face, FaceDetector
from pipelines.media.image import decode_image, encode_image
from worker.ids import new_id
from worker.ledger.db import Database
from worker.ledger.models import Job, ResearchSample, StagedFace, StoredObject, Subject
from worker.metrics import KSAME_BATCHES
from worker.research.store import (
    NotEligible,
    SampleRecord,
    SampleWriter,
    StoredItem,
    count,
    discard,
    ineligible,
    store_once,
)
from worker.retention.deleter import Deleter, Doomed
from worker.storage.base import check_key
from worker.storage.vault import Vault

log = structlog.get_logger("facemedia.research")

_BACKGROUND_QUALITY = 95
MIN_IOU = 0.3


def _cas_count(session: Session, stmt: Delete) -> int:
    """Run a DELETE; how many rows it removed."""
    return int(cast(CursorResult[Any], session.execute(stmt)).rowcount or 0)


def staging_key(staged_id: str) -> str:
    """Where a staged k-Same item lives."""
    return check_key(f"staging/{staged_id}")


# ----- the staged material ----------------------------------------------------------------------


@dataclass(frozen=True)
class StagedMaterial:
    """A job's image with its faces masked, plus each face's aligned crop and geometry."""

    background: NDArray[np.uint8]
    crops: tuple[NDArray[np.uint8], ...]
    transforms: tuple[AlignTransform, ...]
    faces: tuple[Face, ...]
    dilation: float


def prepare(
    img: NDArray[np.uint8], faces: Sequence[Face], size: int, dilation: float
) -> StagedMaterial:
    """Align every face (``size`` px crops) and mask it out of the image (same ellipse as the
    later paste, so nothing of the face survives outside the pasted average)."""
    if not faces:
        raise ValueError("nothing to stage: no face")
    aligned = [align_face(img, face, size) for face in faces]
    background = img.copy()
    for face in faces:
        fill_region(background, ellipse_region(background.shape, face, dilation), (0, 0, 0))
    return StagedMaterial(
        background,
        tuple(c for c, _ in aligned),
        tuple(t for _, t in aligned),
        tuple(faces),
        dilation,
    )


def pack(material: StagedMaterial) -> bytes:
    """Serialise (numpy ``.npz``, no pickles): JPEG background, raw crops, geometry."""
    buf = io.BytesIO()
    np.savez(
        buf,
        background=np.frombuffer(
            encode_image(material.background, "jpeg", _BACKGROUND_QUALITY), np.uint8
        ),
        crops=np.stack(material.crops),
        matrices=np.array([t.matrix for t in material.transforms], dtype=np.float64),
        size=np.array([material.transforms[0].size], dtype=np.int64),
        boxes=np.array([f.box for f in material.faces], dtype=np.float64),
        landmarks=np.array([f.landmarks for f in material.faces], dtype=np.float64),
        scores=np.array([f.score for f in material.faces], dtype=np.float64),
        dilation=np.array([material.dilation], dtype=np.float64),
    )
    return buf.getvalue()


def unpack(data: bytes) -> StagedMaterial:
    """The inverse of :func:`pack` (``allow_pickle=False``)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        background = decode_image(bytes(z["background"].tobytes()))
        size = int(z["size"][0])
        crops = tuple(np.ascontiguousarray(c, dtype=np.uint8) for c in z["crops"])
        transforms = tuple(
            AlignTransform(
                (float(m[0]), float(m[1]), float(m[2]), float(m[3]), float(m[4]), float(m[5])),
                size,
            )
            for m in z["matrices"]
        )
        faces = tuple(
            Face(
                (float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                tuple((float(x), float(y)) for x, y in lm),
                float(sc),
            )
            for b, lm, sc in zip(z["boxes"], z["landmarks"], z["scores"], strict=True)
        )
        dilation = float(z["dilation"][0])
    return StagedMaterial(background, crops, transforms, faces, dilation)


# ----- the gate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KSameGateResult:
    """The k-Same gate's verdict: faces found, how many lay on replaced regions, the batch's
    distinct subjects, and the ``reason`` (``ok``, ``face_outside_replaced``,
    ``too_few_subjects``, ``no_source_face``)."""

    passed: bool
    reason: str
    faces: int = 0
    on_replaced: int = 0
    subjects: int = 0
    k: int = 0

    def to_json(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "gate": "k_same",
            "passed": self.passed,
            "reason": self.reason,
            "faces": self.faces,
            "on_replaced": self.on_replaced,
            "subjects": self.subjects,
            "k": self.k,
        }


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _on_replaced(found: Face, replaced: Sequence[Face], shape: tuple[int, ...], d: float) -> bool:
    cx, cy = (found.box[0] + found.box[2]) / 2.0, (found.box[1] + found.box[3]) / 2.0
    for face in replaced:
        if _iou(found.box, face.box) >= MIN_IOU:
            return True
        region = ellipse_region(shape, face, d)
        if not region.empty and region.x0 <= cx < region.x1 and region.y0 <= cy < region.y1:
            return True
    return False


def k_same_gate(
    img: NDArray[np.uint8],
    detector: FaceDetector,
    replaced: Sequence[Face],
    dilation: float,
    subjects: int,
    k: int,
    threshold: float = DEFAULT_GATE_THRESHOLD,
) -> KSameGateResult:
    """Check one k-Same output: fail closed unless the batch had ≥ ``k`` distinct subjects and
    every face detected at ``threshold`` lies on a replaced region (see the module docstring)."""
    if not replaced:
        return KSameGateResult(False, "no_source_face", subjects=subjects, k=k)
    if subjects < k:
        return KSameGateResult(False, "too_few_subjects", subjects=subjects, k=k)
    runner = gate_detector(detector, threshold)
    found = [f for f in runner.detect(img) if f.score >= threshold]
    on = sum(1 for f in found if _on_replaced(f, replaced, img.shape, dilation))
    if on < len(found):
        return KSameGateResult(False, "face_outside_replaced", len(found), on, subjects, k)
    return KSameGateResult(True, "ok", len(found), on, subjects, k)


# ----- staging at job time ----------------------------------------------------------------------


class Stager:
    """Stores a job's k-Same material (class ``staging``) and its :class:`StagedFace` row."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        ttl: timedelta | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.vault = vault
        self.ttl = ttl or timedelta(hours=24)
        self.clock = clock

    def exists(self, job_id: str) -> bool:
        """True if ``job_id`` was staged already (its row may be gone once its batch ran)."""
        with self.db.session() as s:
            found = s.scalars(select(StagedFace.id).where(StagedFace.source_job_id == job_id))
            return found.first() is not None

    def stage(
        self,
        *,
        job_id: str,
        subject_id: str,
        key_id: str,
        material: StagedMaterial,
        quasi: dict[str, Any],
    ) -> str | None:
        """Encrypt and store the material, record the row; its id, or ``None`` if the job was
        staged already (what this call stored is deleted again)."""
        staged_id = new_id()

        def row(object_id: str, t: datetime) -> StagedFace:
            return StagedFace(
                id=staged_id,
                object_id=object_id,
                subject_id=subject_id,
                source_job_id=job_id,
                media_kind="image",
                quasi=quasi,
                created_at=t,
                expires_at=t + self.ttl,
            )

        item = StoredItem(
            key=staging_key(staged_id),
            object_class="staging",
            job_id=job_id,
            subject_id=subject_id,
            key_id=key_id,
            name="staged.npz",
            content_type="application/octet-stream",
            ttl=self.ttl,
        )
        if not store_once(
            self.db, self.vault, item, pack(material), row, self.clock, "research.staged"
        ):
            return None
        log.info("research.staged", job_id=job_id, faces=len(material.faces))
        return staged_id


# ----- the batch builder ------------------------------------------------------------------------


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


__all__ = [
    "BatchReport",
    "BatcherConfig",
    "Claimed",
    "KSameBatcher",
    "KSameGateResult",
    "StagedMaterial",
    "Stager",
    "k_same_gate",
    "pack",
    "prepare",
    "staging_key",
    "unpack",
]
