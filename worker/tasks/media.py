"""Task ``facemedia.media.process``: the contract for any caller, Python or not.

Message: task name ``facemedia.media.process``, queue ``media``, JSON args ``[job_id]`` (a
32-hex-character string), no kwargs. Result: none (read the job from the ledger). The delivery
policy (backoff, retries, the inline runner) is :mod:`worker.jobs.delivery`.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from worker.celery_app import app
from worker.dispatch import handlers
from worker.dispatch.names import PROCESS


@app.task(name=PROCESS, bind=True, max_retries=None, acks_late=True, ignore_result=True)
def process(self: Task, job_id: str) -> dict[str, Any]:
    """Process one job by id."""
    from worker.bootstrap import get_container

    step = handlers.process(get_container(), job_id, self.request.retries or 0)
    if step.retry_in is not None:
        raise self.retry(countdown=step.retry_in)
    return {"job_id": job_id, "status": step.status}
