"""The job state machine: every status a job can have and every way it changes.

Each transition is one compare-and-set: a single ``UPDATE jobs ... WHERE`` on the status (and,
where it matters, the lease) that returns whether it won, so two deliveries, a delivery and the
sweep, or the sweep and an erasure can never both move the same job. Functions take the caller's
session and write nothing else (the caller audits in the same transaction). Nothing outside this
module assigns ``Job.status`` (``tests/jobs/test_status_writes.py`` reads ``worker/`` for it).

``TRANSITIONS`` describes them for documentation: ``diagram()`` renders the state diagram shown
in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Table,
    Update,
    and_,
    bindparam,
    case,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from worker.jobs import errors as codes
from worker.ledger.models import Job, Subject, SubjectKeyRow, UtcDateTime
from worker.ledger.tenants import DEFAULT_TENANT

# The jobs table as a Core table: every transition is a plain Core UPDATE run on the session's
# connection (no ORM bulk-update bookkeeping, no identity-map synchronisation: callers read a
# job's row again after a transition, never a loaded instance).
_JOBS = cast(Table, Job.__table__)
_J = _JOBS.c


class JobStatus(StrEnum):
    """A job's ledger status."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"


QUEUED, PROCESSING = JobStatus.QUEUED, JobStatus.PROCESSING
SUCCEEDED, FAILED, EXPIRED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.EXPIRED

#: Statuses a job never leaves (its original is then deleted, or kept under a legal hold).
ENDED: frozenset[JobStatus] = frozenset({SUCCEEDED, FAILED, EXPIRED})
#: Statuses of a job that has not ended.
ACTIVE: tuple[JobStatus, ...] = (QUEUED, PROCESSING)

EXPIRED_MESSAGE = "the job did not run within the originals' maximum age"
ERASED_MESSAGE = "the subject was erased"


@dataclass(frozen=True)
class Transition:
    """One edge set of the state machine: ``sources`` → ``target`` when ``guard`` holds."""

    name: str
    sources: tuple[JobStatus, ...]
    target: JobStatus | None  # None: the status is kept (only a timestamp or lease changes)
    guard: str
    by: str  # who takes it


CREATE = Transition("create", (), QUEUED, "submitted; original stored", "client")
CLAIM = Transition(
    "claim", ACTIVE, PROCESSING, "no live lease (none, or a lapsed one: taken over)", "service"
)
RENEW = Transition("renew", (PROCESSING,), None, "lease token held (heartbeat)", "lease")
RELEASE = Transition("release", (PROCESSING,), QUEUED, "transient fault; retries + 1", "service")
SUCCEED = Transition("succeed", (PROCESSING,), SUCCEEDED, "lease token held", "service")
FAIL = Transition(
    "fail", ACTIVE, FAILED, "permanent fault (lease token held if claimed)", "service, client"
)
EXPIRE = Transition(
    "expire", ACTIVE, EXPIRED, "older than the originals' maximum age, no live lease", "sweep"
)
REQUEUE_STUCK = Transition(
    "requeue_stuck", ACTIVE, None, "message lost: lease lapsed or queued too long", "sweep"
)
RESCUE = Transition(
    "rescue",
    (PROCESSING,),
    QUEUED,
    "lease lapsed over `rescue_grace` ago (CAS on its token)",
    "beat",
)
CANCEL_QUEUED = Transition("cancel_queued", (QUEUED,), FAILED, "the subject is erased", "erasure")

TRANSITIONS: tuple[Transition, ...] = (
    CREATE,
    CLAIM,
    RENEW,
    RELEASE,
    SUCCEED,
    FAIL,
    EXPIRE,
    REQUEUE_STUCK,
    RESCUE,
    CANCEL_QUEUED,
)


def _won(session: Session, stmt: Update, params: Mapping[str, Any] | None = None) -> int:
    """Run a compare-and-set UPDATE on the session's connection; return how many rows it
    changed."""
    return int(cast(CursorResult[Any], session.connection().execute(stmt, params)).rowcount)


def _from(transition: Transition) -> ColumnElement[bool]:
    sources = [s.value for s in transition.sources]  # plain strings for every driver
    return _J.status == sources[0] if len(sources) == 1 else _J.status.in_(sources)


