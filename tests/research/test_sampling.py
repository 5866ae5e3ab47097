"""Research sampling at job time, end to end on the embedded default with the real CenterFace
model and real codecs: consent gating, minors, withdrawal, the rate, the residual gate, one
sample per job, ciphertext only, and erasure/withdrawal."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from tests.media_signatures import plaintext_hits
from worker.ledger.models import DeletionReceipt, ResearchSample, StoredObject
from worker.ledger.subjects import Consent
from worker.research.sampling import Sampler, rate_point


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    """scikit-image's astronaut, mirrored: the default profile passes the gate on it (on the
    unmirrored photo the gate fires at 0.36 beside the mask's edge and discards it)."""
    import cv2
    from skimage import data

    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr[:, ::-1]))
    assert ok
    return bytes(buf)


@pytest.fixture(scope="module")
def faceless_jpeg() -> bytes:
    """A smooth gradient: no face for any detector."""
    import cv2

    x = np.linspace(0, 255, 320, dtype=np.float64)
    img = np.stack([np.tile(x, (240, 1)), np.tile(x[::-1], (240, 1)), np.full((240, 320), 90)], 2)
    ok, buf = cv2.imencode(".jpg", img.astype(np.uint8))
    assert ok
    return bytes(buf)


@pytest.fixture
def research(containers: Callable[..., Any]) -> Callable[..., Any]:
    """Build embedded containers with ``[research]`` overrides (sample_rate 1 by default)."""

    def build(**research: Any) -> Any:
        research.setdefault("sample_rate", 1.0)
        return containers(research=research)

    return build


def _samples(c: Any) -> list[ResearchSample]:
    with c.db.session() as s:
        return list(s.scalars(select(ResearchSample)))


def _research_objects(c: Any, live: bool = True) -> list[StoredObject]:
    with c.db.session() as s:
        q = select(StoredObject).where(StoredObject.object_class == "research")
        if live:
            q = q.where(StoredObject.deleted_at.is_(None))
        return list(s.scalars(q))


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_consenting_adult_is_sampled_ciphertext_only(research: Any, face_jpeg: bytes) -> None:
    from pipelines.deid.gate import residual_gate
    from pipelines.media.image import decode_image

    c = research()
    job_id = c.client.submit(
        face_jpeg, "detect", subject_id="adult-1", consent=Consent(research=True)
    )
    assert c.service.status(job_id)["status"] == "succeeded"
    [sample] = _samples(c)
    [obj] = _research_objects(c)
    assert (sample.source_job_id, sample.object_id, sample.operator) == (job_id, obj.id, "mask")
    assert sample.gate and sample.gate["passed"] and sample.faces == 1
    assert obj.key == f"research/{sample.id}" and obj.job_id == job_id
    assert obj.expires_at is not None and obj.expires_at - obj.created_at == timedelta(days=3 * 365)
    # the store holds ciphertext only (no media signature, no run of the original's bytes)
    with c.store.get(obj.key) as raw:
        blob = raw.read()
    assert plaintext_hits(blob, [face_jpeg]) == []
    # it opens under the subject's key with its own context, and shows no face to the gate
    data = c.vault.read(obj.key, "research", job_id)
    assert data[:3] == b"\xff\xd8\xff" and b"Exif" not in data[:64]
    img = decode_image(data)
    assert residual_gate(img, c.detector(), source_faces=1).passed
    # only the derivative: the original is gone as usual
    assert list(c.store.keys("originals/")) == []


def test_rate_zero_and_no_consent_keep_nothing(research: Any, face_jpeg: bytes) -> None:
    c = research(sample_rate=0.0)
    c.client.submit(face_jpeg, "detect", subject_id="r0", consent=Consent(research=True))
    c2 = research()
    c2.client.submit(face_jpeg, "detect", subject_id="no-consent")
    c2.client.submit(face_jpeg, "detect", subject_id="no-consent-2", consent=Consent())
    assert _samples(c) == [] and _samples(c2) == []
    assert list(c2.store.keys("research/")) == []


def test_minor_needs_a_guardians_consent(research: Any, face_jpeg: bytes) -> None:
    c = research()
    c.client.submit(
        face_jpeg, "detect", subject_id="minor-1", consent=Consent(research=True, is_minor=True)
    )
    assert _samples(c) == []
    job_id = c.client.submit(
        face_jpeg,
        "detect",
        subject_id="minor-2",
        consent=Consent(research=True, is_minor=True, guardian=True),
    )
    assert [s.source_job_id for s in _samples(c)] == [job_id]


def test_withdrawal_before_the_job_runs_wins(research: Any, face_jpeg: bytes) -> None:
    c = research()
    sent: list[str] = []
    c.client.enqueue = sent.append  # the job waits in the queue
    job_id = c.client.submit(face_jpeg, "detect", subject_id="w-1", consent=Consent(research=True))
    ref = c.client.subject_ref("w-1")
    c.rights.withdraw_consent(ref)
    assert c.service.process(job_id).status == "succeeded"
    assert _samples(c) == []


def test_redelivery_keeps_one_sample(research: Any, face_jpeg: bytes) -> None:
    """A worker that sampled, then died before committing: the redelivery samples no more."""
    from worker.jobs.service import ProcessResult, now

    c = research()
    c.client.enqueue = lambda job_id: None
    job_id = c.client.submit(face_jpeg, "detect", subject_id="redo", consent=Consent(research=True))
    svc = c.service
    claim = svc._claim(job_id)
    assert not isinstance(claim, ProcessResult)
    job = claim.job
    media = svc._load(claim)
    svc._store_outputs(claim, svc._run(job, media))
    svc._sample(claim, media)  # ...and the worker dies here
    svc.clock = lambda: now() + timedelta(seconds=120)
    assert svc.process(job_id).status == "succeeded"
    assert len(_samples(c)) == 1
    assert len(list(c.store.keys("research/"))) == 1
    # and the sampler itself is idempotent for that job
    assert c.sampler.sample(job_id, media).reason == "already_sampled"


