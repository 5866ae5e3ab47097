"""A poison message: a job whose worker dies every time it claims it (here: its pool child is
SIGKILLed on every claim) ends ``failed`` with ``worker_lost`` after ``max_deliveries``, its
original deleted, instead of looping forever; the jobs around it succeed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.reliability.checks import all_versions, report
from tests.reliability.conftest import Worker, distributed_settings, job_row
from tests.workers import wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.services]

MAX_DELIVERIES = 3


@pytest.mark.timeout(300)
def test_a_job_that_kills_its_worker_every_time_fails_worker_lost(
    rel_broker: tuple[str, str],
    pg_url: str,
    s3_bucket: str,
    s3_endpoint: str,
    tmp_path: Path,
    slow_jpeg: bytes,
    astronaut_jpeg: bytes,
) -> None:
    from worker.bootstrap import Container
    from worker.settings import load_settings

    broker, url = rel_broker
    settings = distributed_settings(
        url, pg_url, s3_bucket, s3_endpoint, tmp_path / "var", max_deliveries=MAX_DELIVERIES
    )
    container = Container(load_settings(**settings))
    container.db.migrate()
    (tmp_path / "logs").mkdir()
    worker = Worker(settings, tmp_path / "logs", concurrency=1)
    kills = 0
    started = time.monotonic()
    try:
        worker.start()
        assert worker.wait_children()
        poison = container.client.submit(slow_jpeg, "detect", subject_id="poison-subject")
        others = [
            container.client.submit(astronaut_jpeg, "detect", subject_id="bystander")
            for _ in range(2)
        ]
        killed_at: set[int] = set()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status, deliveries, _ = job_row(container, poison)
            if status in ("failed", "succeeded"):
                break
            if (
                status == "processing"
                and deliveries not in killed_at
                and deliveries <= MAX_DELIVERIES
            ):
                time.sleep(0.2)  # let it get into the pipeline
                worker.kill_child()
                kills += 1
                killed_at.add(deliveries)
                worker.wait_children()
            time.sleep(0.02)

        def ended() -> bool:
            states = [container.service.status(j) for j in [poison, *others]]
            return all(
                s["status"] in ("failed", "succeeded") and s["original_deleted"] for s in states
            )

        assert wait_for(ended, timeout=60), worker.logs()[-3000:]
    finally:
        worker.close()
    result = container.service.status(poison)
    assert result["status"] == "failed" and result["error_code"] == "worker_lost", result
    assert result["deliveries"] == MAX_DELIVERIES + 1
    assert result["original_deleted"] and result["outputs"] == []
    assert kills == MAX_DELIVERIES
    assert all(container.service.status(j)["status"] == "succeeded" for j in others)
    assert all_versions(s3_endpoint, s3_bucket, "v1/originals/") == []
    assert all_versions(s3_endpoint, s3_bucket, f"v1/outputs/{poison}/") == []
    report(
        "poison",
        broker=broker,
        max_deliveries=MAX_DELIVERIES,
        kills=kills,
        seconds_to_failed=round(time.monotonic() - started, 1),
    )
    container.close()
