"""Sweeps against real services: two sweepers claiming on PostgreSQL, a sweep SIGKILLed
mid-batch on SeaweedFS's S3 and finished by the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import func, select

from tests.conftest import REGION
from tests.retention.seed import seed_objects
from tests.workers import ROOT, settings_env
from worker.ledger.models import AuditEntry, DeletionReceipt, StoredObject

pytestmark = pytest.mark.services


def _live(container: Any) -> int:
    """Objects not yet stamped deleted."""
    with container.db.session() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(StoredObject)
                .where(StoredObject.deleted_at.is_(None))
            )
            or 0
        )


def test_two_sweepers_never_claim_the_same_object(make_settings: Any, pg_url: str) -> None:
    from worker.bootstrap import Container

    a = Container(make_settings(database_url=pg_url, sweep_batch=25))
    b = Container(make_settings(database_url=pg_url, sweep_batch=25))
    try:
        seed_objects(a, 400)
        claimed: dict[str, list[str]] = {"a": [], "b": []}

        def drain(name: str, container: Any) -> None:
            while claim := container.sweeper.claim(datetime.now(UTC)):
                claimed[name] += [d.object_id for d in claim.doomed]
                container.sweeper.finish(claim, container.deleter.remove(claim.doomed))

        threads = [
            threading.Thread(target=drain, args=("a", a)),
            threading.Thread(target=drain, args=("b", b)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        both = Counter(claimed["a"] + claimed["b"])
        assert len(both) == 400 and max(both.values()) == 1
        assert claimed["a"] and claimed["b"], "both sweepers should have taken work"
        with a.db.session() as s:
            assert s.scalar(select(func.count()).select_from(DeletionReceipt)) == 400
        assert _live(a) == 0
    finally:
        a.close()
        b.close()


def test_postgresql_claim_is_a_row_lock_released_by_commit_or_rollback(
    make_settings: Any, pg_url: str
) -> None:
    """On PostgreSQL a claim writes nothing: its open transaction locks the rows (another
    sweeper skips them), finishing commits the stamp and receipts in that transaction, and a
    claim given back (or whose process died) frees its rows at once, with no expiry to wait."""
    from worker.bootstrap import Container

    a = Container(make_settings(database_url=pg_url, sweep_batch=50))
    b = Container(make_settings(database_url=pg_url, sweep_batch=50))
    try:
        seed_objects(a, 60)
        now = datetime.now(UTC)
        first = a.sweeper.claim(now)
        assert first is not None and len(first.doomed) == 50
        with b.db.session() as s:  # nothing written to claim them
            marked = s.scalar(
                select(func.count())
                .select_from(StoredObject)
                .where(StoredObject.claim_token.is_not(None))
            )
        assert marked == 0
        rest = b.sweeper.claim(now)  # skips the 50 locked rows
        assert rest is not None and len(rest.doomed) == 10
        assert not {d.object_id for d in rest.doomed} & {d.object_id for d in first.doomed}
        first.abandon()
        again = b.sweeper.claim(now)  # free at once
        assert again is not None
        assert {d.object_id for d in again.doomed} == {d.object_id for d in first.doomed}
        for claim in (rest, again):
            batch = b.sweeper.finish(claim, b.deleter.remove(claim.doomed))
            assert batch.deleted == len(claim.doomed) and batch.versions == len(claim.doomed)
        assert b.sweeper.claim(now) is None
        with a.db.session() as s:
            receipts = list(s.scalars(select(DeletionReceipt)))
            assert len(receipts) == 60 == len({r.object_id for r in receipts})
            assert all(r.versions_removed == 1 and r.reason == "retention" for r in receipts)
        assert _live(a) == 0
    finally:
        a.close()
        b.close()


def test_sweep_killed_mid_batch_is_finished_by_the_next(
    make_settings: Any, pg_url: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    from worker.bootstrap import Container

    settings = {
        "home": tmp_path / "var",
        "database_url": pg_url,
        "store_url": f"s3://{s3_bucket}/p",
        "s3_endpoint_url": s3_endpoint,
        "s3_region": REGION,
        "store_region": REGION,  # SeaweedFS has no regions: the operator names it
        "sweep_batch": 100,
        "sweep_lock_seconds": 10,
    }
    container = Container(make_settings(**settings))
    total = 1500
    seed_objects(container, total)
    cmd = [str(Path(sys.executable).with_name("facemedia")), "sweep", "--json"]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=settings_env(settings),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )

    def receipts() -> int:
        with container.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(DeletionReceipt)) or 0)

    deadline = time.monotonic() + 120
    while receipts() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    killed_at = receipts()
    assert 0 < killed_at < total, "the kill should land mid-sweep"
    assert container.sweeper.run().locked_out  # the dead sweep's lock is still held...
    time.sleep(11)  # ...until it lapses
    report = container.sweeper.run()
    assert not report.locked_out
    assert killed_at + report.deleted + report.already_deleted == total
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    listed = s3.list_object_versions(Bucket=s3_bucket)
    left = {  # audit checkpoints are kept forever
        k: [v for v in listed.get(k, []) if "/checkpoints/" not in v["Key"]]
        for k in ("Versions", "DeleteMarkers")
    }
    assert left.get("Versions", []) == [] and left.get("DeleteMarkers", []) == []
    with container.db.session() as s:
        ids = list(s.scalars(select(DeletionReceipt.object_id)))
    assert len(ids) == len(set(ids)) == total  # one receipt each: nothing double-deleted
    container.close()


def test_privacy_tasks_on_a_real_worker(
    make_settings: Any,
    pg_url: str,
    s3_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    astronaut_jpeg: bytes,
    redis_url: str,
) -> None:
    """Erasure and the sweep as Celery tasks on the privacy queue (Redis broker)."""
    from tests.workers import celery_worker, wait_for
    from worker.bootstrap import Container
    from worker.ledger.models import Subject

    settings = {
        "home": tmp_path / "var",
        "broker_url": redis_url,
        "database_url": pg_url,
        "store_url": f"s3://{s3_bucket}/p",
        "s3_endpoint_url": s3_endpoint,
        "s3_region": REGION,
        "store_region": REGION,  # SeaweedFS has no regions: the operator names it
    }
    container = Container(make_settings(**settings))
    container.db.migrate()
    with celery_worker(settings, tmp_path / "w.log", queues="media,privacy"):
        job_id = container.client.submit(astronaut_jpeg, "detect", subject_id="task-erase")
        assert wait_for(lambda: container.service.status(job_id)["original_deleted"], 120)
        ref = container.subjects.find("task-erase")
        assert container.client.request_erasure("task-erase")

        def erased() -> bool:
            with container.db.session() as s:
                return s.get(Subject, ref.id).erased_at is not None

        assert wait_for(erased, 60), (tmp_path / "w.log").read_text()[-2000:]
        container.dispatcher.send("facemedia.privacy.sweep", [])

        def swept() -> bool:
            with container.db.session() as s:
                ran = select(AuditEntry).where(AuditEntry.event == "sweep.ran")
                return s.scalars(ran).first() is not None

        assert wait_for(swept, 60)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    listed = s3.list_object_versions(Bucket=s3_bucket)
    left = {  # audit checkpoints are kept forever
        k: [v for v in listed.get(k, []) if "/checkpoints/" not in v["Key"]]
        for k in ("Versions", "DeleteMarkers")
    }
    assert not left.get("Versions") and not left.get("DeleteMarkers")
    container.close()
