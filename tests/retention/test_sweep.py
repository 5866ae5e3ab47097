"""Sweeps on the embedded default and on SeaweedFS's S3 (versioned), holds, erasure, export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import func, select

from tests.conftest import REGION
from tests.retention.seed import seed_objects
from worker.crypto import KeyShreddedError
from worker.ledger import audit
from worker.ledger.models import DeletionReceipt, Revocation, Subject
from worker.objects.layout import output_key

LATER = datetime.now(UTC) + timedelta(days=8)


def _receipts(container: Any) -> int:
    with container.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(DeletionReceipt)) or 0)


@pytest.fixture
def s3_container(make_settings: Any, s3_endpoint: str, s3_bucket: str) -> Any:
    from worker.bootstrap import Container, set_container

    container = Container(
        make_settings(
            store_url=f"s3://{s3_bucket}/p",
            s3_endpoint_url=s3_endpoint,
            s3_region=REGION,
            store_region=REGION,
        )
    )
    set_container(container)
    yield container
    container.close()
    set_container(None)


def _versions(endpoint: str, bucket: str) -> list[dict[str, Any]]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    found: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        found += page.get("Versions", []) + page.get("DeleteMarkers", [])
    return [v for v in found if "/checkpoints/" not in v["Key"]]  # audit heads: kept forever


def test_outputs_expire_on_the_sweep(embedded: Any, astronaut_jpeg: bytes) -> None:
    job_id = embedded.client.submit(astronaut_jpeg, "detect", subject_id="sw-a")
    assert embedded.sweeper.run().deleted == 0  # nothing due yet
    preview = embedded.sweeper.run(as_of=LATER, dry_run=True)
    assert (preview.due, preview.deleted) == (1, 0)
    assert embedded.store.exists(output_key(job_id, "faces.json"))
    report = embedded.sweeper.run(as_of=LATER)
    assert (report.due, report.deleted, report.unverified) == (1, 1, 0)
    assert report.lag_seconds > 0
    assert list(embedded.store.keys()) == []
    assert _receipts(embedded) == 2  # the original at job end, the output now
    assert embedded.sweeper.run(as_of=LATER).deleted == 0  # nothing twice
    with embedded.db.session() as s:
        assert audit.verify(s).ok


def test_sweep_removes_every_version_and_marker(
    s3_container: Any, s3_bucket: str, s3_endpoint: str
) -> None:
    keys = seed_objects(s3_container, 5)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    full = f"p/{keys[0]}"
    s3.put_object(Bucket=s3_bucket, Key=full, Body=b"a second version")
    s3.delete_object(Bucket=s3_bucket, Key=full)  # and a delete marker on top
    assert len(_versions(s3_endpoint, s3_bucket)) == 7
    report = s3_container.sweeper.run()
    assert report.deleted == 5 and report.versions == 7
    assert _versions(s3_endpoint, s3_bucket) == []
    with s3_container.db.session() as s:
        rows = list(s.scalars(select(DeletionReceipt)))
    assert len(rows) == 5 and all(r.verified for r in rows)
    assert sorted(r.versions_removed for r in rows) == [1, 1, 1, 1, 3]


def test_legal_hold_on_subject_and_job(embedded: Any, astronaut_jpeg: bytes) -> None:
    subject = embedded.subjects.ensure("sw-held")
    embedded.rights.hold(subject_id=subject.id, reason="court_order")
    job_id = embedded.client.submit(astronaut_jpeg, "detect", subject_id="sw-held")
    status = embedded.service.status(job_id)
    assert status["status"] == "succeeded" and status["original_deleted"] is False
    report = embedded.sweeper.run(as_of=LATER)
    assert report.deleted == 0 and report.held == 2
    assert embedded.rights.erase(subject.id).pending is True  # erasure waits for the hold
    assert len(list(embedded.store.keys())) == 2
    embedded.rights.hold(subject_id=subject.id, release=True)
    report = embedded.sweeper.run(as_of=LATER)
    assert report.erasures_completed == 1
    assert list(embedded.store.keys()) == []
    assert embedded.service.status(job_id)["original_deleted"] is True
    with pytest.raises(ValueError):
        embedded.rights.hold(subject_id=subject.id, reason=" ")


def test_job_hold_keeps_only_that_job(embedded: Any, astronaut_jpeg: bytes) -> None:
    first = embedded.client.submit(astronaut_jpeg, "detect", subject_id="sw-j")
    second = embedded.client.submit(astronaut_jpeg, "detect", subject_id="sw-j")
    embedded.rights.hold(job_id=first, reason="security_incident")
    embedded.sweeper.run(as_of=LATER)
    assert embedded.store.exists(output_key(first, "faces.json"))
    assert not embedded.store.exists(output_key(second, "faces.json"))
    embedded.rights.hold(job_id=first, release=True)
    assert embedded.sweeper.run(as_of=LATER).deleted == 1
    assert list(embedded.store.keys()) == []


def test_erasure_shreds_copies_and_is_idempotent(
    s3_container: Any, astronaut_jpeg: bytes, s3_endpoint: str, s3_bucket: str
) -> None:
    c = s3_container
    job_id = c.client.submit(astronaut_jpeg, "detect", subject_id="sw-erase")
    other = c.client.submit(astronaut_jpeg, "detect", subject_id="sw-keep")
    key = output_key(job_id, "faces.json")
    with c.store.get(key) as body:
        copy = body.read()  # a copy made before erasure (a backup, a stray version)
    ref = c.subjects.find("sw-erase")
    result = c.rights.erase(ref.id)
    assert (result.deleted, result.pending) == (1, False)
    assert [v["Key"] for v in _versions(s3_endpoint, s3_bucket)] == [
        f"p/{output_key(other, 'faces.json')}"
    ]
    c.store.put("outputs/restored/faces.json", __import__("io").BytesIO(copy))
    with pytest.raises(KeyShreddedError):
        c.envelope.open({"object_key": key, "object_class": "output", "job_id": job_id}, copy)
    again = c.rights.erase(ref.id)
    assert again.already_done and again.deleted == 0
    with c.db.session() as s:
        subject = s.get(Subject, ref.id)
        assert subject is not None and subject.erased_at is not None
        assert s.scalars(select(Revocation).where(Revocation.subject_id == ref.id)).one()
    assert c.client.outputs(other)  # the other subject is untouched


def test_export_holds_exactly_the_subjects_data(
    embedded: Any, astronaut_jpeg: bytes, tmp_path: Path
) -> None:
    mine = embedded.client.submit(astronaut_jpeg, "detect", subject_id="sw-me")
    theirs = embedded.client.submit(astronaut_jpeg, "detect", subject_id="sw-them")
    ref = embedded.subjects.find("sw-me")
    result = embedded.rights.export(ref.id, tmp_path / "export")
    report = json.loads((tmp_path / "export" / "report.json").read_text())
    assert [j["id"] for j in report["jobs"]] == [mine]
    assert {o["job_id"] for o in report["objects"]} == {mine}
    assert len(report["deletion_receipts"]) == 1  # the original
    assert result["files"] == [f"output/{mine}/faces.json"]
    faces = json.loads((tmp_path / "export" / result["files"][0]).read_text())
    assert len(faces["faces"]) == 1
    blob = "".join(p.read_text() for p in (tmp_path / "export").rglob("*") if p.is_file())
    theirs_ref = embedded.subjects.find("sw-them")
    assert theirs not in blob and theirs_ref.id not in blob
    assert "sw-me" not in blob  # the upstream id itself is never held


def test_consent_withdrawal_removes_research_samples(embedded: Any) -> None:
    ref = embedded.subjects.ensure("sw-research")
    seed_objects(embedded, 3, object_class="research", subject=ref)
    seed_objects(embedded, 2, object_class="output", subject=ref, age=timedelta(0))
    result = embedded.rights.withdraw_consent(ref.id)
    assert (result.deleted, result.already_done) == (3, False)
    assert [k.split("/")[0] for k in embedded.store.keys()] == ["outputs", "outputs"]  # noqa: SIM118
    with embedded.db.session() as s:
        assert s.get(Subject, ref.id).research_consent is False
        assert s.scalars(select(Revocation).where(Revocation.subject_id == ref.id)).one()
    assert embedded.rights.withdraw_consent(ref.id).already_done


def test_expired_jobs_and_stuck_jobs(make_settings: Any, astronaut_jpeg: bytes) -> None:
    from worker.bootstrap import Container

    c = Container(make_settings())
    try:
        sent: list[str] = []
        c.client.enqueue = sent.append  # the broker "lost" these messages
        never = c.client.submit(astronaut_jpeg, "detect", subject_id="sw-stuck")
        report = c.sweeper.run(as_of=datetime.now(UTC) + timedelta(hours=1))
        assert report.requeued_ids == [never] and report.jobs_expired == 0
        report = c.sweeper.run(as_of=datetime.now(UTC) + timedelta(hours=25))
        assert report.jobs_expired == 1 and report.deleted == 1
        status = c.service.status(never)
        assert (status["status"], status["original_deleted"]) == ("expired", True)
    finally:
        c.close()


def test_orphans_past_grace_are_deleted(embedded: Any, astronaut_jpeg: bytes) -> None:
    job_id = embedded.client.submit(astronaut_jpeg, "detect", subject_id="sw-orphan")
    embedded.store.put("outputs/nobody/stray", __import__("io").BytesIO(b"ciphertext?"))
    assert embedded.sweeper.orphans()["orphans"] == 0  # within the grace period
    later = datetime.now(UTC) + timedelta(days=2)
    assert embedded.sweeper.orphans(as_of=later, dry_run=True)["orphans"] == 1
    assert embedded.sweeper.orphans(as_of=later)["deleted"] == 1
    assert list(embedded.store.keys()) == [output_key(job_id, "faces.json")]


def test_only_one_sweep_at_a_time(embedded: Any) -> None:
    from worker.retention.locks import LedgerLock

    lock = LedgerLock(embedded.db, "sweep", timedelta(minutes=5), lambda: datetime.now(UTC))
    assert lock.acquire()
    assert embedded.sweeper.run().locked_out
    lock.release()
    assert not embedded.sweeper.run().locked_out


def test_upstream_requests_run_as_privacy_tasks(embedded: Any, astronaut_jpeg: bytes) -> None:
    embedded.client.submit(astronaut_jpeg, "detect", subject_id="sw-upstream")
    assert embedded.client.request_erasure("never-seen") is False
    assert embedded.client.request_consent_withdrawal("sw-upstream") is True
    assert embedded.client.request_erasure("sw-upstream") is True
    ref = embedded.subjects.find("sw-upstream")
    with embedded.db.session() as s:
        subject = s.get(Subject, ref.id)
        assert subject.erased_at is not None and subject.consent_withdrawn_at is not None
    assert list(embedded.store.keys()) == []


def test_cli_sweep_hold_erase_export(embedded: Any, astronaut_jpeg: bytes, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from worker.cli import app

    run = CliRunner().invoke
    embedded.client.submit(astronaut_jpeg, "detect", subject_id="sw-cli")
    later = LATER.isoformat()
    held = run(app, ["hold", "set", "--subject", "sw-cli", "--reason", "litigation", "--json"])
    assert held.exit_code == 0 and json.loads(held.stdout)["held"] is True
    dry = json.loads(run(app, ["sweep", "--dry-run", "--as-of", later, "--json"]).stdout)
    assert (dry["due"], dry["held"], dry["deleted"]) == (0, 1, 0)
    assert run(app, ["hold", "release", "--subject", "sw-cli", "--yes"]).exit_code == 0
    swept = json.loads(run(app, ["sweep", "--as-of", later, "--json"]).stdout)
    assert swept["deleted"] == 1
    out = tmp_path / "exp"
    exported = run(app, ["export", "sw-cli", "--out", str(out), "--json"])
    assert exported.exit_code == 0 and (out / "report.json").exists()
    erased = json.loads(run(app, ["erase", "sw-cli", "--yes", "--json"]).stdout)
    assert erased["pending"] is False
    assert run(app, ["erase", "nobody-known", "--yes"]).exit_code == 2
    assert run(app, ["hold", "set", "--subject", "sw-cli"]).exit_code == 2  # no reason
    assert run(app, ["consent", "withdraw", "sw-cli", "--json"]).exit_code == 0


def test_sweep_claims_several_batches_and_caps_them(make_settings: Any) -> None:
    """Claims of two DeleteObjects batches, two batches in the store at once: ``max_batches``
    still caps the store batches, and every object is deleted and receipted exactly once."""
    from worker.bootstrap import Container

    c = Container(make_settings(sweep_batch=4))
    try:
        seed_objects(c, 25)
        first = c.sweeper.run(max_batches=3)
        assert (first.deleted, first.batches, first.more) == (12, 3, True)
        rest = c.sweeper.run()
        assert (rest.deleted, rest.batches, rest.more) == (13, 4, False)
        assert list(c.store.keys()) == []
        with c.db.session() as s:
            ids = list(s.scalars(select(DeletionReceipt.object_id)))
        assert len(ids) == len(set(ids)) == 25
    finally:
        c.close()


def test_rescue_queues_a_job_whose_worker_stopped_heartbeating(
    make_settings: Any, astronaut_jpeg: bytes
) -> None:
    from worker.bootstrap import Container
    from worker.ledger.models import Job

    c = Container(make_settings())
    try:
        sent: list[str] = []
        c.client.enqueue = sent.append  # not run: a worker "claims" it below and dies
        job_id = c.client.submit(astronaut_jpeg, "detect", subject_id="sw-rescue")
        live = c.client.submit(astronaut_jpeg, "detect", subject_id="sw-rescue")
        t = datetime.now(UTC)
        with c.db.session() as s:
            leases = ((job_id, t - timedelta(seconds=10)), (live, t + timedelta(seconds=60)))
            for jid, until in leases:
                row = s.get(Job, jid)
                assert row is not None
                row.status, row.lease_token, row.lease_until = "processing", "dead" + jid, until
        assert c.sweeper.rescue(as_of=t) == [job_id]  # the live lease is left alone
        assert c.sweeper.rescue(as_of=t) == []  # once
        with c.db.session() as s:
            row = s.get(Job, job_id)
            assert row is not None
            assert (row.status, row.lease_token, row.lease_until) == ("queued", None, None)
        # the next delivery claims and finishes it; the dead holder's token is gone
        result = c.service.process(job_id)
        assert result.status == "succeeded" and result.ran
        from sqlalchemy import select

        from worker.ledger.models import AuditEntry

        with c.db.session() as s:
            events = list(s.scalars(select(AuditEntry.event).where(AuditEntry.entity == job_id)))
        assert events.count("job.rescued") == 1
    finally:
        c.close()
