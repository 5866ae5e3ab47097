"""Prometheus metrics. Names are stable; labels carry job types and outcomes, never ids.

Under Celery's prefork pool set PROMETHEUS_MULTIPROC_DIR so children share counters (see
docs/OPERATIONS.md); nothing here starts a server at import time.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
DELETION_RATE = Gauge(
    "facemedia_sweep_deletions_per_second",
    "Deletions per second of the last sweep",
    multiprocess_mode="max",
)
JOBS = Counter(
    "facemedia_jobs_total", "Jobs that ended, by type and status", ["job_type", "status"]
)
