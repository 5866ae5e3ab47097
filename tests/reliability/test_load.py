"""Load: jobs through two real worker processes (Redis, PostgreSQL, SeaweedFS S3): throughput,
p50/p99 latency, zero lost, each done once.

Bounded run: 40 jobs. Long run (``FACEMEDIA_TEST_LONG=1``): 1,000 jobs.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import need, port_open
from tests.reliability.checks import assert_exactly_once, report
from tests.reliability.conftest import (
    LONG,
    Worker,
    distributed_settings,
    purge_broker,
    rel_redis_url,
)
from tests.workers import wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.services]

JOBS = 1000 if LONG else 40


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@pytest.mark.timeout(3600 if LONG else 300)
def test_jobs_through_two_workers_none_lost(
    pg_url: str, s3_bucket: str, s3_endpoint: str, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    from worker.bootstrap import Container
    from worker.ledger.models import Job
    from worker.settings import load_settings

    need("redis", port_open("127.0.0.1", 6379), "nothing listens on 127.0.0.1:6379")
    purge_broker(rel_redis_url())
    settings = distributed_settings(
        rel_redis_url(),
        pg_url,
        s3_bucket,
        s3_endpoint,
        tmp_path / "var",
        task_time_limit=60,
        task_soft_time_limit=50,
        visibility_timeout=600,
        lease_seconds=30,
    )
    container = Container(load_settings(**settings))
    container.db.migrate()
    workers = []
    for n in (1, 2):
        (tmp_path / f"logs{n}").mkdir()
        workers.append(Worker(settings, tmp_path / f"logs{n}", concurrency=1))
    try:
        for w in workers:
            w.start()
        for w in workers:
            assert w.wait_children()
        t0 = time.monotonic()
        job_ids = [
            container.client.submit(astronaut_jpeg, "detect", subject_id=f"load-{i % 50}")
            for i in range(JOBS)
        ]
        submit_s = time.monotonic() - t0

        def done() -> int:
            with container.db.session() as s:
                return len(
                    list(
                        s.scalars(
                            select(Job.id).where(
                                Job.id.in_(job_ids), Job.original_deleted_at.is_not(None)
                            )
                        )
                    )
                )

        assert wait_for(lambda: done() == JOBS, timeout=3000 if LONG else 240, interval=1.0), (
            done(),
            workers[0].logs()[-2000:],
        )
        wall = time.monotonic() - t0
        assert all(w.proc is not None and w.proc.poll() is None for w in workers)
    finally:
        for w in workers:
            w.close()
    with container.db.session() as s:
        rows: list[Any] = list(s.scalars(select(Job).where(Job.id.in_(job_ids))))
        assert all(r.status == "succeeded" and r.deliveries == 1 for r in rows)
        e2e = [(r.finished_at - r.created_at).total_seconds() for r in rows]
        service = [(r.finished_at - r.started_at).total_seconds() for r in rows]
        first = min(r.started_at for r in rows)
        last = max(r.finished_at for r in rows)
    assert len(rows) == JOBS
    assert_exactly_once(container, job_ids, s3_endpoint, s3_bucket)
    per_worker = [w.logs().count(b"job.succeeded") for w in workers]
    assert all(n > 0 for n in per_worker)  # both workers took work
    report(
        "load",
        jobs=JOBS,
        workers=2,
        concurrency_each=1,
        submit_s=round(submit_s, 1),
        wall_s=round(wall, 1),
        throughput_jobs_per_s=round(JOBS / (last - first).total_seconds(), 2),
        service_p50_s=round(statistics.median(service), 3),
        service_p99_s=round(_pct(service, 0.99), 3),
        e2e_p50_s=round(statistics.median(e2e), 2),
        e2e_p99_s=round(_pct(e2e, 0.99), 2),
        per_worker=per_worker,
        lost=0,
    )
    container.close()
