"""Prometheus metrics. Names are stable; labels carry job types, stages and outcomes, never ids.

Under Celery's prefork pool set ``PROMETHEUS_MULTIPROC_DIR`` (before the worker starts) so every
child writes its samples to files there and the worker's metrics server sums them (see
worker/metrics_server.py and docs/OPERATIONS.md). Nothing here starts a server at import time.
Gauges declare how children's values combine (``multiprocess_mode``).

Rates are Prometheus's to compute (``rate(facemedia_deletions_total[5m])``): nothing here exports
a pre-computed per-second figure. Every counter is exported at 0 for each label value the code
knows from the worker's start (:func:`zero_known_labels`), so a rate or an alert over a failure
that has not happened yet has a series to read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # The directory may be a fresh tmpfs (the image sets the variable): samples are files in it.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# Stage durations span a 30 ms photo decode to a multi-minute video pipeline.
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

DELETIONS = Counter(
    "facemedia_deletions_total", "Objects deleted and recorded, by reason", ["reason"]
)
DELETION_FAILURES = Counter(
    "facemedia_deletion_failures_total", "Objects whose delete could not be verified", ["reason"]
)
DELETION_LAG = Gauge(
    "facemedia_deletion_lag_seconds",
    "Now minus the oldest due time of an undeleted, unheld object (at the last sweep)",
    multiprocess_mode="max",
)
JOBS = Counter(
    "facemedia_jobs_total", "Jobs that ended, by type and status", ["job_type", "status"]
)
JOBS_FAILED = Counter(
    "facemedia_jobs_failed_total",
    "Jobs that failed, by type and stable error code",
    ["job_type", "error_code"],
)
STAGE_SECONDS = Histogram(
    "facemedia_stage_duration_seconds",
    "Time spent in one stage of a job: decode (load and decrypt the original), detect (face "
    "detector calls), pipeline (the whole handler), store (encrypt and upload the outputs, "
    "streamed together), encrypt (output encryption, where measured apart from the upload), "
    "research (research sampling of the original, when configured)",
    ["job_type", "stage"],
    buckets=STAGE_BUCKETS,
)
RETRIES = Counter(
    "facemedia_task_retries_total", "Task deliveries handed back for a later retry", ["task"]
)
RESIDUAL_DISCARDS = Counter(
    "facemedia_residual_gate_discards_total",
    "De-identified research samples discarded by the residual-face gate (fail closed), by "
    "operator profile and gate reason (residual_face, no_source_face, no_frames, and for k-Same "
    "face_outside_replaced, too_few_subjects)",
    ["profile", "reason"],
)
RESEARCH_SAMPLING = Counter(
    "facemedia_research_sampling_total",
    "Research sampling decisions at job time and in k-Same batches: outcome sampled, staged, "
    "skipped, discarded or error, with a stable reason code",
    ["outcome", "reason"],
)
KSAME_BATCHES = Counter(
    "facemedia_ksame_batches_total",
    "k-Same batch builds: written, too_few (released unwritten), error",
    ["outcome"],
)

# Names of the metrics the metrics server computes at scrape time (worker/metrics_server.py);
# listed here so dashboards and alert rules have one place to check names against.
SCRAPE_TIME_METRICS = (
    "facemedia_queue_depth",
    "facemedia_jobs_in_state",
    "facemedia_oldest_queued_job_age_seconds",
    "facemedia_stuck_jobs",
    "facemedia_metrics_collect_errors",
    "facemedia_build_info",
)


# Label values the code knows, exported at 0 from the start (:func:`zero_known_labels`); the
# job types and error codes come from their registries when the worker starts.
DELETION_REASONS = (
    "job_ended",
    "retention",
    "erasure",
    "withdrawal",
    "ksame_batch",
    "release_build",
    "release_revoked",
    "release_revocation",
)
KSAME_OUTCOMES = ("written", "too_few", "error")


def job_ended(job_type: str, status: str, error_code: str | None = None) -> None:
    """Count a job that ended (``succeeded`` or ``failed``; a failure with its error code)."""
    JOBS.labels(job_type, status).inc()
    if status == "failed":
        JOBS_FAILED.labels(job_type, error_code or "unknown").inc()


def zero_known_labels(
    job_types: Iterable[str],
    error_codes: Iterable[str],
    tasks: Iterable[str],
    operators: Iterable[str] = (),
    sampling_skips: Iterable[str] = (),
    gate_reasons: Iterable[str] = (),
) -> None:
    """Create every counter series whose label values are known, at 0 (a scrape then shows
    ``facemedia_jobs_failed_total{job_type="pta",error_code="no_face"} 0`` before the first
    such failure)."""
    types, codes = list(job_types), list(error_codes)
    for job_type in types:
        for status in ("succeeded", "failed"):
            JOBS.labels(job_type, status)
        for code in codes:
            JOBS_FAILED.labels(job_type, code)
    for reason in DELETION_REASONS:
        DELETIONS.labels(reason)
        DELETION_FAILURES.labels(reason)
    for task in tasks:
        RETRIES.labels(task)
    for outcome in KSAME_OUTCOMES:
        KSAME_BATCHES.labels(outcome)
    gates = list(gate_reasons)
    for reason in sampling_skips:
        RESEARCH_SAMPLING.labels("skipped", reason)
    for reason in gates:
        RESEARCH_SAMPLING.labels("discarded", reason)
    for operator in operators:
        RESEARCH_SAMPLING.labels("sampled", operator)
        for reason in gates:
            RESIDUAL_DISCARDS.labels(operator, reason)


@contextmanager
def stage(job_type: str, name: str) -> Iterator[None]:
    """Observe the wall time of the block as stage ``name`` of a ``job_type`` job."""
    started = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(job_type, name).observe(time.perf_counter() - started)


class TimedDetector:
    """A face detector whose ``detect``/``track`` calls are observed as the ``detect`` stage.

    It passes for the detector it wraps (``isinstance`` sees the inner class, attributes are
    forwarded), so code that inspects the detector (e.g. the residual-face gate choosing its own
    threshold for a CenterFace detector) behaves exactly as without the wrapper.
    """

    def __init__(self, inner: Any, job_type: str) -> None:
        self._inner = inner
        self._job_type = job_type

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._inner)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith(("detect", "track")) and callable(attr):

            def timed(*args: Any, **kwargs: Any) -> Any:
                with stage(self._job_type, "detect"):
                    return attr(*args, **kwargs)

            return timed
        return attr


_D = TypeVar("_D")


def timed_detector(inner: _D, job_type: str) -> _D:
    """``inner`` with its detect/track calls observed as the ``detect`` stage."""
    return cast(_D, TimedDetector(inner, job_type))


def metric_names() -> set[str]:
    """Every metric name this module and the metrics server expose (samples included)."""
    names: set[str] = set(SCRAPE_TIME_METRICS)
    for metric in (
        DELETIONS,
        DELETION_FAILURES,
        DELETION_LAG,
        JOBS,
        JOBS_FAILED,
        STAGE_SECONDS,
        RETRIES,
        RESIDUAL_DISCARDS,
        RESEARCH_SAMPLING,
        KSAME_BATCHES,
    ):
        for family in metric.describe():
            names.add(family.name)
            if family.type == "counter":
                names.add(family.name + "_total")
            if family.type == "histogram":
                names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
    return names