def test_rate_is_deterministic_per_job(research: Any) -> None:
    c = research(sample_rate=0.5)
    sampler: Sampler = c.sampler
    ids = [f"{i:032x}" for i in range(400)]
    first = [sampler.selected(i) for i in ids]
    assert first == [sampler.selected(i) for i in ids]
    assert 140 < sum(first) < 260  # about half
    assert 0.0 <= rate_point("f" * 64) < 1.0 and rate_point("0" * 64) == 0.0


def test_a_source_without_a_face_is_discarded_and_counted(
    research: Any, faceless_jpeg: bytes
) -> None:
    before = _metric(
        "facemedia_residual_gate_discards_total", profile="mask", reason="no_source_face"
    )
    c = research()
    job_id = c.client.submit(
        faceless_jpeg, "detect", subject_id="no-face", consent=Consent(research=True)
    )
    assert c.service.status(job_id)["status"] == "succeeded"  # the job itself is fine
    assert _samples(c) == []
    after = _metric(
        "facemedia_residual_gate_discards_total", profile="mask", reason="no_source_face"
    )
    assert after == before + 1


def test_sampling_failure_never_fails_the_job(research: Any, face_jpeg: bytes) -> None:
    c = research()

    def broken(job_id: str, media: bytes, **rows: Any) -> None:
        raise RuntimeError("boom")

    c.service.sampler = broken
    before = _metric("facemedia_research_sampling_total", outcome="error", reason="sampler_crashed")
    job_id = c.client.submit(face_jpeg, "detect", subject_id="boom", consent=Consent(research=True))
    assert c.service.status(job_id)["status"] == "succeeded"
    after = _metric("facemedia_research_sampling_total", outcome="error", reason="sampler_crashed")
    assert after == before + 1


def test_erasure_and_withdrawal_remove_samples(research: Any, face_jpeg: bytes) -> None:
    c = research()
    for name in ("erase-me", "withdraw-me", "keep-me"):
        c.client.submit(face_jpeg, "detect", subject_id=name, consent=Consent(research=True))
    assert len(_samples(c)) == 3
    erased = c.client.subject_ref("erase-me")
    withdrawn = c.client.subject_ref("withdraw-me")
    c.rights.erase(erased)
    c.rights.withdraw_consent(withdrawn)
    left = _samples(c)
    assert [s.subject_id for s in left] == [c.client.subject_ref("keep-me")]
    assert [o.subject_id for o in _research_objects(c)] == [left[0].subject_id]
    assert len(list(c.store.keys("research/"))) == 1
    with c.db.session() as s:
        receipts = s.scalar(
            select(func.count())
            .select_from(DeletionReceipt)
            .where(DeletionReceipt.object_class == "research")
        )
    assert receipts == 2


def test_video_sample_passes_the_gate_and_drops_audio(research: Any, face_jpeg: bytes) -> None:
    import av

    from pipelines.media.image import decode_image

    frame = decode_image(face_jpeg)[:480, :480]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 480, 480, "yuv420p"
        for i in range(10):
            shifted = np.ascontiguousarray(np.roll(frame, i, axis=1))
            for packet in stream.encode(av.VideoFrame.from_ndarray(shifted, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    c = research()
    job_id = c.client.submit(
        buf.getvalue(),
        "ar",
        {"effects": [{"effect": "lut", "look": "warm"}]},
        subject_id="video-1",
        consent=Consent(research=True),
    )
    assert c.service.status(job_id)["status"] == "succeeded"
    [sample] = _samples(c)
    assert sample.media_kind == "video" and sample.gate and sample.gate["passed"]
    [obj] = _research_objects(c)
    data = c.vault.read(obj.key, "research", job_id)
    with av.open(io.BytesIO(data)) as container:
        assert not container.streams.audio and container.streams.video


def test_a_withdrawal_racing_the_write_keeps_nothing(research: Any, face_jpeg: bytes) -> None:
    """The subject withdraws after the decision but before the sample is recorded: the write
    re-reads the subject in its transaction and keeps nothing (the stored object is removed)."""
    c = research()
    write = c.sampler.writer.write
    decisions: list[Any] = []

    def withdraw_then_write(record: Any) -> Any:
        c.rights.withdraw_consent(record.subject_id)
        return write(record)

    c.sampler.writer.write = withdraw_then_write
    sample = c.sampler.sample

    def spy(job_id: str, media: bytes, **rows: Any) -> Any:
        decisions.append(sample(job_id, media, **rows))
        return decisions[-1]

    c.service.sampler = spy
    job_id = c.client.submit(face_jpeg, "detect", subject_id="race", consent=Consent(research=True))
    assert c.service.status(job_id)["status"] == "succeeded"
    assert [(d.outcome, d.reason) for d in decisions] == [("skipped", "withdrawn")]
    assert _samples(c) == [] and _research_objects(c, live=False) == []
    assert list(c.store.keys("research/")) == []


def test_export_holds_the_subjects_sample(research: Any, face_jpeg: bytes, tmp_path: Any) -> None:
    c = research()
    c.client.submit(face_jpeg, "detect", subject_id="export-me", consent=Consent(research=True))
    ref = c.client.subject_ref("export-me")
    report = c.rights.export(ref, tmp_path / "out")
    research_files = [f for f in report["files"] if f.startswith("research/")]
    assert len(research_files) == 1 and research_files[0].endswith("sample.jpg")
    assert (tmp_path / "out" / research_files[0]).read_bytes()[:3] == b"\xff\xd8\xff"
