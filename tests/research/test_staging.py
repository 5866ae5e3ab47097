"""k-Same staging: staged crops of ≥ k subjects become k samples and every staged object goes;
fewer than k write nothing; the TTL sweep removes what never made a batch; the k-Same gate;
two builders on PostgreSQL claim disjoint batches."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from pipelines.faces.detector import Face
from tests.media_signatures import plaintext_hits
from worker.ledger.models import DeletionReceipt, ResearchSample, StagedFace, StoredObject
from worker.ledger.subjects import Consent
from worker.research.ksame.gate import k_same_gate
from worker.research.ksame.material import pack, prepare, unpack

K = 3
REGION = "cn-north-1"  # the allowed region the shared fixtures create buckets in


@pytest.fixture(scope="module")
def people() -> list[bytes]:
    """Distinct "subjects": simple variants of scikit-image's astronaut (mirrored, colour
    shifted, grey, scaled, mirrored and shifted). No photo of a real person is committed."""
    import cv2
    from skimage import data

    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    flipped = np.ascontiguousarray(bgr[:, ::-1])
    variants = [
        flipped,
        np.clip(bgr.astype(np.int16) + np.array([30, 0, 0], np.int16), 0, 255).astype(np.uint8),
        cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR),
        cv2.resize(bgr, (384, 384)),
        np.clip(flipped.astype(np.int16) + np.array([0, 0, 25], np.int16), 0, 255).astype(np.uint8),
        cv2.resize(flipped, (400, 400)),
    ]
    return [bytes(cv2.imencode(".jpg", np.ascontiguousarray(v))[1]) for v in variants]


@pytest.fixture
def ksame(containers: Callable[..., Any]) -> Callable[..., Any]:
    """Embedded containers whose research operator is k_same (k = 3, every job sampled)."""

    def build(**overrides: Any) -> Any:
        return containers(
            research={"sample_rate": 1.0, "operator": "k_same", "k_same_k": K}, **overrides
        )

    return build


def _rows(c: Any, model: Any) -> list[Any]:
    with c.db.session() as s:
        return list(s.scalars(select(model)))


def _submit_all(c: Any, images: list[bytes], prefix: str) -> list[str]:
    return [
        c.client.submit(img, "detect", subject_id=f"{prefix}-{i}", consent=Consent(research=True))
        for i, img in enumerate(images)
    ]


def test_k_subjects_make_a_batch_and_staging_is_gone(ksame: Any, people: list[bytes]) -> None:
    c = ksame()
    jobs = _submit_all(c, people[:K], "ks")
    staged = _rows(c, StagedFace)
    assert len(staged) == K and not _rows(c, ResearchSample)  # staged, not sampled yet
    keys = list(c.store.keys("staging/"))
    assert len(keys) == K
    for key, original in zip(keys, people, strict=False):
        with c.store.get(key) as raw:
            assert plaintext_hits(raw.read(), [original]) == []
    [report] = c.ksame.build()
    assert (report.outcome, report.written, report.subjects, report.deleted) == ("written", K, K, K)
    samples = _rows(c, ResearchSample)
    assert sorted(s.source_job_id for s in samples) == sorted(jobs)
    assert all(s.operator == "k_same" and s.gate and s.gate["passed"] for s in samples)
    assert all(s.gate and s.gate["subjects"] >= K for s in samples)
    # every staged object deleted from the store (no version left) and recorded with a receipt
    assert list(c.store.keys("staging/")) == []
    assert _rows(c, StagedFace) == []
    with c.db.session() as s:
        receipts = s.scalar(
            select(func.count())
            .select_from(DeletionReceipt)
            .where(
                DeletionReceipt.object_class == "staging", DeletionReceipt.reason == "ksame_batch"
            )
        )
        live = s.scalar(
            select(func.count())
            .select_from(StoredObject)
            .where(StoredObject.object_class == "staging", StoredObject.deleted_at.is_(None))
        )
    assert (receipts, live) == (K, 0)
    # the samples open under each subject's context and are the k-Same averages
    from pipelines.media.image import decode_image

    for sample in samples:
        with c.db.session() as s:
            obj = s.get(StoredObject, sample.object_id)
            assert obj is not None
            key, job_id = obj.key, obj.job_id
        img = decode_image(c.vault.read(key, "research", job_id))
        assert img.ndim == 3
    assert c.ksame.build() == []  # nothing left to batch


def test_fewer_than_k_subjects_write_nothing_until_the_ttl_sweep(
    ksame: Any, people: list[bytes]
) -> None:
    c = ksame()
    _submit_all(c, people[: K - 1], "few")
    # the same subject twice does not count twice
    c.client.submit(people[3], "detect", subject_id="few-0", consent=Consent(research=True))
    assert len(_rows(c, StagedFace)) == K
    assert c.ksame.build() == []
    assert _rows(c, ResearchSample) == [] and list(c.store.keys("research/")) == []
    assert len(list(c.store.keys("staging/"))) == K
    # a day later the retention sweep deletes the staged crops (every version, receipts)
    report = c.sweeper.run(as_of=datetime.now(UTC) + timedelta(hours=25))
    assert report.deleted >= K
    assert list(c.store.keys("staging/")) == []
    # their rows are not claimable and are pruned by the next batch run
    assert c.ksame.claim("f" * 32) == []
    c.ksame.build()
    assert _rows(c, StagedFace) == []


def test_withdrawal_and_erasure_remove_staged_faces(ksame: Any, people: list[bytes]) -> None:
    c = ksame()
    _submit_all(c, people[:K], "wd")
    c.rights.withdraw_consent(c.client.subject_ref("wd-0"))
    c.rights.erase(c.client.subject_ref("wd-1"))
    assert [r.subject_id for r in _rows(c, StagedFace)] == [c.client.subject_ref("wd-2")]
    assert len(list(c.store.keys("staging/"))) == 1
    assert c.ksame.build() == []  # one subject left: no batch


def test_a_withdrawal_after_staging_keeps_the_subject_out_of_the_batch(
    ksame: Any, people: list[bytes]
) -> None:
    """The batch re-reads consent: a subject withdrawn (row flags only, e.g. a crash before the
    objects were deleted) is dropped, and the rest waits for enough subjects."""
    from worker.ledger.models import Subject

    c = ksame()
    _submit_all(c, people[:K], "late")
    ref = c.client.subject_ref("late-0")
    with c.db.session() as s:
        subject = s.get(Subject, ref)
        assert subject is not None
        subject.consent_withdrawn_at = datetime.now(UTC)
    [report] = c.ksame.build()
    assert (report.outcome, report.dropped, report.written) == ("too_few", 1, 0)
    assert _rows(c, ResearchSample) == []
    assert len(list(c.store.keys("staging/"))) == K - 1  # the withdrawn one is deleted
    staged = _rows(c, StagedFace)
    assert len(staged) == K - 1 and all(r.batch_id is None for r in staged)  # claimable again


def test_k_same_gate_fails_closed(people: list[bytes]) -> None:
    from pipelines.faces.detector import CenterFaceDetector, DetectorConfig
    from pipelines.media.image import decode_image

    detector = CenterFaceDetector.load(DetectorConfig(threshold=0.3))
    img = decode_image(people[0])
    [face] = detector.detect(img)
    # nothing was replaced where the face is: the face found is "outside" → fail
    elsewhere = Face((0.0, 0.0, 40.0, 40.0), face.landmarks, 0.9)
    verdict = k_same_gate(img, detector, [elsewhere], 1.5, subjects=K, k=K)
    assert (verdict.passed, verdict.reason) == (False, "face_outside_replaced")
    # the face itself counts as replaced → pass; too few subjects → fail
    assert k_same_gate(img, detector, [face], 1.5, subjects=K, k=K).passed
    too_few = k_same_gate(img, detector, [face], 1.5, subjects=K - 1, k=K)
    assert (too_few.passed, too_few.reason) == (False, "too_few_subjects")
    assert k_same_gate(img, detector, [], 1.5, subjects=K, k=K).reason == "no_source_face"


def test_staged_material_round_trips_without_pickles(people: list[bytes]) -> None:
    from pipelines.faces.detector import CenterFaceDetector, DetectorConfig
    from pipelines.media.image import decode_image

    detector = CenterFaceDetector.load(DetectorConfig(threshold=0.3))
    img = decode_image(people[0])
    faces = detector.detect(img)
    material = prepare(img, faces, 128, 1.5)
    back = unpack(pack(material))
    assert back.faces == material.faces and back.transforms == material.transforms
    assert all(np.array_equal(a, b) for a, b in zip(back.crops, material.crops, strict=True))
    # the face is masked out of the staged background
    x1, y1, x2, y2 = (int(v) for v in faces[0].box)
    assert back.background[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10].max() < 40


@pytest.mark.services
def test_two_builders_on_postgresql_claim_disjoint_batches(
    ksame: Any, people: list[bytes], pg_url: str
) -> None:
    c = ksame(database_url=pg_url)
    _submit_all(c, people[: 2 * K], "pg")
    c.ksame.config = type(c.ksame.config)(k=K, max_members=K)
    barrier = threading.Barrier(2)
    claims: list[list[str]] = [[], []]

    def claim(i: int) -> None:
        barrier.wait()
        claims[i] = [m.staged_id for m in c.ksame.claim(f"{i:032x}")]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claims[0]) == K and len(claims[1]) == K
    assert not set(claims[0]) & set(claims[1])
    with c.db.session() as s:
        batches = {row[0]: row[1] for row in s.execute(select(StagedFace.id, StagedFace.batch_id))}
    assert {batches[i] for i in claims[0]} == {f"{0:032x}"}
    assert {batches[i] for i in claims[1]} == {f"{1:032x}"}


@pytest.mark.slow
@pytest.mark.services
def test_on_a_versioned_bucket_no_version_of_a_staged_object_is_left(
    ksame: Any, people: list[bytes], pg_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    import boto3

    c = ksame(
        database_url=pg_url,
        store_url=f"s3://{s3_bucket}/p",
        s3_endpoint_url=s3_endpoint,
        s3_region=REGION,
        store_region=REGION,
    )
    _submit_all(c, people[:K], "s3")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    staged = s3.list_object_versions(Bucket=s3_bucket, Prefix="p/staging/")
    assert len(staged.get("Versions", [])) == K
    [report] = c.ksame.build()
    assert (report.written, report.deleted) == (K, K)
    left = s3.list_object_versions(Bucket=s3_bucket, Prefix="p/staging/")
    assert left.get("Versions", []) == [] and left.get("DeleteMarkers", []) == []
    research = s3.list_object_versions(Bucket=s3_bucket, Prefix="p/research/")
    assert len(research.get("Versions", [])) == K
    originals = s3.list_object_versions(Bucket=s3_bucket, Prefix="p/originals/")
    assert originals.get("Versions", []) == [] and originals.get("DeleteMarkers", []) == []


def test_the_batch_task_runs_inline_and_is_in_beat(
    ksame: Any, people: list[bytes], make_settings: Callable[..., Any]
) -> None:
    from worker.dispatch.config import celery_config
    from worker.dispatch.names import BUILD_KSAME
    from worker.tasks.sampling import build_ksame_batches

    c = ksame()
    _submit_all(c, people[:K], "task")
    [report] = build_ksame_batches.apply(throw=True).get()
    assert (report["outcome"], report["written"]) == ("written", K)
    conf = celery_config(make_settings())
    entry = next(e for e in conf["beat_schedule"].values() if e["task"] == BUILD_KSAME)
    assert entry["options"]["queue"] == "research" and entry["schedule"] <= 600
    assert "worker.tasks.sampling" in conf["imports"]


def test_held_staged_faces_are_neither_batched_nor_deleted(ksame: Any, people: list[bytes]) -> None:
    c = ksame()
    _submit_all(c, people[:K], "held")
    c.rights.hold(subject_id=c.client.subject_ref("held-0"), reason="court_order")
    assert c.ksame.build() == []  # K - 1 unheld subjects: no batch
    assert len(list(c.store.keys("staging/"))) == K
    c.rights.hold(subject_id=c.client.subject_ref("held-0"), release=True)
    [report] = c.ksame.build()
    assert (report.written, report.deleted) == (K, K)
