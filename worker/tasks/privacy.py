"""Privacy tasks on the ``privacy`` queue: sweeps, orphans, erasure, consent withdrawal.

Contract (JSON args): ``facemedia.privacy.sweep`` [] or [as_of ISO-8601];
``facemedia.privacy.orphans`` []; ``facemedia.privacy.erase`` [ledger_subject_id];
``facemedia.privacy.withdraw_consent`` [ledger_subject_id]; ``facemedia.privacy.rescue`` [];
``facemedia.privacy.kek_epoch`` [] (beat: completes pending cryptographic erasures when due).
Subject ids are the ledger's opaque ids (``JobClient.subject_ref``), never the upstream's.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from worker.celery_app import app
from worker.dispatch import handlers
from worker.dispatch.names import ERASE, KEK_EPOCH, ORPHANS, PRIVACY, RESCUE, SWEEP, WITHDRAW


@app.task(name=SWEEP, bind=True, ignore_result=True, acks_late=True)
def sweep(self: Task, as_of: str | None = None) -> dict[str, Any]:
    """Delete what is due, a bounded number of batches; re-enqueue itself while more is due."""
    from worker.bootstrap import get_container

    report = handlers.sweep(get_container(), as_of)
    if report.more and not self.request.is_eager:
        self.apply_async(args=[as_of] if as_of else [], queue=PRIVACY)
    return report.to_json()


@app.task(name=RESCUE, ignore_result=True)
def rescue() -> int:
    """Queue again every job whose worker stopped heartbeating (beat, every rescue_interval)."""
    from worker.bootstrap import get_container

    return handlers.rescue(get_container())


@app.task(name=ORPHANS, ignore_result=True, acks_late=True)
def orphans() -> dict[str, Any]:
    """Delete store objects that have no ledger row, past the grace period."""
    from worker.bootstrap import get_container

    return handlers.orphans(get_container())


@app.task(name=ERASE, ignore_result=True, acks_late=True)
def erase(subject_id: str) -> dict[str, Any]:
    """Erase a subject (idempotent)."""
    from worker.bootstrap import get_container

    return handlers.erase(get_container(), subject_id)


@app.task(name=WITHDRAW, ignore_result=True, acks_late=True)
def withdraw_consent(subject_id: str) -> dict[str, Any]:
    """Withdraw a subject's research consent (idempotent)."""
    from worker.bootstrap import get_container

    return handlers.withdraw_consent(get_container(), subject_id)


@app.task(name=KEK_EPOCH, ignore_result=True, time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60)
def kek_epoch() -> dict[str, Any]:
    """Change the KEK epoch if a cryptographic erasure is due (beat); a no-op otherwise, or
    while another pass runs. A pass killed mid-way is resumed by the next call."""
    from worker.bootstrap import get_container

    return handlers.kek_epoch(get_container())
