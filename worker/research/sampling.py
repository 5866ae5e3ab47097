"""Consent-gated research sampling at job time, while the decrypted original is in memory.

The job service calls :meth:`Sampler.sample` inside the job's lease, after the handler ran and
its outputs were stored, with the job's and subject's rows it read with its claim (so a
withdrawal or an erasure recorded before the job runs wins; the subjects row is read again, locked,
in the transaction that writes a sample, so one recorded while the job ran wins too), and counts
the decision in the transaction that ends the job. A sample is kept only if:

* the subject consented to research, and a minor's guardian consented too;
* the subject is neither erased (or being erased) nor withdrawn;

and the job falls in the sample rate: ``HMAC(service key, domain ‖ job id)`` mapped to [0, 1)
below ``research.sample_rate``, so every delivery of a job decides the same way.

Only the de-identified derivative is kept, never the original: an image goes through the
configured operator (``research.operator``; ``mask`` = the default profile) on the faces found
at :data:`~pipelines.deid.api.DEID_DETECT_THRESHOLD`, then the residual-face gate (fail closed:
a face left, or no face found in the source, discards it and counts
``facemedia_residual_gate_discards_total``); a video through ``deidentify_video`` (audio and
metadata dropped) and the gate on every frame. Kept samples are re-encoded pixels (JPEG) or
H.264 MP4, encrypted under the subject's key as class ``research``, with the job's quasi-
identifiers (generalized at submit, :mod:`worker.research.quasi`) and the capture month. Under
``k_same`` the image's aligned faces are staged for a batch instead
(:mod:`worker.research.ksame`).

Sampling never fails the job: any error is logged with a stable code and counted
(``facemedia_research_sampling_total{outcome="error"}``), and the job goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from sqlalchemy.orm import Session

from pipelines.deid.api import (
    DEFAULT_PROFILE,
    DEID_DETECT_THRESHOLD,
    deidentify_image,
    deidentify_video_detailed,
)
from pipelines.deid.gate import (
    GateResult,
    at_threshold,
    cleared_by,
    residual_gate,
    residual_gate_video,
)
from pipelines.deid.operators.k_same import KSameParams
from pipelines.deid.registry import get_operator
from pipelines.errors import PipelineError
from pipelines.faces.detector import FaceDetector
from pipelines.faces.tracking import TrackerConfig
from pipelines.media import sniff
from pipelines.media.image import ImageLimits, decode_image, encode_image
from pipelines.media.video import VideoLimits
from worker.ledger.db import Database
from worker.ledger.models import Job, Subject
from worker.ledger.tenants import DEFAULT_TENANT
from worker.research import funnel
from worker.research.ksame.material import prepare
from worker.research.ksame.stager import Stager
from worker.research.quasi import QuasiIdentifiers
from worker.research.store import (
    NotEligible,
    SampleRecord,
    SampleWriter,
    count,
    discard,
    ineligible,
)

log = structlog.get_logger("facemedia.research")

Outcome = Literal["sampled", "staged", "skipped", "discarded", "error"]
_RATE_DOMAIN = "facemedia.research.sample-rate\x00"


@dataclass(frozen=True)
class SamplerConfig:
    """``rate`` (0-1), ``operator`` (a registered de-identification operator) and ``k`` for
    ``k_same`` (``settings.research``)."""

    rate: float = 0.1
    operator: str = "mask"
    k: int = 5
    output_quality: int = 90


@dataclass(frozen=True)
class SampleDecision:
    """What sampling did for one job: the outcome, a stable reason code, the sample's id."""

    outcome: Outcome
    reason: str
    sample_id: str | None = None


def rate_point(digest_hex: str) -> float:
    """A hex digest's first 53 bits as a number in [0, 1) (exact in a float: 64 bits would
    round the largest values up to 1.0)."""
    return (int(digest_hex[:14], 16) >> 3) / float(1 << 53)


def media_kind(data: bytes) -> str | None:
    """``"image"``, ``"video"`` or ``None``, from the magic bytes (:mod:`pipelines.media.sniff`)."""
    try:
        return sniff.media_kind(data)
    except PipelineError:
        return None


