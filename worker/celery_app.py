"""The Celery app: queues, routes, reliability settings and signals. No job logic lives here.

Configured lazily from the settings on first use (``celery -A worker.celery_app worker``).
With no broker configured, tasks run eagerly in-process (the embedded default).
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_process_shutdown
from kombu.entity import Queue

from worker.settings import Settings, load_settings

log = structlog.get_logger("facemedia.worker")

QUEUES = ("media", "privacy", "research")


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings chosen for not losing work (see docs/RELIABILITY.md)."""
    transport = {
        # An unacked message (its worker vanished) returns after this long on Redis; it must
        # exceed the task time limit, or a long task is delivered again while running.
        "visibility_timeout": settings.visibility_timeout,
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
        "task_queues": [Queue(name) for name in QUEUES],
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
        "imports": ["worker.tasks.media", "worker.tasks.privacy"],
        "beat_schedule": {
            "retention-sweep": {
                "task": "facemedia.privacy.sweep",
                "schedule": 300.0,
                "options": {"queue": "privacy", "expires": 290},
            },
            "orphan-sweep": {
                "task": "facemedia.privacy.orphans",
                "schedule": 86400.0,
                "options": {"queue": "privacy", "expires": 3600},
            },
        },
    }


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


@worker_process_init.connect
def _child_init(**_: Any) -> None:
    """Each prefork child builds its own container and keeps OpenCV to one thread."""
    import cv2

    from worker.bootstrap import reset_container
    from worker.logs import configure_logging

    cv2.setNumThreads(1)
    reset_container()
    configure_logging(load_settings().log_level)


@worker_process_shutdown.connect
def _child_shutdown(**_: Any) -> None:
    from worker.bootstrap import get_container

    get_container().close()
