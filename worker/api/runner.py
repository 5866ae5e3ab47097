"""Where a submitted job goes from the API: the broker, or a background thread here.

With a broker configured the API only enqueues (``facemedia.media.process`` with the job id),
exactly as :class:`worker.jobs.client.JobClient` does for any caller. With none (the embedded
default) the container's dispatcher would run the job *inline*, inside ``submit``, on the request
path; :class:`JobRunner` hands it instead to one background thread of this process, so the
``202`` goes out as soon as the original is stored. Jobs run one at a time (one face model per
process), under the decode memory ceiling (``decode_memory_limit_mb``), as ``facemedia run``
runs them. A job still waiting when the server stops stays ``queued``; the retention sweep
requeues or expires it like any job whose worker vanished. With no broker there is no beat
either: the server runs beat's schedule itself (:mod:`worker.api.schedule`), each pass handed to
this same thread (:meth:`JobRunner.call`), so a sweep that runs a requeued job never runs the
face model beside another job.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from worker.bootstrap import Container

log = structlog.get_logger("facemedia.api")


class JobRunner:
    """``enqueue`` and ``send`` for the API's job client: to the broker, or off the request
    path on a single background thread (embedded default)."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.dispatcher = container.dispatcher
        self.remote = bool(self.dispatcher.remote)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False
        self._idle = threading.Condition(self._lock)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="facemedia-jobs")
            self._pending += 1
            return self._pool

    def enqueue(self, job_id: str) -> None:
        """Send the job id to the broker, or queue it for the background thread."""
        if self.remote:
            self.dispatcher.enqueue(job_id)
            return
        self._executor().submit(self._run, self.dispatcher.enqueue, (job_id,), job_id)

    def send(self, task: str, args: Sequence[Any], queue: str | None = None) -> None:
        """A task by name (privacy tasks): to the broker, or on the background thread."""
        if self.remote:
            self.dispatcher.send(task, args, queue)
            return
        self._executor().submit(self._run, self.dispatcher.send, (task, args, queue), None)

    def call(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on the background thread, after the work handed over before it (the
        embedded schedule's passes), under the same memory ceiling; an exception it raises is
        logged by class name. False (nothing queued) once :meth:`close` ran, or with a broker."""
        if self.remote:
            return False
        with self._lock:
            if self._closed:
                return False
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="facemedia-jobs")
            pool = self._pool
            self._pending += 1
        try:
            pool.submit(self._run, fn, (), None)
        except RuntimeError:  # closed in between: shut down
            with self._lock:
                self._pending -= 1
                self._idle.notify_all()
            return False
        return True

    def _run(self, fn: Callable[..., None], args: tuple[Any, ...], job_id: str | None) -> None:
        from pipelines.media import memory_ceiling

        try:
            with memory_ceiling(self.container.settings.decode_memory_limit_mb):
                fn(*args)
        except Exception as exc:  # the job's own outcome is in the ledger; never crash the thread
            log.warning("api.background_failed", job_id=job_id, error=type(exc).__name__)
        finally:
            with self._lock:
                self._pending -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every background job handed over so far has run (tests, shutdown)."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    @property
    def pending(self) -> int:
        """Background jobs handed over and not finished yet."""
        return self._pending

    def close(self, wait: bool = False) -> None:
        """Stop taking work; ``wait``: let the queued jobs run first."""
        with self._lock:
            self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.shutdown(wait=wait, cancel_futures=not wait)
