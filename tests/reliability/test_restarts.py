"""Restart the broker (Redis or RabbitMQ) and PostgreSQL under a running worker: it reconnects
and no job is lost. These stop shared services, so they run only with
``FACEMEDIA_TEST_RESTART_SERVICES=1``; each service is started again in a ``finally`` whatever
happens.

Redis is shut down with SAVE (a broker without persistence loses its queue on a restart: run
production Redis with AOF or RDB) and the dump is removed once it has been loaded again.
RabbitMQ's application is stopped and started (``rabbitmqctl stop_app`` / ``start_app``: every
connection is dropped, the quorum queues are recovered from disk); if it does not answer a ping
afterwards the node is started the way .ci/run does (``rabbitmq-server -detached``).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import need, port_open
from tests.reliability.checks import assert_exactly_once, report
from tests.reliability.conftest import (
    Worker,
    amqp_url,
    distributed_settings,
    purge_broker,
    rel_redis_url,
)
from tests.workers import wait_for

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("FACEMEDIA_TEST_RESTART_SERVICES") != "1",
        reason="stops shared services; set FACEMEDIA_TEST_RESTART_SERVICES=1",
    ),
]

REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]
JOBS = 40


def _pg_cluster() -> tuple[str, str]:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return version, "main"


def _restart_redis(down_s: float) -> float:
    """SHUTDOWN SAVE, wait, start again (always), drop the dump; return the outage seconds."""
    t = time.monotonic()
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "save"], check=False, timeout=30)
    try:
        wait_for(lambda: not port_open("127.0.0.1", 6379), timeout=10)
        time.sleep(down_s)
    finally:
        subprocess.run(REDIS_START, check=True, timeout=30)
        assert wait_for(lambda: port_open("127.0.0.1", 6379), timeout=20)
        dump = Path("/var/lib/redis/dump.rdb")
        if dump.exists():
            dump.unlink()
    return time.monotonic() - t


def _rabbit_up() -> bool:
    ping = ["rabbitmq-diagnostics", "-q", "ping"]
    return subprocess.run(ping, capture_output=True, timeout=60, check=False).returncode == 0


def _restart_rabbitmq(down_s: float) -> float:
    """Stop RabbitMQ's application (all connections drop), wait, start it again (always)."""
    t = time.monotonic()
    subprocess.run(["rabbitmqctl", "stop_app"], capture_output=True, timeout=120, check=False)
    try:
        time.sleep(down_s)
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120, check=False)
        if not wait_for(_rabbit_up, timeout=60, interval=2):
            subprocess.run(["rabbitmq-server", "-detached"], check=False, timeout=60)
        assert wait_for(_rabbit_up, timeout=120, interval=2)
        assert wait_for(lambda: port_open("127.0.0.1", 5672), timeout=30)
    return time.monotonic() - t


def _restart_postgres(down_s: float) -> float:
    version, name = _pg_cluster()
    t = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "stop", "-m", "fast"],
        check=False,
        timeout=60,
    )
    try:
        time.sleep(down_s)
    finally:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"],
            check=True,
            timeout=60,
        )
        assert wait_for(lambda: port_open("127.0.0.1", 5432), timeout=30)
    return time.monotonic() - t


@pytest.mark.timeout(900)
@pytest.mark.parametrize("service", ["redis", "rabbitmq", "postgresql"])
def test_a_service_restart_mid_run_loses_nothing(
    service: str, pg_url: str, s3_bucket: str, s3_endpoint: str, tmp_path: Path, slow_jpeg: bytes
) -> None:
    from worker.bootstrap import Container
    from worker.settings import load_settings

    if service == "rabbitmq":
        need("rabbitmq", port_open("127.0.0.1", 5672), "nothing listens on 127.0.0.1:5672")
        broker = amqp_url()
    else:
        need("redis", port_open("127.0.0.1", 6379), "nothing listens on 127.0.0.1:6379")
        broker = rel_redis_url()
    purge_broker(broker)
    settings = distributed_settings(
        broker,
        pg_url,
        s3_bucket,
        s3_endpoint,
        tmp_path / "var",
        task_time_limit=60,
        task_soft_time_limit=50,
        visibility_timeout=90,
    )
    container = Container(load_settings(**settings))
    container.db.migrate()
    (tmp_path / "logs").mkdir()
    worker = Worker(settings, tmp_path / "logs", concurrency=2)
    t0 = time.monotonic()
    try:
        worker.start()
        assert worker.wait_children()
        job_ids = [
            container.client.submit(slow_jpeg, "detect", subject_id="restart-subject")
            for _ in range(JOBS)
        ]

        def ended() -> int:
            return sum(
                container.service.status(j)["status"] in ("succeeded", "failed") for j in job_ids
            )

        assert wait_for(lambda: ended() >= 4, timeout=120)
        restart = {
            "redis": _restart_redis,
            "rabbitmq": _restart_rabbitmq,
            "postgresql": _restart_postgres,
        }
        outage = restart[service](5)

        def done() -> bool:
            try:
                states = [container.service.status(j) for j in job_ids]
            except Exception:  # the test's own pool reconnecting
                return False
            return all(
                s["status"] in ("succeeded", "failed") and s["original_deleted"] for s in states
            )

        finished = wait_for(done, timeout=600, interval=1.0)
        statuses = [container.service.status(j) for j in job_ids]
        assert finished, ([(s["status"], s["error_code"]) for s in statuses], worker.logs()[-4000:])
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        worker.close()
    assert all(s["status"] == "succeeded" for s in statuses), [
        (s["status"], s["error_code"]) for s in statuses
    ]
    assert_exactly_once(container, job_ids, s3_endpoint, s3_bucket)
    report(
        "restart",
        service=service,
        jobs=JOBS,
        outage_s=round(outage, 1),
        redelivered=sum(s["deliveries"] > 1 for s in statuses),
        retries=sum(s["retries"] for s in statuses),
        seconds=round(time.monotonic() - t0, 1),
    )
    container.close()