def _to(transition: Transition, **values: Any) -> dict[str, Any]:
    """The SET clause: the target status, and for an ended job no lease, no generalized
    quasi-identifiers (they are kept only until the job ends; sampling has decided by then) and,
    if it was submitted with a callback URL by an API key (whose secret signs the webhook), its
    webhook ``pending`` (until the first attempt)."""
    if transition.target is not None:
        values["status"] = transition.target.value
        if transition.target in ENDED:
            values.update(
                lease_until=None,
                quasi=None,
                webhook_state=case(
                    (and_(_J.callback_url.is_not(None), _J.api_key_id.is_not(None)), "pending"),
                    else_=_J.webhook_state,
                ),
            )
    return values


def lease_free(at: datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    """No lease is live at ``at`` (none was taken, or it lapsed)."""
    return or_(_J.lease_until.is_(None), _J.lease_until <= at)


def lapsed(before: datetime) -> ColumnElement[bool]:
    """Processing under a lease that lapsed before ``before`` (its worker stopped heartbeating)."""
    return and_(_J.status == PROCESSING.value, _J.lease_until < before)


def stuck(before: datetime) -> ColumnElement[bool]:
    """A job whose message was lost: processing with a lease lapsed before ``before``, or queued
    since before ``before`` and not re-sent since."""
    return or_(
        lapsed(before),
        and_(
            _J.status == QUEUED.value,
            _J.created_at < before,
            or_(_J.started_at.is_(None), _J.started_at < before),
        ),
    )


def expirable(created_before: datetime, at: datetime) -> ColumnElement[bool]:
    """Not ended, created before ``created_before``, and no live lease at ``at``: a job still
    running under a live lease is never expired under its worker."""
    return and_(_from(EXPIRE), _J.created_at < created_before, lease_free(at))


# ----- the transitions ---------------------------------------------------------------------------


def create(
    session: Session,
    job_id: str,
    *,
    subject_id: str,
    job_type: str,
    params: Mapping[str, Any],
    at: datetime,
    quasi: dict[str, Any] | None,
    tenant: str = DEFAULT_TENANT,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
    api_key_id: str | None = None,
) -> None:
    """Record a new ``queued`` job in the caller's transaction: one Core INSERT on the
    session's connection (no ORM unit of work on the ingest path). A second job with the same
    (tenant, idempotency key) raises the unique index's ``IntegrityError``."""
    session.connection().execute(
        insert(_JOBS),
        {
            "id": job_id,
            "tenant": tenant,
            "subject_id": subject_id,
            "job_type": job_type,
            "params": dict(params),
            "status": QUEUED.value,
            "created_at": at,
            "quasi": quasi,
            "idempotency_key": idempotency_key,
            "callback_url": callback_url,
            "api_key_id": api_key_id,
        },
    )


def claim(
    session: Session,
    job_id: str,
    *,
    seen: str,
    old_token: str | None,
    token: str,
    at: datetime,
    lease: timedelta,
) -> bool:
    """``seen`` → processing under a new lease ``token`` until ``at + lease``.

    Wins only if the job is still as read (status ``seen``, lease ``old_token``) and no lease
    is live at ``at``; counts the delivery.
    """
    held = _J.lease_token.is_(None) if old_token is None else _J.lease_token == old_token
    stmt = (
        update(_JOBS)
        .where(_J.id == job_id, _from(CLAIM), _J.status == seen, held, lease_free(at))
        .values(
            _to(
                CLAIM,
                lease_token=token,
                lease_until=at + lease,
                deliveries=_J.deliveries + 1,
                started_at=at,
            )
        )
    )
    return _won(session, stmt) == 1


def take_with_subject(
    session: Session, job_id: str, *, token: str, at: datetime, lease: timedelta
) -> tuple[Job, Subject | None, SubjectKeyRow | None] | None:
    """Claim ``job_id`` without a read before it and return its row as claimed, with its
    subject and that subject's key row as the claim found them (None: missing); None if the job
    has ended, holds a live lease at ``at`` or does not exist.

    The same transition as :func:`claim` (queued | processing → processing under ``token``
    until ``at + lease``, the delivery counted), with the lease itself as the compare-and-set:
    it wins only while no lease is live at ``at`` (none taken, or a lapsed one, which is taken
    over). Two racing claims cannot both win: the second waits on the first's row lock and
    re-checks its ``WHERE`` on the committed row (PostgreSQL), or runs after it (SQLite's
    serialised writers), and finds the new lease live. One statement on PostgreSQL (the
    compare-and-set in a ``WITH``, joined), the update and one read elsewhere. The rows come
    back as transient instances (no session holds them)."""
    params = _take_params(job_id, token, at, lease)
    conn = session.connection()
    values: Mapping[Any, Any]
    if conn.dialect.name == "postgresql":
        row = conn.execute(_TAKE_WITH_SUBJECT, params).one_or_none()
        if row is None:
            return None
        values = row._mapping
    else:
        taken = conn.execute(_TAKE, params).one_or_none()
        if taken is None:
            return None
        found = conn.execute(_SUBJECT_AND_KEY, {"p_subject": taken.subject_id}).one_or_none()
        values = {**taken._mapping, **(found._mapping if found is not None else {})}
    job = _instance(Job, values)
    subject = _instance(Subject, values, "s_") if values.get("s_id") is not None else None
    key = _instance(SubjectKeyRow, values, "k_") if values.get("k_key_id") is not None else None
    return job, subject, key


def _take_params(job_id: str, token: str, at: datetime, lease: timedelta) -> dict[str, Any]:
    return {"p_job": job_id, "p_token": token, "p_at": at, "p_until": at + lease}


def _instance(model: Any, values: Mapping[Any, Any], prefix: str = "") -> Any:
    """A transient ``model`` instance from a row's columns (``prefix``ed in a join)."""
    return model(**{c.key: values[prefix + c.key] for c in model.__table__.columns})


_SUBJECTS = cast(Table, Subject.__table__)
_KEYS = cast(Table, SubjectKeyRow.__table__)
_AT = bindparam("p_at", type_=UtcDateTime())
# The claim's compare-and-set (prebuilt: the first statement of every delivery).
_TAKE = (
    update(_JOBS)
    .where(_J.id == bindparam("p_job"), _from(CLAIM), lease_free(_AT))
    .values(
        _to(
            CLAIM,
            lease_token=bindparam("p_token"),
            lease_until=bindparam("p_until", type_=UtcDateTime()),
            deliveries=_J.deliveries + 1,
            started_at=_AT,
        )
    )
    .returning(*_JOBS.c)
)
_SUBJECT_COLUMNS = (
    *(c.label(f"s_{c.key}") for c in _SUBJECTS.c),
    *(c.label(f"k_{c.key}") for c in _KEYS.c),
)
_SUBJECT_AND_KEY = (
    select(*_SUBJECT_COLUMNS)
    .select_from(_SUBJECTS.outerjoin(_KEYS, _KEYS.c.key_id == _SUBJECTS.c.key_id))
    .where(_SUBJECTS.c.id == bindparam("p_subject"))
)
_CLAIMED = _TAKE.cte("claimed")
_TAKE_WITH_SUBJECT = select(_CLAIMED, *_SUBJECT_COLUMNS).select_from(
    _CLAIMED.outerjoin(_SUBJECTS, _SUBJECTS.c.id == _CLAIMED.c.subject_id).outerjoin(
        _KEYS, _KEYS.c.key_id == _SUBJECTS.c.key_id
    )
)


def renew(session: Session, job_id: str, token: str, until: datetime) -> bool:
    """Extend the lease ``token`` holds to ``until`` (the heartbeat)."""
    stmt = (
        update(_JOBS)
        .where(_J.id == job_id, _from(RENEW), _J.lease_token == token)
        .values(_to(RENEW, lease_until=until))
    )
    return _won(session, stmt) == 1


def release(session: Session, job_id: str, token: str) -> bool:
    """Hand a claimed job back after a transient fault: queued, no lease, ``retries + 1``."""
    stmt = (
        update(_JOBS)
        .where(_J.id == job_id, _from(RELEASE), _J.lease_token == token)
        .values(_to(RELEASE, lease_until=None, retries=_J.retries + 1))
    )
    return _won(session, stmt) == 1


def succeed(
    session: Session, job_id: str, token: str, *, at: datetime, summary: dict[str, Any]
) -> bool:
    """processing → succeeded, only for the lease ``token`` (a worker taken over cannot commit)."""
    params = {"p_job": job_id, "p_token": token, "p_at": at, "p_summary": summary}
    return _won(session, _SUCCEED, params) == 1


_SUCCEED = (
    update(_JOBS)
    .where(_J.id == bindparam("p_job"), _from(SUCCEED), _J.lease_token == bindparam("p_token"))
    .values(
        _to(
            SUCCEED,
            finished_at=bindparam("p_at", type_=UtcDateTime()),
            summary=bindparam("p_summary", type_=_J.summary.type),
            error_code=None,
            error_message=None,
        )
    )
)


def fail(
    session: Session,
    job_id: str,
    code: str,
    message: str,
    *,
    at: datetime,
    token: str | None = None,
) -> bool:
    """queued | processing → failed with ``code``; with ``token``, only for that lease."""
    cond = [_J.id == job_id, _from(FAIL)]
    if token is not None:
        cond.append(_J.lease_token == token)
    stmt = (
        update(_JOBS)
        .where(*cond)
        .values(
            _to(
                FAIL,
                error_code=code,
                error_message=message,
                finished_at=at,
            )
        )
    )
    return _won(session, stmt) == 1


def expire(session: Session, job_id: str, *, created_before: datetime, at: datetime) -> bool:
    """queued | processing → expired (``error_code`` ``expired``): the job was created before
    ``created_before`` (the originals' maximum age) and holds no live lease at ``at``."""
    stmt = (
        update(_JOBS)
        .where(_J.id == job_id, expirable(created_before, at))
        .values(
            _to(
                EXPIRE,
                error_code=codes.EXPIRED,
                error_message=EXPIRED_MESSAGE,
                finished_at=at,
            )
        )
    )
    return _won(session, stmt) == 1


def requeue_stuck(session: Session, job_id: str, *, before: datetime, at: datetime) -> bool:
    """Mark a stuck job (see :func:`stuck`) re-sent at ``at``; its status is kept (a lapsed
    lease is taken over by the next delivery). The caller enqueues it again."""
    stmt = (
        update(_JOBS)
        .where(_J.id == job_id, _from(REQUEUE_STUCK), stuck(before))
        .values(_to(REQUEUE_STUCK, started_at=at))
    )
    return _won(session, stmt) == 1


def rescue(
    session: Session, job_id: str, token: str | None, *, before: datetime, at: datetime
) -> bool:
    """processing → queued, no lease, for a job whose lease ``token`` lapsed before ``before``
    (its worker stopped heartbeating). The caller enqueues it again."""
    stmt = (
        update(_JOBS)
        .where(
            _J.id == job_id,
            _from(RESCUE),
            _J.lease_token.is_(None) if token is None else _J.lease_token == token,
            lapsed(before),
        )
        .values(_to(RESCUE, lease_token=None, lease_until=None, started_at=at))
    )
    return _won(session, stmt) == 1


def cancel_queued(session: Session, subject_id: str, *, at: datetime) -> int:
    """Fail every queued job of an erased subject (``subject_erased``); return how many."""
    stmt = (
        update(_JOBS)
        .where(_J.subject_id == subject_id, _from(CANCEL_QUEUED))
        .values(
            _to(
                CANCEL_QUEUED,
                error_code=codes.SUBJECT_ERASED,
                error_message=ERASED_MESSAGE,
                finished_at=at,
            )
        )
    )
    return _won(session, stmt)


# ----- documentation -----------------------------------------------------------------------------


def diagram() -> str:
    """The state diagram (Mermaid ``stateDiagram-v2``) generated from :data:`TRANSITIONS`."""
    lines = ["stateDiagram-v2"]
    for t in TRANSITIONS:
        for source in t.sources or ("[*]",):
            lines.append(f"    {source} --> {t.target or source}: {t.name}")
    lines += [f"    {s} --> [*]" for s in JobStatus if s in ENDED]
    return "\n".join(lines)


def table() -> str:
    """The transitions as a Markdown table (name, from, to, when, by)."""
    rows = ["| transition | from | to | when | by |", "|---|---|---|---|---|"]
    for t in TRANSITIONS:
        sources = ", ".join(f"`{s}`" for s in t.sources) or "(new)"
        target = f"`{t.target}`" if t.target else "(unchanged)"
        rows.append(f"| `{t.name}` | {sources} | {target} | {t.guard} | {t.by} |")
    return "\n".join(rows)


if __name__ == "__main__":  # regenerate the docs' diagram and table
    print(f"```mermaid\n{diagram()}\n```\n\n{table()}")