class Sampler:
    """Decides, de-identifies, gates and keeps (or stages) one job's research sample."""

    def __init__(
        self,
        db: Database,
        writer: SampleWriter,
        stager: Stager,
        detector: Callable[[], FaceDetector],
        keyed_hash: Callable[[str], str],
        config: SamplerConfig,
        image_limits: ImageLimits | None = None,
        video_limits: VideoLimits | None = None,
        tracker: TrackerConfig | None = None,
    ) -> None:
        self.db = db
        self.writer = writer
        self.stager = stager
        self.detector = detector
        self.keyed_hash = keyed_hash
        self.config = config
        self.image_limits = image_limits or ImageLimits()
        self.video_limits = video_limits or VideoLimits()
        self.tracker = tracker or TrackerConfig()

    def selected(self, job_id: str) -> bool:
        """Whether ``job_id`` falls in the sample rate (the same answer on every delivery)."""
        if self.config.rate <= 0.0:
            return False
        if self.config.rate >= 1.0:
            return True
        return rate_point(self.keyed_hash(_RATE_DOMAIN + job_id)) < self.config.rate

    def profile(self) -> tuple[str, dict[str, Any]]:
        """The operator and its parameters (the default profile's for ``mask``)."""
        name = self.config.operator
        if name == DEFAULT_PROFILE[0]:
            return name, dict(DEFAULT_PROFILE[1])
        if name == "k_same":
            return name, {"k": self.config.k}
        return name, {}

    def sample(
        self,
        job_id: str,
        media: bytes,
        *,
        job: Job | None = None,
        subject: Subject | None = None,
        defer: Callable[[Callable[[Session], None]], None] | None = None,
    ) -> SampleDecision:
        """Sample ``job_id`` from its decrypted original; never raises.

        ``job`` and ``subject``: their rows as the job service read them with its claim (else
        they are read here, in a transaction of their own); a sample is only kept if the subject
        is still eligible when it is written (:class:`~worker.research.store.SampleWriter`
        checks in that transaction). ``defer``: a hook taking work for the transaction that ends
        the job, where the decision is then counted (else it is counted in one of its own).
        """
        try:
            if job is None:
                job, subject = self._rows(job_id)
            decision = (
                SampleDecision("skipped", "no_job")
                if job is None
                else self._sample(job_id, media, job, subject)
            )
        except NotEligible as exc:  # withdrew or erased while this job was being sampled
            decision = SampleDecision("skipped", exc.reason)
        except PipelineError as exc:  # the source cannot be decoded or de-identified
            decision = SampleDecision("error", str(getattr(exc, "code", "pipeline_error")))
            log.warning("research.sample_failed", job_id=job_id, reason=decision.reason)
        except Exception as exc:
            decision = SampleDecision("error", "sampling_failed")
            log.warning(
                "research.sample_failed",
                job_id=job_id,
                reason=decision.reason,
                exc_type=type(exc).__name__,
            )
        if decision.outcome in ("skipped", "error"):
            count(decision.outcome, decision.reason)
        tenant = DEFAULT_TENANT if job is None else job.tenant
        if defer is not None:
            when = datetime.now(UTC)
            defer(lambda s: funnel.add(s, decision.outcome, decision.reason, when, tenant))
        else:
            self._record(job_id, decision, tenant)
        return decision

    def _rows(self, job_id: str) -> tuple[Job | None, Subject | None]:
        """The job's and its subject's rows, read in a transaction of their own."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            return job, None if job is None else s.get(Subject, job.subject_id)

    def _record(self, job_id: str, decision: SampleDecision, tenant: str) -> None:
        """Count the decision in the ledger's loss funnel (:mod:`worker.research.funnel`);
        a ledger fault here is logged, never the job's failure."""
        try:
            funnel.record(self.db, decision.outcome, decision.reason, datetime.now(UTC), tenant)
        except Exception as exc:
            log.warning("research.funnel_failed", job_id=job_id, exc_type=type(exc).__name__)

    def _sample(
        self, job_id: str, media: bytes, job: Job, subject: Subject | None
    ) -> SampleDecision:
        why = ineligible(subject)
        quasi = QuasiIdentifiers.from_json(job.quasi).with_month(job.created_at).to_json()
        subject_id, key_id = job.subject_id, None if subject is None else subject.key_id
        if why is not None or key_id is None:
            return SampleDecision("skipped", why or "no_subject")
        if not self.selected(job_id):
            return SampleDecision("skipped", "not_selected")
        if self.writer.exists(job_id) or self.stager.exists(job_id):
            return SampleDecision("skipped", "already_sampled")
        kind = media_kind(media)
        if kind is None:
            return SampleDecision("skipped", "unsupported_media")
        operator, params = self.profile()
        if kind == "video":
            if operator == "k_same":
                return SampleDecision("skipped", "k_same_video")
            return self._video(_Source(job_id, subject_id, key_id, quasi), media, operator, params)
        return self._image(_Source(job_id, subject_id, key_id, quasi), media, operator, params)

    def _image(
        self, src: _Source, media: bytes, operator: str, params: Mapping[str, Any]
    ) -> SampleDecision:
        img = decode_image(media, self.image_limits)
        detector = self.detector()
        finder = at_threshold(detector, DEID_DETECT_THRESHOLD)
        faces = [f for f in finder.detect(img) if f.score >= DEID_DETECT_THRESHOLD]
        if operator == "k_same":
            if not faces:
                discard("k_same", "no_source_face", src.job_id)
                return SampleDecision("discarded", "no_source_face")
            checked = get_operator("k_same").validate(params)
            assert isinstance(checked, KSameParams)
            staged = self.stager.stage(
                job_id=src.job_id,
                subject_id=src.subject_id,
                key_id=src.key_id,
                material=prepare(img, faces, checked.size, checked.dilation),
                quasi=src.quasi,
            )
            if staged is None:
                return SampleDecision("skipped", "already_sampled")
            count("staged", "k_same")
            return SampleDecision("staged", "k_same", staged)
        result = deidentify_image(img, faces, operator, params)
        cleared = cleared_by(operator, img.shape, faces, params)
        gate = residual_gate(result.image, detector, len(faces), cleared=cleared)
        data = (
            b""
            if not gate.passed
            else encode_image(result.image, "jpeg", self.config.output_quality)
        )
        return self._keep(src, "image", operator, params, data, len(faces), gate)

    def _video(
        self, src: _Source, media: bytes, operator: str, params: Mapping[str, Any]
    ) -> SampleDecision:
        detector = self.detector()
        video = deidentify_video_detailed(
            media, detector, operator, params, self.video_limits, tracker=self.tracker
        )
        gate = residual_gate_video(
            video.data,
            detector,
            video.tracks,
            limits=self.video_limits,
            cleared_frames=video.cleared,
        )
        return self._keep(src, "video", operator, params, video.data, video.tracks, gate)

    def _keep(
        self,
        src: _Source,
        kind: str,
        operator: str,
        params: Mapping[str, Any],
        data: bytes,
        faces: int,
        gate: GateResult,
    ) -> SampleDecision:
        """Keep the derivative if it passed its gate (else discard and count it)."""
        if not gate.passed:
            discard(operator, gate.reason, src.job_id)
            return SampleDecision("discarded", gate.reason)
        sample_id = self.writer.write(
            SampleRecord(
                job_id=src.job_id,
                subject_id=src.subject_id,
                key_id=src.key_id,
                media_kind=kind,
                operator=operator,
                data=data,
                faces=faces,
                quasi=src.quasi,
                params=params,
                gate=gate.to_json(),
            )
        )
        if sample_id is None:
            return SampleDecision("skipped", "already_sampled")
        count("sampled", operator)
        return SampleDecision("sampled", operator, sample_id)


@dataclass(frozen=True)
class _Source:
    """The job a sample comes from: ids, the subject key id, generalized quasi-identifiers."""

    job_id: str
    subject_id: str
    key_id: str
    quasi: dict[str, Any]


__all__ = [
    "SampleDecision",
    "Sampler",
    "SamplerConfig",
    "media_kind",
    "rate_point",
]
