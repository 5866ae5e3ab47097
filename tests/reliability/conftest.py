"""Fixtures of the reliability harness: its own Redis db and RabbitMQ vhost, a slow image, and
a restartable real worker.

Long runs (>= 50 kills, 1,000-job load, long fuzzing) are behind ``FACEMEDIA_TEST_LONG=1`` and the
``slow`` marker; without it a bounded subset runs (part of ``make test``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AMQP_URL, REGION, lease_redis_db, need, port_open, release_redis_db
from tests.workers import celery_worker

LONG = os.environ.get("FACEMEDIA_TEST_LONG") == "1"
_leased: dict[str, str] = {}


def rel_redis_url() -> str:
    """This run's own Redis db (leased for the process with tests/conftest.py's lease, given
    back at exit), so two runs of this suite at once, or two pytest-xdist workers, never share a
    queue."""
    if "redis" in _leased:
        return _leased["redis"]
    import atexit

    need("redis", port_open("127.0.0.1", 6379), "nothing listens on 127.0.0.1:6379")
    url = lease_redis_db(ttl=4 * 3600)
    if url is None:
        pytest.skip("every Redis db the tests may use is leased by another run")
    _leased["redis"] = url
    atexit.register(release_redis_db, url)
    return url


def amqp_url() -> str:
    """A vhost of this run's own (created and deleted with rabbitmqctl when it is available),
    else the default one from tests/conftest.py."""
    if "amqp" in _leased:
        return _leased["amqp"]
    import atexit
    import shutil

    vhost = f"facemedia-rel-{os.getpid()}"
    scheme, rest = AMQP_URL.split("://", 1)
    url = AMQP_URL
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        made = subprocess.run([ctl, "add_vhost", vhost], capture_output=True, timeout=60)
        perms = subprocess.run(
            [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            capture_output=True,
            timeout=60,
        )
        if made.returncode == 0 and perms.returncode == 0:
            url = f"{scheme}://{rest.split('/', 1)[0]}/{vhost}"
            atexit.register(
                lambda: subprocess.run(
                    [ctl, "delete_vhost", vhost], capture_output=True, timeout=60
                )
            )
    _leased["amqp"] = url
    return url


def purge_broker(url: str) -> None:
    """Empty the harness's queues (Redis: its own db; RabbitMQ: media, if it exists)."""
    if url.startswith("redis"):
        import redis

        with redis.Redis.from_url(url) as client:
            client.flushdb()  # the lease lives in db 0: this keeps it
        return
    import kombu

    with kombu.Connection(url) as conn:
        channel = conn.channel()
        for name in ("media", "media.dead"):
            try:
                channel.queue_purge(name)
            except Exception:
                channel = conn.channel()  # a missing queue closes the channel


BROKERS = {"redis": 6379, "rabbitmq": 5672}


@pytest.fixture(params=sorted(BROKERS))
def rel_broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(name, url) of a real broker, emptied first."""
    port = BROKERS[request.param]
    need(request.param, port_open("127.0.0.1", port), f"nothing listens on 127.0.0.1:{port}")
    url = rel_redis_url() if request.param == "redis" else amqp_url()
    purge_broker(url)
    yield request.param, url
    purge_broker(url)


def distributed_settings(
    broker_url: str, pg_url: str, bucket: str, endpoint: str, home: Path, **extra: Any
) -> dict[str, Any]:
    """Settings for a real worker: broker, PostgreSQL ledger, SeaweedFS S3, fast crash recovery."""
    settings: dict[str, Any] = {
        "home": home,
        "broker_url": broker_url,
        "database_url": pg_url,
        "store_url": f"s3://{bucket}/v1",
        "s3_endpoint_url": endpoint,
        "s3_region": REGION,
        "store_region": REGION,  # SeaweedFS has no regions: the operator names it
        # Fast crash recovery: a lapsed lease is taken over after 4 s; on Redis an unacked
        # message of a dead worker returns after 20 s (+ a 2 s restore sweep). The task time
        # limit must stay below the visibility timeout (settings validation enforces it).
        "lease_seconds": 4,
        "task_time_limit": 15,
        "task_soft_time_limit": 12,
        "visibility_timeout": 20,
        "redis_restore_interval": 2,
        "retry_backoff_seconds": 0.5,
    }
    settings.update(extra)
    return settings


@dataclass
class Worker:
    """A real ``celery worker`` that can be SIGKILLed (child or whole group) and restarted."""

    settings: Mapping[str, object]
    log_dir: Path
    concurrency: int = 1
    starts: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _stack: ExitStack = field(default_factory=ExitStack)

    def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"worker-{self.starts}.log"
        self.proc = self._stack.enter_context(
            celery_worker(self.settings, log, concurrency=self.concurrency)
        )

    def children(self) -> list[int]:
        import psutil

        assert self.proc is not None
        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def wait_children(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.children()) >= self.concurrency:
                return True
            time.sleep(0.1)
        return False

    def kill_child(self) -> int:
        """SIGKILL one pool child (the busy one when concurrency is 1); return its pid."""
        import psutil

        kids = self.children()
        assert kids, "the worker has no pool child"
        busy = max(kids, key=lambda pid: psutil.Process(pid).cpu_times().user)
        os.kill(busy, signal.SIGKILL)
        return busy

    def kill_all(self) -> None:
        """SIGKILL the whole worker (its process group), then reap it."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def logs(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.log_dir.glob("worker-*.log")))

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="session")
def slow_jpeg() -> bytes:
    """A 3072x2048 composite of 24 astronaut tiles: ~1-2 s of ``detect`` in a worker child."""
    import cv2
    import numpy as np
    from skimage import data

    tile = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", np.tile(tile, (4, 6, 1)), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return bytes(buf)


@pytest.fixture(scope="session")
def short_video() -> bytes:
    """A 4 s MP4 (48 frames, 640x480, one face): ~1.5-2 s of ``ar`` in a worker child."""
    from tests.fixtures.hostile.build import _video

    return _video(frames=48, size=(640, 480))


def job_row(container: Any, job_id: str) -> tuple[str, int, datetime | None]:
    """(status, deliveries, started_at) straight from the ledger."""
    from worker.ledger.models import Job

    with container.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.status, job.deliveries, job.started_at
