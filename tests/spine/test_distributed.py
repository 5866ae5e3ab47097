"""The spine for real: a ``celery worker`` subprocess on Redis and on RabbitMQ, the ledger on
PostgreSQL, the store on a SeaweedFS server's S3 gateway over HTTP with a versioned bucket."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import REGION, need, port_open
from tests.media_signatures import plaintext_hits
from tests.workers import celery_worker, settings_env, wait_for
from worker.objects.errors import ObjectCorrupt
from worker.objects.layout import output_key

pytestmark = pytest.mark.services

BROKERS = {"redis": 6379, "rabbitmq": 5672}
JOBS = 20


@pytest.fixture(params=sorted(BROKERS))
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    port = BROKERS[request.param]
    need(request.param, port_open("127.0.0.1", port), f"nothing listens on 127.0.0.1:{port}")
    # a database or a vhost of its own
    yield request.getfixturevalue("redis_url" if request.param == "redis" else "amqp_url")


def _all_versions(s3: Any, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        found += page.get("Versions", []) + page.get("DeleteMarkers", [])
    return found


def test_twenty_jobs_through_a_real_worker(
    broker_url: str,
    pg_url: str,
    s3_bucket: str,
    s3_endpoint: str,
    tmp_path: Path,
    astronaut_jpeg: bytes,
) -> None:
    from worker.bootstrap import Container
    from worker.settings import load_settings

    settings = {
        "home": tmp_path / "var",
        "broker_url": broker_url,
        "database_url": pg_url,
        "store_url": f"s3://{s3_bucket}/v1",
        "s3_endpoint_url": s3_endpoint,
        "s3_region": REGION,
        "store_region": REGION,  # SeaweedFS has no regions: the operator names it
        "lease_seconds": 10,
    }
    container = Container(load_settings(**settings))
    container.db.migrate()  # the ledger exists before either side starts
    assert container.preflight()["versioned"] is True
    subject = "distributed-subject-8f2c"
    log_path = tmp_path / "worker.log"
    with celery_worker(settings, log_path):
        job_ids = [
            container.client.submit(astronaut_jpeg, "detect", subject_id=subject)
            for _ in range(JOBS)
        ]
        for job_id in job_ids[:5]:  # the same job delivered twice does the work once
            container.dispatcher.enqueue(job_id)

        def done() -> bool:
            states = [container.service.status(j) for j in job_ids]
            return all(s["status"] == "succeeded" and s["original_deleted"] for s in states)

        finished = wait_for(done, timeout=240)
        # the CLI with the same settings submits to the broker and waits for the worker
        photo = tmp_path / "cli-photo.jpg"
        photo.write_bytes(astronaut_jpeg)
        try:
            cli = subprocess.run(
                [str(Path(sys.executable).with_name("facemedia")), "run", str(photo), "--json"],
                env=settings_env(settings),
                capture_output=True,
                timeout=180,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError((exc.stderr or b"")[-3000:]) from None
        assert cli.returncode == 0, cli.stderr[-2000:]
        summary = json.loads(cli.stdout.decode().strip().splitlines()[-1])
        assert (summary["status"], summary["faces"]) == ("succeeded", 1)
        assert summary["original_deleted"] and summary["deliveries"] == 1
    statuses = [container.service.status(j) for j in job_ids]
    assert finished, (
        [(s["status"], s["error_code"]) for s in statuses],
        log_path.read_text()[-3000:],
    )
    assert all(s["faces"] == 1 and s["deliveries"] == 1 for s in statuses)

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    assert _all_versions(s3, s3_bucket, "v1/originals/") == []  # no version, no marker
    for job_id in job_ids[:3]:
        doc = json.loads(container.client.outputs(job_id)["faces.json"])
        assert len(doc["faces"]) == 1
        with pytest.raises(ObjectCorrupt):
            container.vault.read(output_key(job_id, "faces.json"), "output", job_ids[-1])
    versions = _all_versions(s3, s3_bucket)
    data = [v for v in versions if not v["Key"].startswith("v1/checkpoints/")]  # audit heads
    assert len(data) == JOBS + 1  # exactly one output version per job (and the CLI's)
    for v in versions:
        body = s3.get_object(Bucket=s3_bucket, Key=v["Key"], VersionId=v["VersionId"])
        blob = body["Body"].read()
        assert plaintext_hits(blob, [astronaut_jpeg]) == [], v["Key"]
        assert subject.encode() not in blob
    worker_log = log_path.read_bytes()
    assert b"job.succeeded" in worker_log
    assert subject.encode() not in worker_log
    container.close()
