"""The sweep never expires a job that is still running under a live lease.

Before issue 14 the sweep's ``_jobs`` expired ``queued``/``processing`` jobs by age alone, so a
long job whose worker was alive and heartbeating was marked ``expired`` under it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from worker.ledger.models import Job


def _processing(container: Any, job_id: str, lease_until: datetime) -> None:
    with container.db.session() as s:  # a worker "claimed" it (tests may write rows directly)
        row = s.get(Job, job_id)
        assert row is not None
        row.status, row.lease_token, row.lease_until = "processing", "tok" + job_id, lease_until
        row.deliveries = 1


def test_a_job_running_under_a_live_lease_is_not_expired(
    make_settings: Any, astronaut_jpeg: bytes
) -> None:
    from worker.bootstrap import Container

    c = Container(make_settings())
    try:
        c.client.enqueue = lambda job_id: None  # not run: "workers" hold them below
        running = c.client.submit(astronaut_jpeg, "detect", subject_id="exp-live")
        dead = c.client.submit(astronaut_jpeg, "detect", subject_id="exp-live")
        as_of = datetime.now(UTC) + timedelta(hours=25)  # both are past the originals' max age
        _processing(c, running, as_of + timedelta(seconds=30))  # heartbeating: lease is live
        _processing(c, dead, as_of - timedelta(minutes=1))  # its worker died: lease lapsed
        report = c.sweeper.run(as_of=as_of)
        assert report.jobs_expired == 1
        assert c.service.status(running)["status"] == "processing"
        assert c.service.status(dead)["status"] == "expired"
        assert c.service.status(dead)["error_code"] == "expired"
        with c.db.session() as s:
            row = s.get(Job, running)
            assert row is not None and row.lease_token == "tok" + running
        # once the lease lapses (the worker died after all), the next sweep expires it
        later = as_of + timedelta(minutes=1)
        assert c.sweeper.run(as_of=later).jobs_expired == 1
        assert c.service.status(running)["status"] == "expired"
    finally:
        c.close()


def test_an_expired_job_keeps_no_quasi_identifiers(embedded: Any, astronaut_jpeg: bytes) -> None:
    """Every way a job ends clears its generalized quasi-identifiers (TABLE_POLICY: kept only
    until the job ends), expiry included."""
    from worker.ledger.subjects import Consent

    embedded.client.enqueue = lambda job_id: None  # never runs
    job_id = embedded.client.submit(
        astronaut_jpeg,
        "detect",
        subject_id="exp-quasi",
        consent=Consent(research=True),
        attributes={"age": "34", "region": "Zhejiang"},
    )
    with embedded.db.session() as s:
        row = s.get(Job, job_id)
        assert row is not None and row.quasi
    report = embedded.sweeper.run(as_of=datetime.now(UTC) + timedelta(hours=25))
    assert report.jobs_expired == 1
    with embedded.db.session() as s:
        row = s.get(Job, job_id)
        assert row is not None
        assert (row.status, row.quasi, row.lease_until) == ("expired", None, None)


def test_the_sweeps_job_entries_belong_to_the_jobs_tenant(
    make_settings: Any, astronaut_jpeg: bytes
) -> None:
    """Every audit entry belongs to a tenant (issue 17): the sweep's job.requeued, job.rescued
    and job.expired name the job's, not the default one."""
    from sqlalchemy import select

    from worker.bootstrap import Container
    from worker.ledger.models import AuditEntry

    c = Container(make_settings())
    try:
        c.client.enqueue = lambda job_id: None  # never runs
        stuck = c.client.submit(astronaut_jpeg, "detect", subject_id="u1", tenant="acme")
        lapsed = c.client.submit(astronaut_jpeg, "detect", subject_id="u1", tenant="acme")
        now = datetime.now(UTC)
        _processing(c, lapsed, now - timedelta(minutes=5))
        c.sweeper.rescue(as_of=now)
        c.sweeper.run(as_of=now + timedelta(hours=2))  # queued and unclaimed: requeued
        c.sweeper.run(as_of=now + timedelta(hours=25))  # past the originals' age: expired
        with c.db.session() as s:
            rows = s.execute(
                select(AuditEntry.event, AuditEntry.entity, AuditEntry.tenant).where(
                    AuditEntry.event.in_(("job.requeued", "job.rescued", "job.expired"))
                )
            ).all()
        events = {(event, entity) for event, entity, _ in rows}
        assert ("job.rescued", lapsed) in events and ("job.expired", stuck) in events
        assert ("job.requeued", stuck) in events
        assert {tenant for _, _, tenant in rows} == {"acme"}
    finally:
        c.close()
