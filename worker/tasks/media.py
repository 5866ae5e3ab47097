"""Task ``facemedia.media.process``: the contract for any caller, Python or not.

Message: task name ``facemedia.media.process``, queue ``media``, JSON args ``[job_id]`` (a
32-hex-character string), no kwargs. Result: none (read the job from the ledger).
"""

from __future__ import annotations

import random
from typing import Any

import structlog
from celery import Task

from worker.celery_app import app
from worker.jobs.errors import JobNotFound, TransientJobError

log = structlog.get_logger("facemedia.tasks")

PROCESS = "facemedia.media.process"


def backoff(attempt: int, base: float) -> float:
    """Exponential backoff with full jitter, capped at five minutes."""
    return float(random.uniform(0, min(300.0, base * (2 ** max(0, attempt)))))


@app.task(name=PROCESS, bind=True, max_retries=None, acks_late=True, ignore_result=True)
def process(self: Task, job_id: str) -> dict[str, Any]:
    """Process one job by id."""
    from worker.bootstrap import get_container

    container = get_container()
    try:
        result = container.service.process(job_id)
    except JobNotFound:
        log.warning("job.unknown", job_id=job_id)  # not in this ledger: nothing to do
        return {"job_id": job_id, "status": "unknown"}
    except TransientJobError as exc:
        countdown = backoff(exc.attempt, container.settings.retry_backoff_seconds)
        raise self.retry(countdown=countdown, exc=exc) from None
    if result.retry_in is not None and not self.request.is_eager:
        # leased by another worker: look again when that lease has lapsed
        raise self.retry(countdown=result.retry_in)
    return {"job_id": job_id, "status": result.status}
