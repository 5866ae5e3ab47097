"""The Celery configuration: queues, routes, reliability settings and beat's schedule.

One function of the settings, used by the worker app (``worker.celery_app``) and by the
producer that sends tasks to a broker (:class:`worker.dispatch.broker.CeleryDispatcher`), so both
agree on serializer, queues and routes. Kombu is imported only when queues are built.

The periodic work is data (:func:`periodic_tasks`): beat's ``beat_schedule`` is built from it,
and so is the embedded server's schedule (:mod:`worker.api.schedule`), so the two never differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.dispatch import names

if TYPE_CHECKING:
    from kombu.entity import Queue

    from worker.settings import Settings


def is_amqp(settings: Settings) -> bool:
    """True when the broker is RabbitMQ (an AMQP URL)."""
    return settings.broker_url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def task_queues(settings: Settings) -> list[Queue]:
    """The queues; on RabbitMQ (when enabled) quorum queues with a delivery limit that
    dead-letter to ``<name>.dead`` (see :func:`dead_letter_queues`)."""
    from kombu.entity import Queue

    if not (is_amqp(settings) and settings.amqp_quorum_queues):
        return [Queue(name) for name in names.QUEUES]
    return [
        Queue(
            name,
            queue_arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": settings.amqp_delivery_limit,
                "x-dead-letter-exchange": names.DEAD_LETTER_EXCHANGE,
                "x-dead-letter-routing-key": name,
            },
        )
        for name in names.QUEUES
    ]


def dead_letter_queues() -> list[Queue]:
    """``media.dead`` etc.: where RabbitMQ puts a message past its delivery limit."""
    from kombu.entity import Exchange, Queue

    dlx = Exchange(names.DEAD_LETTER_EXCHANGE, type="direct", durable=True)
    return [
        Queue(f"{name}.dead", dlx, routing_key=name, queue_arguments={"x-queue-type": "quorum"})
        for name in names.QUEUES
    ]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings chosen for not losing work (see docs/RELIABILITY.md)."""
    transport = {
        # An unacked message (its worker vanished) returns after this long on Redis; it must
        # exceed the task time limit, or a long task is delivered again while running.
        "visibility_timeout": settings.visibility_timeout,
        # Redis: sweep for a dead worker's unacked messages every interval, scanning on every
        # sweep (throttle 1); kombu's defaults (10 s x 10) add up to 100 s to a redelivery.
        "unacked_restore_interval": settings.redis_restore_interval,
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": settings.broker_url or "memory://",
        "result_backend": None,
        "task_ignore_result": True,
        "task_always_eager": settings.eager,
        "task_eager_propagates": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Stop: with REMAP_SIGTERM=SIGQUIT in the worker's environment (the image sets it),
        # SIGTERM gives jobs in flight this long, then hands each unfinished one back to the
        # queue unacknowledged (acks late); the ledger lease makes the redelivery safe.
        "worker_soft_shutdown_timeout": settings.soft_shutdown_seconds,
        "task_queues": task_queues(settings),
        "task_default_queue": names.MEDIA,
        "task_routes": {pattern: {"queue": queue} for pattern, queue in names.ROUTES.items()},
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "imports": list(names.TASK_MODULES),
        "beat_schedule": {p.name: p.beat_entry() for p in periodic_tasks(settings)},
    }


def epoch_check_seconds(settings: Settings) -> float:
    """Seconds between beat's KEK epoch checks (as ``KeyEpochs.check_interval``)."""
    return max(1.0, min(settings.epoch_delay.total_seconds() / 12, 300.0))


@dataclass(frozen=True)
class PeriodicTask:
    """One entry of the periodic schedule: ``task`` (a name of :mod:`worker.dispatch.names`,
    sent with no args) every ``every`` seconds on ``queue``; a run not started within
    ``expires`` seconds of being due is dropped (the next one comes)."""

    name: str
    task: str
    every: float
    queue: str
    expires: float

    def beat_entry(self) -> dict[str, Any]:
        """The entry as Celery beat's ``beat_schedule`` takes it."""
        return {
            "task": self.task,
            "schedule": self.every,
            "options": {"queue": self.queue, "expires": self.expires},
        }


def periodic_tasks(settings: Settings) -> tuple[PeriodicTask, ...]:
    """The periodic schedule (beat's, and the embedded server's), in the order a pass runs
    them: the 5-minute entries every ``schedule_interval`` seconds (a message dropped when not
    started within 29/30 of it: 290 s of 300), the lease rescue every ``rescue_interval``, the
    KEK epoch check every :func:`epoch_check_seconds`, the orphan sweep daily."""
    every = float(settings.schedule_interval)
    expires = every * 29 / 30
    epoch = epoch_check_seconds(settings)
    return (
        PeriodicTask("retention-sweep", names.SWEEP, every, names.PRIVACY, expires),
        PeriodicTask(
            "lease-rescue",
            names.RESCUE,
            settings.rescue_interval,
            names.PRIVACY,
            settings.rescue_interval,
        ),
        # Retries a revocation purge whose task was lost or ran out of retries.
        PeriodicTask("release-purge", names.PURGE_PENDING, every, names.RESEARCH, expires),
        PeriodicTask("ksame-batches", names.BUILD_KSAME, every, names.RESEARCH, expires),
        # Completes pending cryptographic erasures (KEK epoch change) so none waits longer than
        # erasure_epoch_delay: checks every twelfth of it, at most every 5 minutes
        # (KeyEpochs.check_interval); does nothing when nothing is pending or due.
        PeriodicTask("kek-epoch", names.KEK_EPOCH, epoch, names.PRIVACY, epoch),
        # Webhooks of jobs that ended without a delivery sent (expired by the sweep, cancelled
        # by an erasure, or a lost message). After the sweep: a job it expired is posted in the
        # same pass.
        PeriodicTask("webhook-rescue", names.RESCUE_WEBHOOKS, every, names.WEBHOOKS, expires),
        PeriodicTask("orphan-sweep", names.ORPHANS, 86400.0, names.PRIVACY, 3600.0),
    )
