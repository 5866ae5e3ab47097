"""The embedded default of the dispatch port: with no broker, a task runs here and now.

A sent task runs its body (:mod:`worker.dispatch.handlers`) on this dispatcher's container and
ends with the container's audit checkpoint (a unit of work, as after a task in a worker). A job
(``facemedia.media.process``) runs through the delivery policy's inline runner, which sleeps
through retry backoffs instead of handing the job to a broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from worker.dispatch import handlers, names
from worker.dispatch.base import Dispatcher

if TYPE_CHECKING:
    from worker.bootstrap import Container


class InlineDispatcher(Dispatcher):
    """Runs every task it is sent in this process, on ``container``; errors propagate."""

    remote = False

    def __init__(self, container: Container) -> None:
        self.container = container

    def enqueue(self, job_id: str) -> None:
        """Run the job now (retry backoffs slept through), then checkpoint the audit log."""
        from worker.jobs.delivery import run_inline

        c = self.container
        run_inline(
            c.service.process,
            job_id,
            backoff_base=c.settings.retry_backoff_seconds,
            checkpoint=c.checkpoint,
        )

    def send(self, task: str, args: Sequence[Any], queue: str | None = None) -> None:
        """Run ``task``'s body with ``args`` (``queue`` is ignored: there is none)."""
        if task == names.PROCESS:
            self.enqueue(*args)
            return
        body = handlers.HANDLERS.get(task)
        if body is None:
            raise ValueError(f"no such task: {task}")
        try:
            body(self.container, *args)
        finally:
            self.container.checkpoint()

    def send_group(self, task: str, arg_lists: Sequence[Sequence[Any]]) -> None:
        """Run each member of the group in turn."""
        for args in arg_lists:
            self.send(task, args)
