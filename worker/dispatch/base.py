"""The dispatch port: how services hand work to the queue.

Services never import Celery or the tasks: they are given a :class:`Dispatcher` (or one of its
bound methods) by the container. Two implementations: :class:`~worker.dispatch.broker.
CeleryDispatcher` sends messages to the configured broker; :class:`~worker.dispatch.inline.
InlineDispatcher` (the embedded default, no broker) runs the task's body in this process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from worker.dispatch import names


class Dispatcher(ABC):
    """Sends tasks by name (their contract: :mod:`worker.dispatch.names`)."""

    #: True when tasks run elsewhere (a broker and workers), False when they run here, now.
    remote: bool

    @abstractmethod
    def send(self, task: str, args: Sequence[Any], queue: str | None = None) -> None:
        """Send one task with JSON ``args`` to ``queue`` (default: the queue its name routes
        to)."""

    @abstractmethod
    def send_group(self, task: str, arg_lists: Sequence[Sequence[Any]]) -> None:
        """Send one task per argument list, as one group (fanned out across workers)."""

    def enqueue(self, job_id: str) -> None:
        """Send ``facemedia.media.process(job_id)``."""
        self.send(names.PROCESS, [job_id], names.MEDIA)

    def release_shards(self, release_id: str, shards: int) -> None:
        """Send the shard tasks of a release as one group on the research queue."""
        self.send_group(names.BUILD_SHARD, [[release_id, i] for i in range(shards)])

    def finish_release(self, release_id: str) -> None:
        """Send ``facemedia.research.finish_release(release_id)``."""
        self.send(names.FINISH, [release_id], names.RESEARCH)

    def consumers(self, queue: str, timeout: float = 2.0) -> int | None:
        """How many workers consume ``queue`` now (asked of the workers through the broker),
        or None when the question does not apply (tasks run in this process)."""
        del queue, timeout
        return None

    def close(self) -> None:  # noqa: B027  (optional hook; nothing to release by default)
        """Release connections (a no-op unless the implementation holds any)."""
