"""The body of every task: one service call on a container, by task name.

The Celery tasks (``worker/tasks/*``) and the inline dispatcher (:mod:`worker.dispatch.inline`)
both run these, so a task does the same work whether a worker or this process runs it. Each
takes the container first, then the task's JSON args, and returns its JSON-ready result
(``process`` returns the delivery :class:`~worker.jobs.delivery.Step`, ``sweep`` its report).
Services are imported inside the bodies: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from worker.dispatch import names

if TYPE_CHECKING:
    from worker.bootstrap import Container
    from worker.jobs.delivery import Step
    from worker.retention.sweep import SweepReport
    from worker.webhooks.delivery import Attempt


def process(c: Container, job_id: str, attempt: int = 0) -> Step:
    """One delivery of a job (``facemedia.media.process``); ``attempt``: retries so far."""
    from worker.jobs.delivery import run_once

    return run_once(
        c.service.process,
        job_id,
        backoff_base=c.settings.retry_backoff_seconds,
        attempt=attempt,
    )


def sweep(c: Container, as_of: str | None = None) -> SweepReport:
    """A bounded sweep; the jobs it re-queued are sent again (the caller re-sends the task
    itself while ``report.more``)."""
    from worker.retention.sweep import sweep_and_requeue

    return sweep_and_requeue(
        c.sweeper,
        c.dispatcher.enqueue,
        as_of=datetime.fromisoformat(as_of) if as_of else None,
        max_batches=names.SWEEP_BATCHES_PER_TASK,
    )


def rescue(c: Container) -> int:
    """Queue again every job whose worker stopped heartbeating."""
    from worker.retention.sweep import rescue_and_requeue

    return len(rescue_and_requeue(c.sweeper, c.dispatcher.enqueue))


def orphans(c: Container) -> dict[str, Any]:
    """Delete store objects that have no ledger row, past the grace period."""
    return dict(c.sweeper.orphans())


def erase(c: Container, subject_id: str) -> dict[str, Any]:
    """Erase a subject (idempotent)."""
    # the opaque id was resolved in the requester's tenant: any tenant's subject (issue 17)
    return c.rights.erase(subject_id, tenant=None).to_json()


def withdraw_consent(c: Container, subject_id: str) -> dict[str, Any]:
    """Withdraw a subject's research consent (idempotent)."""
    return c.rights.withdraw_consent(subject_id, tenant=None).to_json()


def kek_epoch(c: Container) -> dict[str, Any]:
    """Change the KEK epoch if a cryptographic erasure is due; a no-op otherwise, or while
    another pass runs."""
    from worker.retention.epochs import EpochBusy

    try:
        return c.epochs.run().to_json()
    except EpochBusy as exc:
        return {"ran": False, "error_code": exc.code}


def build_shard(c: Container, release_id: str, index: int) -> bool:
    """Build one shard of a release; True when it completed the set and triggered the finish."""
    return bool(c.releases.build_shard(release_id, int(index)))


def finish_release(c: Container, release_id: str) -> dict[str, Any]:
    """Manifest, documents, signed index; publish."""
    result: dict[str, Any] = c.releases.finish(release_id).to_json()
    return result


def purge_revoked(c: Container) -> list[dict[str, Any]]:
    """Remove revoked samples still stored in releases (beat's retry of revocation purges)."""
    return list(c.releases.purge_pending())


def build_ksame_batches(c: Container) -> list[dict[str, Any]]:
    """Build the k-Same batches that are due (bounded per task)."""
    return [r.to_json() for r in c.ksame.build(max_batches=names.KSAME_BATCHES_PER_TASK)]


def webhook_attempt(c: Container, job_id: str) -> Attempt:
    """One webhook delivery attempt for an ended job (``facemedia.webhooks.deliver``; the
    Celery task retries it after ``retry_in`` seconds)."""
    return c.webhooks.attempt(job_id)


def deliver_webhook(c: Container, job_id: str) -> dict[str, Any]:
    """The inline form of ``facemedia.webhooks.deliver``: the first attempt now; each retry
    after its backoff on a daemon timer thread of this process (a process that exits first
    leaves the job's ``webhook_state`` ``pending``)."""
    import threading

    step = webhook_attempt(c, job_id)
    if step.retry_in is not None:

        def again() -> None:
            try:
                deliver_webhook(c, job_id)
            except Exception as exc:  # a thread of its own: nobody else would see it
                import structlog

                structlog.get_logger("facemedia.webhooks").warning(
                    "webhook_retry_failed", job_id=job_id, exc_type=type(exc).__name__
                )
            finally:
                c.checkpoint()

        timer = threading.Timer(step.retry_in, again)
        timer.daemon = True
        timer.start()
    return step.to_json()


def rescue_webhooks(c: Container) -> int:
    """Send again the webhook deliveries of ended jobs that were never attempted."""
    return c.webhooks.rescue()


#: Task name → body, for the inline dispatcher (the media task has its own inline runner).
HANDLERS: dict[str, Callable[..., Any]] = {
    names.PROCESS: process,
    names.SWEEP: sweep,
    names.RESCUE: rescue,
    names.ORPHANS: orphans,
    names.ERASE: erase,
    names.WITHDRAW: withdraw_consent,
    names.KEK_EPOCH: kek_epoch,
    names.BUILD_SHARD: build_shard,
    names.FINISH: finish_release,
    names.PURGE_PENDING: purge_revoked,
    names.BUILD_KSAME: build_ksame_batches,
    names.DELIVER_WEBHOOK: deliver_webhook,
    names.RESCUE_WEBHOOKS: rescue_webhooks,
}
