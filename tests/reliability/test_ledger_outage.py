"""Regression: the ledger (PostgreSQL) being unreachable for a moment is a transient fault.

Found by test_restarts.py: during a PostgreSQL restart a job whose subject-key lookup failed
ended ``failed``/``internal_error``, and a delivery whose claim failed raised out of the task,
which Celery acked: the job was stranded in ``processing``. Both now retry with backoff.

The fault is injected through public seams: the service's ``records`` collaborator (a
constructor argument; its ``add`` runs in the transaction that records the outputs and ends the
job, the first ledger work after the claim) and the ``process`` callable the delivery policy
runs.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from worker.jobs.delivery import run_inline, run_once
from worker.jobs.errors import TransientJobError
from worker.objects.records import ObjectRecords

pytestmark = pytest.mark.reliability


def _outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("connection refused"))


def test_a_ledger_error_mid_job_is_transient_not_internal_error(
    embedded: Any, astronaut_jpeg: bytes
) -> None:
    embedded.client.enqueue = lambda job_id: None  # submit without running
    job_id = embedded.client.submit(astronaut_jpeg, "detect", subject_id="outage-subject")
    calls = {"n": 0}

    class FlakyRecords(ObjectRecords):
        def add_stored(self, *args: Any, **kwargs: Any) -> Any:  # the outputs' rows: the
            calls["n"] += 1  # ledger is down for the first
            if calls["n"] == 1:
                raise _outage()
            return super().add_stored(*args, **kwargs)

    from worker.jobs.service import JobService

    real = embedded.records
    service = JobService(
        embedded.db,
        FlakyRecords(real.db, real.vault, real.ttl, real.clock),
        embedded.tools,
        embedded.service.config,
        deleter=embedded.deleter,
    )
    with pytest.raises(TransientJobError):
        service.process(job_id)
    assert calls["n"] == 1  # the fault was met mid-job (after the claim)
    assert service.status(job_id)["status"] == "processing"  # not failed
    from datetime import UTC, datetime, timedelta

    from worker.ledger.models import Job

    with service.db.session() as s:  # skip the wait: the dead delivery's lease has lapsed
        job = s.get(Job, job_id)
        assert job is not None
        job.lease_until = datetime.now(UTC) - timedelta(seconds=1)
    backoff = embedded.settings.retry_backoff_seconds
    process = embedded.service.process  # the next delivery, on the container's own service
    step = run_inline(process, job_id, backoff_base=backoff, checkpoint=embedded.checkpoint)
    assert step.status == "succeeded"
    assert service.status(job_id)["original_deleted"]


def test_a_ledger_error_in_the_claim_becomes_a_retry(embedded: Any) -> None:
    def down(job_id: str) -> Any:  # the delivery's process step: the ledger is down
        raise _outage()

    backoff = embedded.settings.retry_backoff_seconds
    step = run_once(down, "0" * 32, backoff_base=backoff, attempt=3)
    assert step.status == "queued" and step.retry_in is not None and step.retry_in >= 1.0
