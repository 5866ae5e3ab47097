"""The Celery app and its worker signals. No job logic lives here.

Configured lazily from the settings on first use (``celery -A worker.celery_app worker``), with
the one Celery configuration (:func:`worker.dispatch.config.celery_config`: queues, routes,
reliability settings, beat's schedule); the tasks it loads are listed there too
(``worker/tasks/*``). Services never import this module: they send through a dispatcher
(:mod:`worker.dispatch`).
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

from worker.dispatch.config import celery_config, dead_letter_queues, is_amqp
from worker.settings import load_settings

log = structlog.get_logger("facemedia.worker")

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
def _warm_imports(**_: Any) -> None:
    """Import what a task runs (the job service, every job type and its pipelines: OpenCV,
    SciPy, PyAV) once in the parent, before the pool forks: a child's first task then starts at
    once instead of spending its soft time limit on imports (seen: > 12 s under heavy load, the
    job left queued until the rescue sweep). No model is loaded and no thread is started here."""
    import worker.jobs.service  # noqa: F401
    from worker.jobs.registry import names

    names()  # loads every job type's module (the registry imports its package on first use)


@worker_init.connect
def _declare_dead_letters(sender: Any = None, **_: Any) -> None:
    """RabbitMQ quorum queues: declare the dead-letter exchange and queues (a message sent to
    an undeclared dead-letter exchange is dropped)."""
    settings = load_settings()
    if not (is_amqp(settings) and settings.amqp_quorum_queues):
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
