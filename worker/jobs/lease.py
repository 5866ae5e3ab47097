"""The lease heartbeat: a claimed job's lease renewed while it runs.

A claim (:func:`worker.jobs.lifecycle.claim`) holds the job until ``lease_until``; while the job
runs, a background thread renews it every ``seconds / 3`` (:func:`worker.jobs.lifecycle.renew`),
so only a worker that stopped heartbeating (it died) lets the lease lapse and the job be taken
over or rescued.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from worker.jobs import lifecycle
from worker.ledger.db import Database

log = structlog.get_logger("facemedia.jobs")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Lease:
    """Renews a claim's expiry from a background thread while the ``with`` block runs."""

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
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def beat(self) -> bool:
        """Renew the lease once; False if it is no longer held (taken over or ended)."""
        until = self._clock() + timedelta(seconds=self._seconds)
        with self._db.session() as s:
            return lifecycle.renew(s, self._job_id, self._token, until)

    def _run(self) -> None:
        while not self._stop.wait(self._seconds / 3):
            try:
                self.beat()
            except Exception:  # a missed beat only shortens the lease; the job goes on
                log.warning("lease.heartbeat_failed", job_id=self._job_id)
