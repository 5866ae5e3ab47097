"""The job state machine (worker/jobs/lifecycle.py): every transition a compare-and-set.

Each transition runs against the real ledger (SQLite on the embedded default, and PostgreSQL)
and must win exactly when its status/lease condition holds, and lose otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.jobs import lifecycle
from worker.jobs.lifecycle import ENDED, JobStatus
from worker.ledger.models import Job

LEASE = timedelta(seconds=30)


@pytest.fixture
def ledger(either_ledger: Any) -> Any:
    """A container whose ledger is SQLite or PostgreSQL; submitted jobs are not run."""
    either_ledger.client.enqueue = lambda job_id: None
    return either_ledger


def _submit(c: Any, jpeg: bytes, subject: str = "lc-subject") -> str:
    return str(c.client.submit(jpeg, "detect", subject_id=subject))


def _row(c: Any, job_id: str) -> Job:
    with c.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
        return job


def _claim(c: Any, job_id: str, token: str, at: datetime) -> bool:
    row = _row(c, job_id)
    with c.db.session() as s:
        return lifecycle.claim(
            s, job_id, seen=row.status, old_token=row.lease_token, token=token, at=at, lease=LEASE
        )


def test_statuses_and_the_ended_set() -> None:
    assert [s.value for s in JobStatus] == [
        "queued",
        "processing",
        "succeeded",
        "failed",
        "expired",
    ]
    assert {"succeeded", "failed", "expired"} == ENDED
    assert set(lifecycle.ACTIVE) | ENDED == set(JobStatus)
    for t in lifecycle.TRANSITIONS:  # nothing leaves an ended status
        assert not ENDED & set(t.sources), t.name


def test_claim_renew_release_succeed(ledger: Any, astronaut_jpeg: bytes) -> None:
    c, t = ledger, datetime.now(UTC)
    job_id = _submit(c, astronaut_jpeg)
    assert _claim(c, job_id, "a", t)
    row = _row(c, job_id)
    assert (row.status, row.lease_token, row.deliveries) == ("processing", "a", 1)
    assert not _claim(c, job_id, "b", t + timedelta(seconds=5))  # the lease is live
    with c.db.session() as s:
        assert not lifecycle.renew(s, job_id, "b", t + LEASE)  # not the holder
        assert lifecycle.renew(s, job_id, "a", t + 2 * LEASE)
    assert not _claim(c, job_id, "b", t + LEASE + timedelta(seconds=1))  # renewed: still live
    assert _claim(c, job_id, "b", t + 3 * LEASE)  # lapsed: taken over (CAS on the old token)
    assert _row(c, job_id).deliveries == 2
    with c.db.session() as s:
        assert not lifecycle.release(s, job_id, "a")  # the old holder can do nothing
        assert not lifecycle.succeed(s, job_id, "a", at=t, summary={})
        assert not lifecycle.fail(s, job_id, "internal_error", "x", at=t, token="a")
        assert lifecycle.release(s, job_id, "b")
    row = _row(c, job_id)
    assert (row.status, row.retries, row.lease_until) == ("queued", 1, None)
    assert _claim(c, job_id, "c", t + 4 * LEASE)
    with c.db.session() as s:
        assert lifecycle.succeed(s, job_id, "c", at=t, summary={"faces": 1})
        assert not lifecycle.succeed(s, job_id, "c", at=t, summary={"faces": 1})  # once
        assert not lifecycle.renew(s, job_id, "c", t + 5 * LEASE)  # ended: no lease to renew
        assert not lifecycle.fail(s, job_id, "internal_error", "x", at=t)
        assert not lifecycle.expire(s, job_id, created_before=t + 9 * LEASE, at=t + 9 * LEASE)
    row = _row(c, job_id)
    assert (row.status, row.summary, row.lease_until) == ("succeeded", {"faces": 1}, None)
    assert not _claim(c, job_id, "d", t + 9 * LEASE)  # an ended job is never claimed again


def test_fail_expire_rescue_requeue_cancel(ledger: Any, astronaut_jpeg: bytes) -> None:
    c, t = ledger, datetime.now(UTC)
    queued, held, other = (_submit(c, astronaut_jpeg) for _ in range(3))
    assert _claim(c, held, "h", t)
    later = t + timedelta(hours=1)
    with c.db.session() as s:
        # expire: a live lease protects the job; an unleased one goes
        assert not lifecycle.expire(s, held, created_before=later, at=t)
        assert not lifecycle.expire(s, queued, created_before=t - timedelta(hours=1), at=t)
        assert lifecycle.expire(s, queued, created_before=later, at=later)
        # rescue: only once the lease lapsed before ``before``, only on its token
        assert not lifecycle.rescue(s, held, "h", before=t, at=t)
        assert not lifecycle.rescue(s, held, "x", before=later, at=later)
        assert lifecycle.rescue(s, held, "h", before=later, at=later)
        # requeue_stuck: queued since before ``before`` and not re-sent since
        assert not lifecycle.requeue_stuck(s, other, before=t - timedelta(minutes=1), at=t)
        assert lifecycle.requeue_stuck(s, other, before=later, at=later + timedelta(minutes=1))
        assert not lifecycle.requeue_stuck(s, other, before=later, at=later)  # re-sent already
    row = _row(c, queued)
    assert (row.status, row.error_code) == ("expired", "expired")
    row = _row(c, held)
    assert (row.status, row.lease_token, row.lease_until) == ("queued", None, None)
    assert _row(c, other).status == "queued"
    with c.db.session() as s:
        subject_id = _row(c, other).subject_id
        assert lifecycle.cancel_queued(s, subject_id, at=later) == 2  # held, other (queued)
        assert lifecycle.cancel_queued(s, subject_id, at=later) == 0
        assert not lifecycle.fail(s, other, "internal_error", "x", at=later)  # ended
    row = _row(c, other)
    assert (row.status, row.error_code, row.quasi) == ("failed", "subject_erased", None)


def test_the_lease_heartbeat_renews_until_taken_over(ledger: Any, astronaut_jpeg: bytes) -> None:
    from worker.jobs.lease import Lease

    c, t = ledger, datetime.now(UTC)
    job_id = _submit(c, astronaut_jpeg)
    assert _claim(c, job_id, "a", t - timedelta(minutes=5))  # its lease has lapsed
    lease = Lease(c.db, job_id, "a", 30)
    assert lease.beat()
    until = _row(c, job_id).lease_until
    assert until is not None and until > t + timedelta(seconds=25)
    with c.db.session() as s:  # taken over (as after a lapse)
        s.get(Job, job_id).lease_token = "b"  # type: ignore[union-attr]
    assert not lease.beat()
    with Lease(c.db, job_id, "b", 3):  # the thread beats every second
        import time

        with c.db.session() as s:
            s.get(Job, job_id).lease_until = t  # type: ignore[union-attr]
        time.sleep(1.6)
    until = _row(c, job_id).lease_until
    assert until is not None and until > t + timedelta(seconds=2)


def test_the_docs_show_the_generated_diagram() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "ARCHITECTURE.md").read_text()
    assert lifecycle.diagram() in doc, "regenerate: python -m worker.jobs.lifecycle"
    assert lifecycle.table() in doc, "regenerate: python -m worker.jobs.lifecycle"
