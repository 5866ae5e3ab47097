"""Reads of a job's public summary, light enough for the CLI: no pipeline, storage or crypto
import (``facemedia status`` starts without OpenCV or SciPy), and the ORM only inside
:func:`job_status_view`. :func:`job_status_view_quick` is the same read over a DB-API connection
(:class:`~worker.ledger.db.QuickReader`), without SQLAlchemy: ``facemedia status`` uses it (it
is held to the ORM's answer by tests/cli/test_startup.py).

:class:`JobStatusView` is THE status document: ``facemedia status --json``, ``facemedia run
--json`` and :meth:`worker.jobs.service.JobService.status` answer with it (and an HTTP API
must too). Its fields are documented in the README (*Job status*); a test checks that the README
names every one of :data:`JOB_STATUS_FIELDS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from worker.jobs.errors import JobNotFound
from worker.ledger.db import QuickReader, json_value, utc_datetime

if TYPE_CHECKING:  # the ORM is imported by the read that uses it (the quick read does not)
    from worker.ledger.db import Database
    from worker.ledger.models import Job


@dataclass(frozen=True)
class WebhookStatus:
    """A job's webhook delivery (only for a job submitted with a ``callback_url`` by an API
    key): ``state`` ``pending`` | ``delivered`` | ``dead`` (``None`` before the first attempt),
    ``attempts`` so far, ``error`` the last failure's code (``http_500``, ``timeout``,
    ``refused``, ``blocked_address``, ...; never a response body)."""

    state: str | None
    attempts: int
    error: str | None


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
    webhook: WebhookStatus | None = None

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


def _webhook(job: Job) -> WebhookStatus | None:
    # a final webhook has forgotten its URL; one never sent shows while it has URL and key
    if job.webhook_state not in ("delivered", "dead") and not (job.callback_url and job.api_key_id):
        return None
    return WebhookStatus(job.webhook_state, int(job.webhook_attempts or 0), job.webhook_error)


def job_status_view(db: Database, job_id: str, *, tenant: str | None = None) -> JobStatusView:
    """The job's :class:`JobStatusView`; raises :class:`JobNotFound` for an unknown id and,
    with ``tenant``, for another tenant's job exactly alike (``None``: the operator, any)."""
    from worker.ledger.models import Job, StoredObject

    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise JobNotFound("no such job")
        outputs = tuple(
            str(o.name)
            for o in s.query(StoredObject)
            .filter_by(job_id=job_id, object_class="output")
            .order_by(StoredObject.name)
            if o.deleted_at is None
        )
        return _view(job, outputs)


def _view(job: Job, outputs: tuple[str, ...]) -> JobStatusView:
    """The view of a ``jobs`` row (the ORM's, or :func:`job_status_view_quick`'s namespace of
    the same columns) and the names of its live outputs."""
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
        webhook=_webhook(job),
    )


# The same read over a DB-API connection, without SQLAlchemy (``facemedia status``: docs/
# BENCHMARKS.md, *CLI start-up*). Every column of the row is read, so :func:`_view` sees what it
# sees on the ORM's row; the columns are decoded by name as the models type them (UtcDateTime
# columns end in ``_at`` or ``_until``; the JSON ones are named below): tests/cli/
# test_startup.py holds the models to that and this read to the ORM's answer.
_JOB_SQL = "SELECT * FROM jobs WHERE id = :job_id"
_OUTPUTS_SQL = (
    "SELECT name FROM objects WHERE job_id = :job_id AND object_class = 'output'"
    " AND deleted_at IS NULL ORDER BY name"
)
JSON_COLUMNS = frozenset({"params", "summary", "quasi"})


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in row.items():
        if name.endswith(("_at", "_until")):
            out[name] = utc_datetime(value)
        elif name in JSON_COLUMNS:
            out[name] = json_value(value)
        else:
            out[name] = value
    return out


def job_status_view_quick(
    reader: QuickReader, job_id: str, *, tenant: str | None = None
) -> JobStatusView:
    """:func:`job_status_view` on a :class:`~worker.ledger.db.QuickReader`: the same view,
    the same :class:`JobNotFound`."""
    found = reader.rows(_JOB_SQL, {"job_id": job_id})
    if not found:
        raise JobNotFound("no such job")
    job = cast("Job", SimpleNamespace(**_decoded(found[0])))
    if tenant is not None and job.tenant != tenant:
        raise JobNotFound("no such job")
    outputs = tuple(str(r["name"]) for r in reader.rows(_OUTPUTS_SQL, {"job_id": job_id}))
    return _view(job, outputs)


def job_status(db: Database, job_id: str, *, tenant: str | None = None) -> dict[str, Any]:
    """The job's public summary as JSON (:meth:`JobStatusView.to_json`); raises
    :class:`JobNotFound` for an unknown id or, with ``tenant``, another tenant's."""
    return job_status_view(db, job_id, tenant=tenant).to_json()
