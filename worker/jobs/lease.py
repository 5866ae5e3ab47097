"""The lease heartbeat: a claimed job's lease renewed while it runs.

A claim (:func:`worker.jobs.lifecycle.claim`) holds the job until ``lease_until``; while the job
runs, its lease is renewed every ``seconds / 3`` (:func:`worker.jobs.lifecycle.renew`), so only
a worker that stopped heartbeating (it died) lets the lease lapse and the job be taken over or
rescued.

One heartbeat thread per process beats every open lease when it is due (started on the first
lease, a daemon): a job costs no thread start and join, and a job shorter than a third of its
lease sends no heartbeat at all. A lease's block does not end while its beat is being sent, so
no renewal of a lease runs after its block.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from worker.jobs import lifecycle
from worker.ledger.db import Database

log = structlog.get_logger("facemedia.jobs")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Lease:
    """Renews a claim's expiry from the process's heartbeat thread while the ``with`` block
    runs."""

    def __init__(
        self,
        db: Database,
        job_id: str,
        token: str,
        seconds: int,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._db, self._job_id, self._token, self._seconds = db, job_id, token, seconds
        self._clock = clock
        self.interval = seconds / 3

    def __enter__(self) -> Lease:
        _heartbeat().add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _heartbeat().remove(self)

    def beat(self) -> bool:
        """Renew the lease once; False if it is no longer held (taken over or ended)."""
        until = self._clock() + timedelta(seconds=self._seconds)
        with self._db.session() as s:
            return lifecycle.renew(s, self._job_id, self._token, until)

    def beat_quietly(self) -> None:
        """:meth:`beat`, logging a failure (a missed beat only shortens the lease)."""
        try:
            self.beat()
        except Exception:  # the job goes on
            log.warning("lease.heartbeat_failed", job_id=self._job_id)


class _Heartbeat:
    """The process's heartbeat thread and the leases it keeps (each with its next beat)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[Lease, float] = {}
        self._beating: Lease | None = None
        self._thread: threading.Thread | None = None

    def add(self, lease: Lease) -> None:
        with self._cond:
            self._due[lease] = time.monotonic() + lease.interval
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="lease-heartbeat", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def remove(self, lease: Lease, timeout: float = 5.0) -> None:
        """Stop beating ``lease``; wait (up to ``timeout``) for a beat of it in flight."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._due.pop(lease, None)
            while self._beating is lease and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._due:
                    self._cond.wait()
                    continue
                lease, at = min(self._due.items(), key=lambda item: item[1])
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                self._due[lease] = time.monotonic() + lease.interval
                self._beating = lease
                self._cond.release()
                try:
                    lease.beat_quietly()
                finally:
                    self._cond.acquire()
                    self._beating = None
                    self._cond.notify_all()


_heart: _Heartbeat | None = None
_heart_lock = threading.Lock()


def _heartbeat() -> _Heartbeat:
    """The process's heartbeat (a new one in a forked child: threads do not survive a fork)."""
    global _heart
    with _heart_lock:
        if _heart is None:
            _heart = _Heartbeat()
        return _heart


def _forget_after_fork() -> None:
    global _heart, _heart_lock
    _heart, _heart_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
