"""The delivery policy: what one delivery of a job does, when it retries, and the inline runner.

A delivery calls the job service once and turns the outcome into a :class:`Step`: a final
status, or a retry after ``retry_in`` seconds (exponential backoff with full jitter for
transient faults and for a ledger that cannot be reached; the lease's remaining time when
another worker holds the job). The Celery task (``facemedia.media.process``) turns a retry into
``Task.retry(countdown=...)``; :func:`run_inline` (the embedded default, no broker) sleeps
through the backoffs in this process.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.jobs.errors import JobNotFound, TransientJobError

if TYPE_CHECKING:
    from worker.jobs.service import ProcessResult

log = structlog.get_logger("facemedia.tasks")

# Backoff cap (seconds) and the largest attempt exponent used when the ledger is unreachable.
MAX_BACKOFF = 300.0
LEDGER_ATTEMPT_CAP = 8


def backoff(attempt: int, base: float) -> float:
    """Exponential backoff with full jitter, capped at five minutes."""
    return float(random.uniform(0, min(MAX_BACKOFF, base * (2 ** max(0, attempt)))))


@dataclass(frozen=True)
class Step:
    """One delivery's outcome: a final status, or a retry after ``retry_in`` seconds."""

    job_id: str
    status: str
    retry_in: float | None = None
    leased_elsewhere: bool = False


def run_once(
    process: Callable[[str], ProcessResult],
    job_id: str,
    *,
    backoff_base: float,
    attempt: int = 0,
) -> Step:
    """Translate one delivery into a service call (``process``, the job service's) and its
    outcome.

    ``attempt``: how many times this delivery was retried (for the backoff when the ledger
    itself is unreachable, which the ledger cannot count). ``backoff_base``: the settings'
    ``retry_backoff_seconds``.
    """
    try:
        result = process(job_id)
    except (OperationalError, InterfaceError):
        # The ledger is down (a PostgreSQL restart): retry with backoff instead of letting the
        # task fail, which would ack the message and strand the job.
        log.warning("job.ledger_unavailable", job_id=job_id)
        wait = backoff(min(attempt, LEDGER_ATTEMPT_CAP), backoff_base)
        return Step(job_id, "queued", retry_in=max(wait, 1.0))
    except JobNotFound:
        log.warning("job.unknown", job_id=job_id)  # not in this ledger: nothing to do
        return Step(job_id, "unknown")
    except TransientJobError as exc:
        wait = backoff(exc.attempt, backoff_base)
        return Step(job_id, "queued", retry_in=wait)
    if result.retry_in is not None:  # leased by another worker: look again when it lapses
        log.info("job.leased_elsewhere", job_id=job_id)
        return Step(job_id, result.status, retry_in=result.retry_in, leased_elsewhere=True)
    return Step(job_id, result.status)


def run_inline(
    process: Callable[[str], ProcessResult],
    job_id: str,
    *,
    backoff_base: float,
    checkpoint: Callable[[], None] | None = None,
) -> Step:
    """The embedded default (no broker): run the job here, sleeping through retry backoffs;
    the run ends with ``checkpoint`` (the container's signed audit checkpoint: a unit of
    work)."""
    try:
        while True:
            step = run_once(process, job_id, backoff_base=backoff_base)
            if step.retry_in is None or step.leased_elsewhere:
                return step
            time.sleep(step.retry_in)
    finally:
        if checkpoint is not None:
            checkpoint()
