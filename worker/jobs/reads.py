"""Reads of a job's public summary, light enough for the CLI: the ledger models only, no
pipeline, storage or crypto import (``facemedia status`` starts without OpenCV or SciPy).

:class:`JobStatusView` is THE status document: ``facemedia status --json``, ``facemedia run
--json`` and :meth:`worker.jobs.service.JobService.status` answer with it (and an HTTP API
must too). Its fields are documented in the README (*Job status*); a test checks that the README
names every one of :data:`JOB_STATUS_FIELDS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from worker.jobs.errors import JobNotFound
from worker.ledger.db import Database
from worker.ledger.models import Job, StoredObject


@dataclass(frozen=True)
class JobStatusView:
    """A job's public summary: no subject id, no attribute, no parameter value.

    ``created_at`` / ``started_at`` / ``finished_at`` are ISO-8601 UTC (``None`` until reached);
    ``duration_s`` is ``finished_at - started_at`` of the last run. ``media_kind`` (``image`` or
    ``video``), ``frames`` and ``effects`` (the effect chain, in order) are what the job type
    reported when it finished (``None`` when it reports none, e.g. ``detect``'s effects)."""

    job_id: str
    job_type: str
    status: str
    error_code: str | None
    error_message: str | None
    faces: int | None
    outputs: tuple[str, ...]
    original_deleted: bool
    deliveries: int
    retries: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    media_kind: str | None
    frames: int | None
    effects: tuple[str, ...] | None

    @property
    def ended(self) -> bool:
        """True once the job succeeded, failed or expired and its original is gone."""
        return self.status in ("succeeded", "failed", "expired") and self.original_deleted

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, every field present (lists for tuples)."""
        data = asdict(self)
        data["outputs"] = list(self.outputs)
        data["effects"] = None if self.effects is None else list(self.effects)
        return data


JOB_STATUS_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(JobStatusView))


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _effects(summary: dict[str, Any]) -> tuple[str, ...] | None:
    chain = summary.get("effects")
    if not isinstance(chain, list | tuple):
        return None
    return tuple(str(name) for name in chain)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def job_status_view(db: Database, job_id: str) -> JobStatusView:
    """The job's :class:`JobStatusView`; raises :class:`JobNotFound` for an unknown id."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound("no such job")
        outputs = tuple(
            str(o.name)
            for o in s.query(StoredObject)
            .filter_by(job_id=job_id, object_class="output")
            .order_by(StoredObject.name)
            if o.deleted_at is None
        )
        summary = dict(job.summary or {})
        duration = None
        if job.started_at is not None and job.finished_at is not None:
            duration = round((job.finished_at - job.started_at).total_seconds(), 3)
        kind = summary.get("kind")
        return JobStatusView(
            job_id=job.id,
            job_type=job.job_type,
            status=job.status,
            error_code=job.error_code,
            error_message=job.error_message,
            faces=_int(summary.get("faces")),
            outputs=outputs,
            original_deleted=job.original_deleted_at is not None,
            deliveries=job.deliveries,
            retries=job.retries,
            created_at=_iso(job.created_at),
            started_at=_iso(job.started_at),
            finished_at=_iso(job.finished_at),
            duration_s=duration,
            media_kind=kind if isinstance(kind, str) else None,
            frames=_int(summary.get("frames")),
            effects=_effects(summary),
        )


def job_status(db: Database, job_id: str) -> dict[str, Any]:
    """The job's public summary as JSON (:meth:`JobStatusView.to_json`); raises
    :class:`JobNotFound` for an unknown id."""
    return job_status_view(db, job_id).to_json()
