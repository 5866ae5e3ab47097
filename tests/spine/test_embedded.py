"""The job spine end to end on the embedded default: SQLite, LocalStore, eager Celery."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.media_signatures import plaintext_hits
from worker.jobs.errors import SubmitRefused
from worker.ledger import audit
from worker.ledger.models import DeletionReceipt, Job, StoredObject


def _count(container: Any, model: Any, **where: Any) -> int:
    with container.db.session() as s:
        stmt = select(func.count()).select_from(model).filter_by(**where)
        return int(s.scalar(stmt) or 0)


def test_detect_job_succeeds_and_original_is_deleted(embedded: Any, astronaut_jpeg: bytes) -> None:
    job_id = embedded.client.submit(astronaut_jpeg, "detect", subject_id="subject-a")
    status = embedded.service.status(job_id)
    assert status["status"] == "succeeded"
    assert status["faces"] == 1
    assert status["outputs"] == ["faces.json"]
    assert status["original_deleted"] is True
    assert list(embedded.store.keys("originals/")) == []
    doc = json.loads(embedded.client.outputs(job_id)["faces.json"])
    assert doc["schema"] == "facemedia.detect" and len(doc["faces"]) == 1
    x1, y1, x2, y2 = doc["faces"][0]["box"]
    assert 140 < x1 < x2 < 330 and 20 < y1 < y2 < 240  # the astronaut's face
    assert _count(embedded, DeletionReceipt, object_class="original", verified=True) == 1
    with embedded.db.session() as s:
        assert audit.verify(s).ok


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", "unsupported_format"),
        (b"\x00" * 100, "unsupported_format"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "unsupported_format"),
        (b"%PDF-1.7\n", "unsupported_format"),
    ],
)
def test_bad_input_fails_with_code_and_still_cleans_up(
    embedded: Any, payload: bytes, code: str
) -> None:
    job_id = embedded.client.submit(payload, "detect", subject_id="subject-c")
    status = embedded.service.status(job_id)
    assert status["status"] == "failed"
    assert status["error_code"] == code
    assert status["error_message"]
    assert status["original_deleted"] is True
    assert status["outputs"] == []
    assert list(embedded.store.keys()) == []


def test_truncated_jpeg_is_corrupt_media(embedded: Any, astronaut_jpeg: bytes) -> None:
    job_id = embedded.client.submit(astronaut_jpeg[:2000], "detect", subject_id="subject-c")
    status = embedded.service.status(job_id)
    assert (status["status"], status["error_code"]) == ("failed", "corrupt_media")
    assert status["original_deleted"]


def test_refused_at_submit_keeps_nothing(embedded: Any, astronaut_jpeg: bytes) -> None:
    with pytest.raises(SubmitRefused) as bad_type:
        embedded.client.submit(astronaut_jpeg, "no-such-type", subject_id="s")
    assert bad_type.value.code == "bad_params"
    with pytest.raises(SubmitRefused) as bad_params:
        embedded.client.submit(astronaut_jpeg, "detect", {"max_faces": "lots"}, subject_id="s")
    assert bad_params.value.code == "bad_params"
    assert _count(embedded, Job) == 0
    assert list(embedded.store.keys()) == []


def test_oversized_upload_is_refused_and_removed(make_settings: Any, astronaut_jpeg: bytes) -> None:
    from worker.bootstrap import Container

    container = Container(make_settings(max_upload_bytes=1000))
    try:
        with pytest.raises(SubmitRefused) as refused:
            container.client.submit(astronaut_jpeg, "detect", subject_id="s")
        assert refused.value.code == "too_large"
        with container.db.session() as s:
            job = s.scalars(select(Job)).one()
            assert (job.status, job.error_code) == ("failed", "too_large")
            assert job.original_deleted_at is not None
        assert list(container.store.keys()) == []
    finally:
        container.close()


def test_redelivery_after_success_does_no_work(embedded: Any, astronaut_jpeg: bytes) -> None:
    job_id = embedded.client.submit(astronaut_jpeg, "detect", subject_id="subject-d")
    again = embedded.service.process(job_id)
    assert again.ran is False and again.status == "succeeded"
    assert _count(embedded, StoredObject, job_id=job_id, object_class="output") == 1
    assert _count(embedded, DeletionReceipt) == 1
    with embedded.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.deliveries == 1


def test_crash_after_outputs_written_is_finished_once(
    make_settings: Any, astronaut_jpeg: bytes
) -> None:
    """A worker that died after writing outputs but before committing: the next delivery,
    once the lease lapsed, redoes the job and records exactly one set of outputs."""
    from worker.bootstrap import Container, set_container
    from worker.jobs.service import Claim, JobService, now

    container = Container(make_settings())
    set_container(container)
    try:
        enqueued: list[str] = []
        container.client.enqueue = enqueued.append  # type: ignore[method-assign]
        job_id = container.client.submit(astronaut_jpeg, "detect", subject_id="subject-e")
        svc: JobService = container.service
        claim = svc._claim(job_id)
        assert isinstance(claim, Claim)
        outcome = svc._run(claim.job, svc._load(claim))
        svc._store_outputs(claim, outcome)  # ...and the worker dies here
        assert svc.process(job_id).retry_in is not None  # lease still live: not taken over
        svc.clock = lambda: now() + timedelta(seconds=120)  # the lease has lapsed
        result = svc.process(job_id)
        assert result.ran and result.status == "succeeded"
        assert _count(container, StoredObject, job_id=job_id, object_class="output") == 1
        assert _count(container, DeletionReceipt) == 1
        status = svc.status(job_id)
        assert status["original_deleted"] and status["deliveries"] == 2
        # the dead worker's lease token can no longer commit anything
        assert svc._commit_success(claim, outcome) is None
    finally:
        container.close()
        set_container(None)


def test_poison_job_fails_after_max_deliveries(make_settings: Any, astronaut_jpeg: bytes) -> None:
    from worker.bootstrap import Container
    from worker.jobs.service import Claim, now

    container = Container(make_settings(max_deliveries=2))
    try:
        container.client.enqueue = lambda _job_id: None  # type: ignore[method-assign]
        job_id = container.client.submit(astronaut_jpeg, "detect", subject_id="subject-f")
        svc = container.service
        offset = 0
        for _ in range(2):  # two deliveries that each died mid-job
            assert isinstance(svc._claim(job_id), Claim)
            offset += 120
            svc.clock = lambda o=offset: now() + timedelta(seconds=o)  # type: ignore[misc]
        result = svc.process(job_id)
        status = svc.status(job_id)
        assert (result.status, status["error_code"]) == ("failed", "worker_lost")
        assert status["original_deleted"]
    finally:
        container.close()


def test_no_personal_data_in_store_ledger_or_logs(
    embedded: Any, astronaut_jpeg: bytes, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from worker.logs import configure_logging

    configure_logging("DEBUG")
    subject = "zhang.wei.13800138000@example.cn"
    file_name = "IMG_20261129_selfie_zhangwei.jpg"
    photo = tmp_path / file_name
    photo.write_bytes(astronaut_jpeg)
    from typer.testing import CliRunner

    from worker.cli import app

    res = CliRunner().invoke(
        app, ["run", str(photo), "--job", "detect", "--subject", subject, "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["status"] == "succeeded"
    home = embedded.settings.home_dir
    blobs = [p.read_bytes() for p in home.rglob("*") if p.is_file()]
    assert blobs, "the run stored nothing"
    captured = capfd.readouterr()
    logs = (captured.out + captured.err).encode()
    for needle in (subject, file_name, "zhangwei", "13800138000"):
        for blob in [*blobs, logs]:
            assert needle.encode() not in blob
    # and the store holds no plaintext: no media signature, no run of input bytes
    for path in (home / "store").rglob("*"):
        if path.is_file():
            assert plaintext_hits(path.read_bytes(), [astronaut_jpeg]) == []
