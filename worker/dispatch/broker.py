"""The Celery side of the dispatch port: tasks sent by name to the configured broker.

The producer is a Celery instance of its own, configured like the workers
(:func:`worker.dispatch.config.celery_config`) and used only to send; it never imports the tasks
(``worker/tasks/*``), so the sending process needs none of the workers' code.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from worker.dispatch import names
from worker.dispatch.base import Dispatcher

if TYPE_CHECKING:
    from celery import Celery

    from worker.settings import Settings


class CeleryDispatcher(Dispatcher):
    """Sends tasks to the broker named by the settings (connections opened on first send)."""

    remote = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def producer(self) -> Celery:
        """A Celery instance used only to send messages to the configured broker."""
        from celery import Celery

        from worker.dispatch.config import celery_config

        producer = Celery("facemedia-producer", set_as_current=False)
        producer.conf.update(celery_config(self.settings))
        return producer

    def send(self, task: str, args: Sequence[Any], queue: str | None = None) -> None:
        """Publish one task message (JSON args) on ``queue`` (default: its route)."""
        self.producer.send_task(task, args=list(args), queue=queue or names.queue_of(task))

    def send_group(self, task: str, arg_lists: Sequence[Sequence[Any]]) -> None:
        """Publish one message per argument list as a Celery ``group``."""
        from celery import group

        queue = names.queue_of(task)
        group(
            self.producer.signature(task, args=list(args), queue=queue) for args in arg_lists
        ).apply_async()

    def consumers(self, queue: str, timeout: float = 2.0) -> int | None:
        """How many workers consume ``queue``: a broadcast ``active_queues`` that every live
        worker answers within ``timeout`` seconds (Redis and RabbitMQ alike; a worker started
        without remote control is not seen)."""
        replies = self.producer.control.inspect(timeout=timeout).active_queues() or {}
        return sum(
            1
            for queues in replies.values()
            if any(isinstance(q, dict) and q.get("name") == queue for q in queues or [])
        )

    def close(self) -> None:
        """Close the producer's broker connections, if it was ever built."""
        if "producer" in self.__dict__:
            self.producer.close()
