"""Task ``facemedia.webhooks.deliver`` on the ``webhooks`` queue: an ended job's summary
posted, signed, to its ``callback_url``.

Contract (JSON args): ``[job_id]``. Sent once when a job ends
(:meth:`worker.webhooks.delivery.WebhookService.schedule`); each run is one attempt, and a
failed attempt re-sends the task with a countdown (exponential backoff) until the job's
``webhook_state`` is ``delivered`` or ``dead``. The attempt count lives in the ledger, so a
redelivered message neither resets nor exceeds it. ``facemedia.webhooks.rescue`` ``[]`` (beat)
sends again the deliveries of jobs that ended without one being sent.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from worker.celery_app import app
from worker.dispatch import handlers
from worker.dispatch.names import DELIVER_WEBHOOK, RESCUE_WEBHOOKS, WEBHOOKS


@app.task(
    name=DELIVER_WEBHOOK,
    bind=True,
    max_retries=None,
    acks_late=True,
    ignore_result=True,
    time_limit=180,
    soft_time_limit=150,
)
def deliver(self: Task, job_id: str) -> dict[str, Any]:
    """One delivery attempt; retried with a countdown while the webhook is ``pending``."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    from worker.bootstrap import get_container

    c = get_container()
    try:
        step = handlers.webhook_attempt(c, job_id)
    except (OperationalError, InterfaceError) as exc:  # the ledger is unreachable: later
        if self.request.is_eager:
            raise
        raise self.retry(
            countdown=c.webhooks.backoff(self.request.retries + 1), exc=exc, queue=WEBHOOKS
        ) from None
    if step.retry_in is not None and not self.request.is_eager:
        raise self.retry(countdown=step.retry_in, queue=WEBHOOKS)
    return step.to_json()


@app.task(name=RESCUE_WEBHOOKS, ignore_result=True)
def rescue() -> int:
    """Send again pending deliveries never attempted (beat, every 5 minutes)."""
    from worker.bootstrap import get_container

    return handlers.rescue_webhooks(get_container())
