"""Task ``facemedia.media.process``: the contract for any caller, Python or not.

Message: task name ``facemedia.media.process``, queue ``media``, JSON args ``[job_id]`` (a
32-hex-character string), no kwargs. Result: none (read the job from the ledger).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import structlog
from celery import Task
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.celery_app import app
from worker.jobs.errors import JobNotFound, TransientJobError

PROCESS = "facemedia.media.process"

log = structlog.get_logger("facemedia.tasks")


def backoff(attempt: int, base: float) -> float:
    """Exponential backoff with full jitter, capped at five minutes."""
    return float(random.uniform(0, min(300.0, base * (2 ** max(0, attempt)))))


@dataclass(frozen=True)
class Step:
    """One delivery's outcome: a final status, or a retry after ``retry_in`` seconds."""

    job_id: str
    status: str
    retry_in: float | None = None
    leased_elsewhere: bool = False


def run_once(container: Any, job_id: str, attempt: int = 0) -> Step:
    """Translate one delivery into a service call and its outcome.

    ``attempt``: how many times this task was retried (for the backoff when the ledger itself
    is unreachable, which the ledger cannot count).
    """
    try:
        result = container.service.process(job_id)
    except (OperationalError, InterfaceError):
        # The ledger is down (a PostgreSQL restart): retry with backoff instead of letting the
        # task fail, which would ack the message and strand the job.
        log.warning("job.ledger_unavailable", job_id=job_id)
        wait = backoff(min(attempt, 8), container.settings.retry_backoff_seconds)
        return Step(job_id, "queued", retry_in=max(wait, 1.0))
    except JobNotFound:
        log.warning("job.unknown", job_id=job_id)  # not in this ledger: nothing to do
        return Step(job_id, "unknown")
    except TransientJobError as exc:
        wait = backoff(exc.attempt, container.settings.retry_backoff_seconds)
        return Step(job_id, "queued", retry_in=wait)
    if result.retry_in is not None:  # leased by another worker: look again when it lapses
        log.info("job.leased_elsewhere", job_id=job_id)
        return Step(job_id, result.status, retry_in=result.retry_in, leased_elsewhere=True)
    return Step(job_id, result.status)


@app.task(name=PROCESS, bind=True, max_retries=None, acks_late=True, ignore_result=True)
def process(self: Task, job_id: str) -> dict[str, Any]:
    """Process one job by id."""
    from worker.bootstrap import get_container

    step = run_once(get_container(), job_id, self.request.retries or 0)
    if step.retry_in is not None:
        raise self.retry(countdown=step.retry_in)
    return {"job_id": job_id, "status": step.status}


def run_inline(container: Any, job_id: str) -> Step:
    """The embedded default (no broker): run the job here, sleeping through retry backoffs;
    the run ends with a signed checkpoint of the audit log (a unit of work)."""
    try:
        while True:
            step = run_once(container, job_id)
            if step.retry_in is None or step.leased_elsewhere:
                return step
            time.sleep(step.retry_in)
    finally:
        checkpoint = getattr(container, "checkpoint", None)
        if checkpoint is not None:
            checkpoint()
