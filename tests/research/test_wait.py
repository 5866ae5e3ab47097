"""A release of several shards with a broker: ``research release --wait`` says why it is not
published (no worker consumes the ``research`` queue, asked of the broker) and exits 3; once a
research worker runs (the documented ``make research-worker`` command line), the shards already
queued are built and the release is published. Real RabbitMQ and PostgreSQL, real ``celery
worker`` subprocesses, the real CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.research.test_release import populate
from tests.workers import CELERY, ROOT, celery_worker, settings_env, wait_for

FACEMEDIA = str(Path(CELERY).with_name("facemedia"))

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _cli(
    settings: dict[str, Any], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FACEMEDIA, *args],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_wait_exits_3_and_names_the_missing_research_worker(
    make_settings: Any,
    broker_deployment: Any,
    sample_images: list[bytes],
    tmp_path: Path,
) -> None:
    from worker.bootstrap import Container

    # a local store shared through the file system: the question here is the queues
    base = broker_deployment("wait") | {"store_url": f"file://{tmp_path / 'store'}"}
    settings = base | {"research__shard_samples": 4}
    container = Container(make_settings(**base, research={"shard_samples": 4}))
    try:
        populate(container, sample_images, n_ok=10, tag="wait")
        # a worker runs, but only on `media`: the shards sent to `research` wait unconsumed
        with celery_worker(settings, tmp_path / "media.log", queues="media", concurrency=1):
            assert wait_for(lambda: container.dispatcher.consumers("media") == 1, 60)
            proc = _cli(
                settings, "research", "release", "--name", "w1", "--k", "2", "--wait", "3", "--json"
            )
            assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr[-2000:])
            lines = proc.stdout.strip().splitlines()
            assert len(lines) == 1, proc.stdout
            doc = json.loads(lines[0])
            assert doc["error"] == "not_finished" and doc["status"] == "building"
            assert doc["shards"] == 3
            assert "no worker consumes the 'research' queue" in doc["message"], doc
            assert "make research-worker" in doc["message"]
            # the table form says the same on stderr, with the same exit code
            plain = _cli(settings, "research", "release", "--name", "w2", "--k", "2", "--wait", "2")
            assert plain.returncode == 3, plain.stderr[-2000:]
            assert "no worker consumes the 'research' queue" in plain.stderr
        # the documented research worker builds what was queued, and both publish
        with celery_worker(settings, tmp_path / "research.log", queues="research", concurrency=1):
            for name in ("w1", "w2"):

                def published(name: str = name) -> bool:
                    rid = container.releases.find(name)
                    return bool(container.releases.result(rid).status == "published")

                assert wait_for(published, 120), (tmp_path / "research.log").read_text()[-3000:]
            status = _cli(settings, "research", "status", "w1", "--json")
            assert status.returncode == 0, status.stderr[-2000:]
            final = json.loads(status.stdout)
            assert final["status"] == "published" and final["samples"] == 11
            assert final["funnel"]["released"] == 11
            waited = _cli(
                settings,
                "research",
                "release",
                "--name",
                "w3",
                "--k",
                "2",
                "--wait",
                "120",
                "--json",
            )
            assert waited.returncode == 0, (waited.stdout, waited.stderr[-2000:])
            assert json.loads(waited.stdout)["status"] == "published"
    finally:
        container.close()
