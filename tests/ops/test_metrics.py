"""Metrics from a real prefork worker: children's samples summed (multiprocess mode), scraped
over HTTP from FACEMEDIA_METRICS_PORT."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.ops.conftest import container_for
from tests.workers import celery_worker, wait_for

pytestmark = pytest.mark.services

JOBS = 8


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, keyed by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_summed_across_prefork_children(
    deployment: Callable[..., dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    astronaut_jpeg: bytes,
) -> None:
    port = free_port()
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    (multiproc / "counter_999999.db").write_bytes(b"stale")  # a previous run's file: wiped
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc))
    settings = deployment(metrics_port=port)
    container = container_for(settings)
    log_path = tmp_path / "worker.log"
    with celery_worker(settings, log_path, concurrency=2):
        assert wait_for(lambda: _up(port), timeout=60), log_path.read_text()[-2000:]
        before = scrape(port)
        assert sample(before, "facemedia_queue_depth", queue="media") == 0
        # every known label value is exported at 0 from the start (rate() and alerts need a
        # series before the first event), and the build is named
        failed_key = (
            "facemedia_jobs_failed_total",
            (("error_code", "no_face"), ("job_type", "pta")),
        )
        assert before[failed_key] == 0
        for status in ("succeeded", "failed"):
            key = ("facemedia_jobs_total", (("job_type", "detect"), ("status", status)))
            assert before[key] == 0, key
        assert before[("facemedia_deletions_total", (("reason", "job_ended"),))] == 0
        info = [k for k in before if k[0] == "facemedia_build_info"]
        assert len(info) == 1 and before[info[0]] == 1
        assert {"version", "python"} == {label for label, _ in info[0][1]}
        # rates are Prometheus's to compute: no pre-computed per-second figure
        assert not [k for k in before if "per_second" in k[0]], sorted({k[0] for k in before})
        job_ids = [
            container.client.submit(astronaut_jpeg, "detect", subject_id="metrics-subject")
            for _ in range(JOBS)
        ]
        job_ids.append(container.client.submit(b"not an image", "detect", subject_id="m"))
        # A long job delivered twice: the second delivery finds a live lease and retries later.
        long_job = container.client.submit(_mid_jpeg(), "detect", subject_id="metrics-subject")
        container.dispatcher.enqueue(long_job)
        job_ids.append(long_job)

        def done() -> bool:
            states = [container.service.status(j)["status"] for j in job_ids]
            return all(s in ("succeeded", "failed") for s in states)

        assert wait_for(done, timeout=120), log_path.read_text()[-3000:]
        # ... and the duplicate's retry has run (it finds the job ended), so nothing is pending.
        assert wait_for(lambda: log_path.read_bytes().count(b"] succeeded in ") >= JOBS + 3, 30)
        samples = scrape(port)
    container.close()

    done_ok = JOBS + 1
    assert sample(samples, "facemedia_jobs_total", job_type="detect", status="succeeded") == done_ok
    # the failed job ("not an image") by its type and its stable error code
    assert sample(samples, "facemedia_jobs_total", job_type="detect", status="failed") == 1
    assert (
        sample(
            samples,
            "facemedia_jobs_failed_total",
            job_type="detect",
            error_code="unsupported_format",
        )
        == 1
    )
    assert (
        sample(samples, "facemedia_jobs_failed_total", job_type="detect", error_code="no_face") == 0
    )
    count = "facemedia_stage_duration_seconds_count"
    assert sample(samples, count, job_type="detect", stage="decode") == done_ok + 1
    assert sample(samples, count, job_type="detect", stage="pipeline") == done_ok + 1
    assert sample(samples, count, job_type="detect", stage="detect") == done_ok
    assert sample(samples, count, job_type="detect", stage="store") == done_ok
    pipeline_sum = sample(
        samples, "facemedia_stage_duration_seconds_sum", job_type="detect", stage="pipeline"
    )
    detect_sum = sample(
        samples, "facemedia_stage_duration_seconds_sum", job_type="detect", stage="detect"
    )
    assert 0 < detect_sum <= pipeline_sum
    inf = sample(
        samples,
        "facemedia_stage_duration_seconds_bucket",
        job_type="detect",
        stage="pipeline",
        le="+Inf",
    )
    assert inf == done_ok + 1
    retries = sample(samples, "facemedia_task_retries_total", task="facemedia.media.process")
    assert retries >= 1  # the duplicate delivery of the long job
    # Deployment gauges computed at scrape time from the broker and the ledger.
    assert sample(samples, "facemedia_queue_depth", queue="media") == 0
    assert ("facemedia_jobs_in_state", (("status", "queued"),)) in samples
    assert sample(samples, "facemedia_stuck_jobs", kind="lease_lapsed") == 0
    assert sample(samples, "facemedia_metrics_collect_errors", source="ledger") == 0
    assert sample(samples, "facemedia_metrics_collect_errors", source="broker") == 0

    # The scrape is a sum over children: each child's own file holds part of the jobs.
    per_child = _jobs_per_file(multiproc)
    assert not (multiproc / "counter_999999.db").exists()
    assert sum(per_child.values()) == done_ok
    assert len([n for n in per_child.values() if n > 0]) == 2, per_child


def _mid_jpeg() -> bytes:
    """A 1280² photo: long enough that a duplicate delivery meets a live lease."""
    import cv2
    from skimage import data

    image = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (1280, 1280))
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return bytes(buf)


def _up(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False


def _jobs_per_file(multiproc: Path) -> dict[str, float]:
    from prometheus_client.multiprocess import MultiProcessCollector

    found: dict[str, float] = {}
    for path in multiproc.glob("counter_*.db"):
        metrics = MultiProcessCollector._read_metrics([str(path)])  # type: ignore[no-untyped-call]
        found[path.name] = sum(
            s.value
            for m in metrics.values()
            if m.name == "facemedia_jobs"
            for s in m.samples
            if dict(s.labels).get("status") == "succeeded"
        )
    return found


def test_queue_depth_reads_the_broker(ops_redis: str) -> None:
    import redis

    from worker.metrics_server import queue_depths

    client = redis.Redis.from_url(ops_redis)
    client.lpush("media", b"{}", b"{}", b"{}")  # kombu's Redis queue is a list named after it
    client.lpush("privacy", b"{}")
    assert queue_depths(ops_redis) == {"media": 3, "privacy": 1, "research": 0, "webhooks": 0}


def test_an_unreadable_source_is_a_metric_not_a_crash(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    import worker.metrics  # noqa: F401  (registers the process's own metrics)
    from worker.metrics_server import build_registry
    from worker.settings import load_settings

    settings = load_settings(
        home=tmp_path / "var",
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none",
    )
    text = generate_latest(build_registry(settings)).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert sample(samples, "facemedia_metrics_collect_errors", source="broker") == 1
    assert sample(samples, "facemedia_metrics_collect_errors", source="ledger") == 1
    assert "# TYPE facemedia_jobs_total counter" in text  # the process's own metrics too


def test_failed_jobs_carry_type_and_code_and_known_series_start_at_zero(
    embedded: Any,
) -> None:
    """In one process (no prefork): the scrape has every known series at 0 before any job, a
    build_info, no per-second gauge; a failed job is counted by its type and error code."""
    from prometheus_client import generate_latest

    from worker.metrics_server import build_registry, zero_known_labels

    def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = generate_latest(build_registry(embedded.settings)).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    zero_known_labels()
    before = scraped()
    failed = (
        "facemedia_jobs_failed_total",
        (("error_code", "unsupported_format"), ("job_type", "detect")),
    )
    assert failed in before
    for job_type in ("detect", "pta", "ar"):
        assert (
            "facemedia_jobs_failed_total",
            (("error_code", "no_face"), ("job_type", job_type)),
        ) in before
    assert (
        "facemedia_research_sampling_total",
        (("outcome", "skipped"), ("reason", "not_selected")),
    ) in before
    assert [k for k in before if k[0] == "facemedia_build_info"]
    assert not [k for k in before if "per_second" in k[0]]
    job = embedded.client.submit(b"not an image", "detect", subject_id="metrics-labels")
    assert embedded.service.status(job)["error_code"] == "unsupported_format"
    after = scraped()
    assert after[failed] == before[failed] + 1
    total = ("facemedia_jobs_total", (("job_type", "detect"), ("status", "failed")))
    assert after[total] == before.get(total, 0) + 1
    assert ("facemedia_jobs_total", (("job_type", "any"), ("status", "failed"))) not in after
