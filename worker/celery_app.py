"""The Celery app: queues, routes, reliability settings and signals. No job logic lives here.

Configured lazily from the settings on first use (``celery -A worker.celery_app worker``).
With no broker configured, tasks run eagerly in-process (the embedded default).
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Celery
from celery.signals import (
    task_postrun,
    task_retry,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from kombu.entity import Exchange, Queue

from worker.settings import Settings, load_settings

log = structlog.get_logger("facemedia.worker")

QUEUES = ("media", "privacy", "research")
DEAD_LETTER_EXCHANGE = "facemedia.dead"


def _is_amqp(settings: Settings) -> bool:
    return settings.broker_url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def task_queues(settings: Settings) -> list[Queue]:
    """The queues; on RabbitMQ (when enabled) quorum queues with a delivery limit that
    dead-letter to ``<name>.dead`` (see :func:`dead_letter_queues`)."""
    if not (_is_amqp(settings) and settings.amqp_quorum_queues):
        return [Queue(name) for name in QUEUES]
    return [
        Queue(
            name,
            queue_arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": settings.amqp_delivery_limit,
                "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                "x-dead-letter-routing-key": name,
            },
        )
        for name in QUEUES
    ]


def dead_letter_queues() -> list[Queue]:
    """``media.dead`` etc.: where RabbitMQ puts a message past its delivery limit."""
    dlx = Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)
    return [
        Queue(f"{name}.dead", dlx, routing_key=name, queue_arguments={"x-queue-type": "quorum"})
        for name in QUEUES
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
        "task_default_queue": "media",
        "task_routes": {
            "facemedia.media.*": {"queue": "media"},
            "facemedia.privacy.*": {"queue": "privacy"},
            "facemedia.research.*": {"queue": "research"},
        },
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "imports": [
            "worker.tasks.media",
            "worker.tasks.privacy",
            "worker.tasks.releases",
            "worker.tasks.sampling",
        ],
        "beat_schedule": {
            "retention-sweep": {
                "task": "facemedia.privacy.sweep",
                "schedule": 300.0,
                "options": {"queue": "privacy", "expires": 290},
            },
            "lease-rescue": {
                "task": "facemedia.privacy.rescue",
                "schedule": settings.rescue_interval,
                "options": {"queue": "privacy", "expires": settings.rescue_interval},
            },
            # Retries a revocation purge whose task was lost or ran out of retries.
            "release-purge": {
                "task": "facemedia.research.purge_revoked",
                "schedule": 300.0,
                "options": {"queue": "research", "expires": 290},
            },
            "ksame-batches": {
                "task": "facemedia.research.build_ksame_batches",
                "schedule": 300.0,
                "options": {"queue": "research", "expires": 290},
            },
            # Completes pending cryptographic erasures (KEK epoch change) so none waits longer
            # than erasure_epoch_delay: checks every twelfth of it, at most every 5 minutes
            # (KeyEpochs.check_interval); does nothing when nothing is pending or due.
            "kek-epoch": {
                "task": "facemedia.privacy.kek_epoch",
                "schedule": _epoch_check_seconds(settings),
                "options": {"queue": "privacy", "expires": _epoch_check_seconds(settings)},
            },
            "orphan-sweep": {
                "task": "facemedia.privacy.orphans",
                "schedule": 86400.0,
                "options": {"queue": "privacy", "expires": 3600},
            },
        },
    }


def _epoch_check_seconds(settings: Settings) -> float:
    """Seconds between beat's KEK epoch checks (as ``KeyEpochs.check_interval``)."""
    return max(1.0, min(settings.epoch_delay.total_seconds() / 12, 300.0))


app = Celery("facemedia")


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    sender.conf.update(celery_config(load_settings()))


@worker_init.connect
def _preflight(**_: Any) -> None:
    """The worker refuses to start against a bucket or KMS key outside the allowed regions."""
    from worker.bootstrap import get_container
    from worker.logs import configure_logging

    container = get_container()
    configure_logging(container.settings.log_level)
    try:
        container.preflight()
    except Exception as exc:  # Celery logs and ignores handler errors; SystemExit stops it
        log.error("worker.refused_to_start", reason=type(exc).__name__)
        raise SystemExit(f"facemedia worker refused to start: {exc}") from None
    finally:
        container.close()


@worker_init.connect
def _declare_dead_letters(sender: Any = None, **_: Any) -> None:
    """RabbitMQ quorum queues: declare the dead-letter exchange and queues (a message sent to
    an undeclared dead-letter exchange is dropped)."""
    settings = load_settings()
    if not (_is_amqp(settings) and settings.amqp_quorum_queues):
        return
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=3)
            channel = conn.default_channel
            for queue in dead_letter_queues():
                queue(channel).declare()
    except Exception as exc:  # the worker still runs; the broker may come up later
        log.warning("worker.dead_letter_declare_failed", reason=type(exc).__name__)


@worker_process_init.connect
def _child_init(**_: Any) -> None:
    """Each prefork child builds its own container and keeps OpenCV to one thread."""
    import cv2

    from pipelines.media import set_memory_ceiling
    from worker.bootstrap import reset_container
    from worker.logs import configure_logging

    cv2.setNumThreads(1)
    reset_container()
    settings = load_settings()
    configure_logging(settings.log_level)
    # The child decodes untrusted media: a bomb past this fails its job with too_large, not an
    # OOM kill of the child (and a redelivered poison message). See docs/OPERATIONS.md.
    set_memory_ceiling(settings.decode_memory_limit_mb)


@worker_process_shutdown.connect
def _child_shutdown(**_: Any) -> None:
    from worker.bootstrap import get_container

    get_container().close()


# ----- metrics (worker/metrics_server.py); all no-ops unless metrics_port is set ----------------


@worker_init.connect
def _metrics_prepare(**_: Any) -> None:
    """Main process, before children fork: forget an earlier run's multiprocess samples."""
    if load_settings().metrics_port:
        from worker.metrics_server import wipe_multiproc_dir

        wipe_multiproc_dir()


@worker_ready.connect
def _metrics_serve(**_: Any) -> None:
    """Main process: serve the summed metrics of every child on metrics_port."""
    from worker.metrics_server import start

    start(load_settings())


@worker_process_shutdown.connect
def _metrics_child_exit(**_: Any) -> None:
    import os

    from worker.metrics_server import child_exited

    child_exited(os.getpid())


@worker_shutdown.connect
def _metrics_stop(**_: Any) -> None:
    from worker.metrics_server import stop

    stop()


@task_postrun.connect
def _audit_checkpoint(**_: Any) -> None:
    """A task that appended audit entries ends with a signed checkpoint of the audit head
    (worker.ledger.checkpoints); failures are logged, never raised into the task."""
    from worker.bootstrap import checkpoint_current

    checkpoint_current()


@task_retry.connect
def _count_retry(sender: Any = None, **_: Any) -> None:
    from worker.metrics import RETRIES

    RETRIES.labels(getattr(sender, "name", "unknown")).inc()
