"""A whole worker SIGKILLed mid-job on Redis, with a production-length visibility timeout
(the broker would hand the message back only after it): the lease rescue that beat runs
(``facemedia.privacy.rescue``) queues the job again once its lease lapses, and a fresh worker
finishes it exactly once, within the 30 s redelivery goal."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import need, port_open
from tests.reliability.conftest import distributed_settings, job_row, purge_broker, rel_redis_url
from tests.workers import celery_worker, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.services]

# The bounded run uses the harness's 4 s lease and a 2 s beat; FACEMEDIA_TEST_LONG=1 uses the
# production defaults (lease_seconds 15, rescue_interval 10 s).
LONG = os.environ.get("FACEMEDIA_TEST_LONG") == "1"
LEASE, BEAT = (15, 10.0) if LONG else (4, 2.0)


@pytest.mark.timeout(240)
def test_rescue_recovers_a_whole_worker_crash_on_redis_before_the_visibility_timeout(
    pg_url: str, s3_bucket: str, s3_endpoint: str, tmp_path: Path, slow_jpeg: bytes
) -> None:
    from worker.bootstrap import Container
    from worker.ledger.models import StoredObject
    from worker.settings import load_settings

    need("redis", port_open("127.0.0.1", 6379), "nothing listens on 127.0.0.1:6379")
    url = rel_redis_url()
    purge_broker(url)
    # visibility 600 s: Redis alone would redeliver after 10 minutes
    settings = distributed_settings(
        url,
        pg_url,
        s3_bucket,
        s3_endpoint,
        tmp_path / "var",
        visibility_timeout=600,
        lease_seconds=LEASE,
    )
    container = Container(load_settings(**settings))
    try:
        job_id = container.client.submit(slow_jpeg, "detect", subject_id="rescue-1")
        with celery_worker(settings, tmp_path / "w1.log", queues="media", concurrency=1) as proc:
            assert wait_for(lambda: job_row(container, job_id)[0] == "processing", 90), (
                tmp_path / "w1.log"
            ).read_text()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            killed = datetime.now(UTC)
        assert job_row(container, job_id)[:2] == ("processing", 1)
        log2 = tmp_path / "w2.log"
        with celery_worker(settings, log2, queues="media,privacy", concurrency=1):
            last = 0.0

            def beat_and_check() -> bool:
                nonlocal last
                if time.monotonic() - last >= BEAT:  # what beat does every rescue_interval
                    container.dispatcher.send("facemedia.privacy.rescue", [])
                    last = time.monotonic()
                return job_row(container, job_id)[1] >= 2

            assert wait_for(beat_and_check, 60), log2.read_text()[-3000:]
            started = job_row(container, job_id)[2]
            assert started is not None
            redelivery = (started - killed).total_seconds()
            # succeeded is committed first, the original deleted right after (the job's tail)
            assert wait_for(lambda: container.service.status(job_id)["original_deleted"], 90)
        status, deliveries, _ = job_row(container, job_id)
        assert (status, deliveries) == ("succeeded", 2)
        assert redelivery <= 30, redelivery
        print(f"\nrescue: redelivery {redelivery:.1f} s after the whole-worker kill")
        with container.db.session() as s:
            from sqlalchemy import select

            rows = list(s.scalars(select(StoredObject).where(StoredObject.job_id == job_id)))
        outputs = [r for r in rows if r.object_class == "output"]
        assert [r.name for r in outputs] == ["faces.json"]  # one set of outputs
        assert all(r.deleted_at is not None for r in rows if r.object_class == "original")
        assert "job.rescued" in log2.read_text() or "jobs.rescued" in log2.read_text()
    finally:
        container.close()
        purge_broker(url)
