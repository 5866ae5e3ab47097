"""S3 faults between the worker and the store: a fault-injecting proxy (fault_proxy.py) in front
of SeaweedFS's S3 returns 500s, 503 SlowDown, resets connections and trickles bodies for a share of
the requests. Every job still completes, once, with its original deleted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import need, port_open
from tests.reliability.checks import assert_exactly_once, report
from tests.reliability.conftest import (
    LONG,
    Worker,
    distributed_settings,
    purge_broker,
    rel_redis_url,
)
from tests.reliability.fault_proxy import FaultProxy
from tests.workers import wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.services]

JOBS = 200 if LONG else 20
RATE = 0.25


@pytest.mark.timeout(1800 if LONG else 300)
def test_all_jobs_complete_through_a_faulty_s3(
    pg_url: str, s3_bucket: str, s3_endpoint: str, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    from worker.bootstrap import Container
    from worker.settings import load_settings

    need("redis", port_open("127.0.0.1", 6379), "nothing listens on 127.0.0.1:6379")
    purge_broker(rel_redis_url())
    direct = distributed_settings(rel_redis_url(), pg_url, s3_bucket, s3_endpoint, tmp_path / "var")
    container = Container(load_settings(**direct))  # the submitting side talks to S3 directly
    container.db.migrate()
    (tmp_path / "logs").mkdir()
    with FaultProxy(s3_endpoint, rate=RATE, seed=8) as proxy:
        faulty = dict(direct, s3_endpoint_url=proxy.url)
        worker = Worker(faulty, tmp_path / "logs", concurrency=2)
        t0 = time.monotonic()
        try:
            worker.start()
            job_ids = [
                container.client.submit(astronaut_jpeg, "detect", subject_id="fault-subject")
                for _ in range(JOBS)
            ]

            def done() -> bool:
                states = [container.service.status(j) for j in job_ids]
                return all(
                    s["status"] in ("succeeded", "failed") and s["original_deleted"] for s in states
                )

            finished = wait_for(done, timeout=1500 if LONG else 240, interval=0.5)
            statuses = [container.service.status(j) for j in job_ids]
            assert finished, (
                [(s["status"], s["error_code"]) for s in statuses],
                worker.logs()[-3000:],
            )
        finally:
            worker.close()
        injected = dict(proxy.injected)
        forwarded = proxy.forwarded
    assert all(s["status"] == "succeeded" for s in statuses), [
        (s["status"], s["error_code"]) for s in statuses
    ]
    assert_exactly_once(container, job_ids, s3_endpoint, s3_bucket)
    assert set(injected) == {"error500", "slowdown", "reset", "slow_body"}, injected
    report(
        "fault_proxy",
        jobs=JOBS,
        rate=RATE,
        injected=injected,
        forwarded=forwarded,
        job_retries=sum(s["retries"] for s in statuses),
        seconds=round(time.monotonic() - t0, 1),
    )
    container.close()
