"""Regression: the ledger (PostgreSQL) being unreachable for a moment is a transient fault.

Found by test_restarts.py: during a PostgreSQL restart a job whose ``_key_id`` lookup failed
ended ``failed``/``internal_error``, and a delivery whose claim failed raised out of the task,
which Celery acked: the job was stranded in ``processing``. Both now retry with backoff.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from worker.jobs.errors import TransientJobError
from worker.tasks.media import run_inline, run_once

pytestmark = pytest.mark.reliability


def _outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("connection refused"))


def test_a_ledger_error_mid_job_is_transient_not_internal_error(
    embedded: Any, astronaut_jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded.client.enqueue = lambda job_id: None  # submit without running
    job_id = embedded.client.submit(astronaut_jpeg, "detect", subject_id="outage-subject")
    service = embedded.service
    real = service._key_id
    calls = {"n": 0}

    def flaky(job: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise _outage()
        return real(job)

    monkeypatch.setattr(service, "_key_id", flaky)
    with pytest.raises(TransientJobError):
        service.process(job_id)
    assert service.status(job_id)["status"] == "processing"  # not failed
    from datetime import UTC, datetime, timedelta

    from worker.ledger.models import Job

    with service.db.session() as s:  # skip the wait: the dead delivery's lease has lapsed
        job = s.get(Job, job_id)
        assert job is not None
        job.lease_until = datetime.now(UTC) - timedelta(seconds=1)
    step = run_inline(embedded, job_id)
    assert step.status == "succeeded"
    assert service.status(job_id)["original_deleted"]


def test_a_ledger_error_in_the_claim_becomes_a_retry(
    embedded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(job_id: str) -> Any:
        raise _outage()

    monkeypatch.setattr(embedded.service, "process", down)
    step = run_once(embedded, "0" * 32, attempt=3)
    assert step.status == "queued" and step.retry_in is not None and step.retry_in >= 1.0
