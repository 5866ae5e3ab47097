"""Reads of a job's public summary, light enough for the CLI: the ledger models only, no
pipeline, storage or crypto import (``facemedia status`` starts without OpenCV or SciPy).
:meth:`worker.jobs.service.JobService.status` answers with :func:`job_status`."""

from __future__ import annotations

from typing import Any

from worker.jobs.errors import JobNotFound
from worker.ledger.db import Database
from worker.ledger.models import Job, StoredObject


def job_status(db: Database, job_id: str) -> dict[str, Any]:
    """The job's public summary (ids, state, error code, counts, output names); raises
    :class:`JobNotFound` for an unknown id."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound("no such job")
        outputs = [
            o.name
            for o in s.query(StoredObject)
            .filter_by(job_id=job_id, object_class="output")
            .order_by(StoredObject.name)
            if o.deleted_at is None
        ]
        return {
            "job_id": job.id,
            "job_type": job.job_type,
            "status": job.status,
            "error_code": job.error_code,
            "error_message": job.error_message,
            "faces": (job.summary or {}).get("faces"),
            "outputs": outputs,
            "original_deleted": job.original_deleted_at is not None,
            "deliveries": job.deliveries,
            "retries": job.retries,
        }
