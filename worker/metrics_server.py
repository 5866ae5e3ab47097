"""Serve the worker's Prometheus metrics on ``metrics_port`` (``FACEMEDIA_METRICS_PORT``).

The endpoint binds ``metrics_host`` (``FACEMEDIA_METRICS_HOST``), ``127.0.0.1`` by default: the
metrics name queues and job counts, and nobody but this host's Prometheus agent should read them.
Set it to ``0.0.0.0`` or an interface address only behind a firewall.

Started from the worker's main process by a Celery signal (worker/celery_app.py), never at import.
With ``PROMETHEUS_MULTIPROC_DIR`` set, prefork children write their samples to files in that
directory and this server sums them on every scrape (prometheus-client's multiprocess mode);
without it, only the main process's own registry is served (fine for ``--pool solo|threads``).

Besides the counters and histograms of worker/metrics.py, each scrape computes, from the broker
and the ledger (a fresh connection each time, cached for a few seconds; none is held open, so a
forked child never inherits one):

- ``facemedia_queue_depth{queue}``: messages waiting in each queue (autoscale on this);
- ``facemedia_jobs_in_state{status}``: jobs queued/processing in the ledger;
- ``facemedia_oldest_queued_job_age_seconds``: age of the oldest queued job;
- ``facemedia_stuck_jobs``: jobs ``processing`` whose lease lapsed (their worker died) plus jobs
  queued for longer than ``visibility_timeout`` (their message was lost);
- ``facemedia_metrics_collect_errors{source}``: 1 when the broker or ledger could not be read;
- ``facemedia_build_info{version,python}``: always 1, the running code's version.

When it starts, every counter series whose label values are known (job types, error codes,
tasks, deletion reasons...) is created at 0 (:func:`worker.metrics.zero_known_labels`).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.dispatch.names import QUEUES
from worker.settings import Settings

log = structlog.get_logger("facemedia.metrics")

CACHE_SECONDS = 5.0


def multiproc_dir() -> Path | None:
    """The multiprocess directory, if the environment names one."""
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def wipe_multiproc_dir() -> None:
    """Empty the multiprocess directory (once, in the main process, before children start):
    samples of an earlier run would otherwise be summed into this one's."""
    path = multiproc_dir()
    if path is None:
        return
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_file() and entry.suffix == ".db":
            entry.unlink(missing_ok=True)
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def child_exited(pid: int) -> None:
    """Forget a dead child's live gauges (counters and histograms are kept and summed)."""
    if multiproc_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class _Cached:
    """Runs ``compute`` at most once per CACHE_SECONDS; keeps the last result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = 0.0
        self._value: list[Metric] = []

    def get(self, compute: Any) -> list[Metric]:
        with self._lock:
            if time.monotonic() - self._at >= CACHE_SECONDS:
                self._value = list(compute())
                self._at = time.monotonic()
            return self._value


class DeploymentCollector(Collector):
    """Queue depth from the broker and job states from the ledger, computed per scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache = _Cached()

    def collect(self) -> Iterable[Metric]:
        return self._cache.get(self._compute)

    def _compute(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily(
            "facemedia_metrics_collect_errors",
            "1 when the source could not be read at the last scrape",
            labels=["source"],
        )
        try:
            depth = GaugeMetricFamily(
                "facemedia_queue_depth", "Messages waiting in the queue", labels=["queue"]
            )
            for queue, count in queue_depths(self.settings.broker_url).items():
                depth.add_metric([queue], count)
            yield depth
            errors.add_metric(["broker"], 0)
        except Exception as exc:
            log.warning("metrics.broker_unreadable", error=type(exc).__name__)
            errors.add_metric(["broker"], 1)
        try:
            yield from ledger_metrics(self.settings)
            errors.add_metric(["ledger"], 0)
        except Exception as exc:
            log.warning("metrics.ledger_unreadable", error=type(exc).__name__)
            errors.add_metric(["ledger"], 1)
        yield errors


def queue_depths(broker_url: str) -> dict[str, int]:
    """Messages ready in each queue (a passive declare: Redis list length, RabbitMQ count)."""
    if not broker_url:
        return {}
    from kombu.connection import Connection

    depths: dict[str, int] = {}
    with Connection(broker_url, connect_timeout=3) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
        channel = conn.channel()
        try:
            for queue in QUEUES:
                try:
                    ok = channel.queue_declare(queue=queue, passive=True)
                    depths[queue] = int(ok.message_count)
                except Exception:  # RabbitMQ: a queue nobody declared yet closes the channel
                    depths[queue] = 0
                    channel = conn.channel()
        finally:
            channel.close()
    return depths


def ledger_metrics(settings: Settings) -> Iterator[Metric]:
    """Jobs per unfinished state, the oldest queued job's age, and stuck jobs."""
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.pool import NullPool

    from worker.ledger.models import Job

    engine = create_engine(settings.effective_database_url, poolclass=NullPool)
    now = datetime.now(UTC)
    lost_after = now - timedelta(seconds=settings.visibility_timeout)
    try:
        with engine.connect() as conn:
            counts = dict(
                conn.execute(
                    select(Job.status, func.count())
                    .where(Job.status.in_(("queued", "processing")))
                    .group_by(Job.status)
                ).all()
            )
            oldest = conn.execute(
                select(func.min(Job.created_at)).where(Job.status == "queued")
            ).scalar()
            lapsed = conn.execute(
                select(func.count()).where(Job.status == "processing", Job.lease_until < now)
            ).scalar_one()
            lost = conn.execute(
                select(func.count()).where(Job.status == "queued", Job.created_at < lost_after)
            ).scalar_one()
    finally:
        engine.dispose()
    state = GaugeMetricFamily(
        "facemedia_jobs_in_state", "Unfinished jobs in the ledger", labels=["status"]
    )
    for status in ("queued", "processing"):
        state.add_metric([status], int(counts.get(status, 0)))
    yield state
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    yield GaugeMetricFamily(
        "facemedia_oldest_queued_job_age_seconds",
        "Age of the oldest queued job (0 when none)",
        value=max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0,
    )
    stuck = GaugeMetricFamily(
        "facemedia_stuck_jobs",
        "Jobs processing with a lapsed lease, or queued longer than visibility_timeout",
        labels=["kind"],
    )
    stuck.add_metric(["lease_lapsed"], int(lapsed))
    stuck.add_metric(["queued_too_long"], int(lost))
    yield stuck


class BuildInfo(Collector):
    """``facemedia_build_info{version,python} 1``: which code the worker runs."""

    def collect(self) -> Iterable[Metric]:
        import platform
        from importlib.metadata import PackageNotFoundError, version

        try:
            ours = version("facemedia")
        except PackageNotFoundError:  # a source tree that was never installed
            ours = "unknown"
        info = GaugeMetricFamily(
            "facemedia_build_info",
            "The running facemedia version and Python version (always 1)",
            labels=["version", "python"],
        )
        info.add_metric([ours, platform.python_version()], 1)
        yield info


def zero_known_labels() -> None:
    """Export every known counter series at 0 (job types, error codes and task names read
    from their registries)."""
    from typing import get_args

    from pipelines.deid.gate import GateReason
    from pipelines.deid.registry import operator_names
    from worker import metrics
    from worker.dispatch import names
    from worker.jobs import registry, types  # noqa: F401  (types registers the job types)
    from worker.jobs.errors import ERROR_CODES

    tasks = [v for k, v in vars(names).items() if k.isupper() and isinstance(v, str) and "." in v]
    from worker.research.funnel import SAMPLING_STEPS

    metrics.zero_known_labels(
        registry.names(),
        ERROR_CODES,
        tasks,
        operators=operator_names(),
        sampling_skips=[reason for reason, _ in SAMPLING_STEPS],
        gate_reasons=[r for r in get_args(GateReason) if r != "ok"],
    )


def build_registry(settings: Settings) -> CollectorRegistry:
    """The registry a scrape reads: children summed (multiprocess) or this process's own."""
    if multiproc_dir() is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(DeploymentCollector(settings))
    registry.register(BuildInfo())
    return registry


class _Forward(Collector):
    """Exposes another registry's metrics (the process default) inside ours."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self.inner = inner

    def collect(self) -> Iterable[Metric]:
        return self.inner.collect()


_server: Any = None


def start(settings: Settings) -> int | None:
    """Serve on ``settings.metrics_host``:``settings.metrics_port`` (port 0: do nothing).

    Returns the port served, if any. The host defaults to ``127.0.0.1`` (loopback only).
    """
    global _server
    if not settings.metrics_port or _server is not None:
        return None
    zero_known_labels()
    registry = build_registry(settings)
    _server = start_http_server(
        settings.metrics_port, addr=settings.metrics_host, registry=registry
    )
    log.info(
        "metrics.serving",
        host=settings.metrics_host,
        port=settings.metrics_port,
        multiprocess=multiproc_dir() is not None,
    )
    return settings.metrics_port


def served_address() -> tuple[str, int] | None:
    """The (host, port) the running server's socket is bound to, or ``None`` if not serving."""
    if _server is None:
        return None
    server, _thread = _server
    host, port = server.socket.getsockname()[:2]
    return str(host), int(port)


def stop() -> None:
    """Stop serving (worker shutdown)."""
    global _server
    if _server is not None:
        server, _thread = _server
        server.shutdown()
        server.server_close()
        _server = None
