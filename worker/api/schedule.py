"""Beat's schedule, run by ``facemedia serve`` itself when there is no broker.

With a broker, Celery beat sends the periodic tasks (:func:`worker.dispatch.config.
periodic_tasks`: the retention sweep, the lease rescue, the webhook rescue, the KEK epoch check,
...) and the workers run them. The embedded default has neither beat nor a worker, so
:class:`EmbeddedSchedule` runs the same entries at the same intervals in the server process: each
pass is what the Celery task runs (the task's body in :mod:`worker.dispatch.handlers`, through
the container's inline dispatcher), on the :class:`~worker.api.runner.JobRunner`'s one thread, so
passes and jobs run one at a time (a sweep that re-runs a stuck job never runs a second face
model beside another job).

When each entry is next due lives in the ledger: a row of the named locks table per entry
(``schedule:<entry>``), whose expiry is the entry's next due time. A due pass is taken by the
compare-and-set of :class:`worker.retention.locks.LedgerLock` (the entry's interval as its TTL),
so:

- with ``--workers N`` every process runs a schedule thread and each due pass is taken by exactly
  one of them; the others read the new due time and sleep until it. No leader to elect, and none
  to replace when a process dies;
- the schedule survives a restart: an entry that came due while the server was down runs at the
  first tick. On a fresh ledger every entry first comes due one interval after the first start,
  as with beat; an interval shortened since the last run is applied at once.

As with beat's message expiry, a pass still waiting behind jobs ``expires`` seconds after it came
due is dropped (the next comes), and an entry whose last pass has not run yet is not taken again.
A sweep that found more than one pass can do (``more``) goes on in a pass of its own, after the
jobs queued meanwhile, as the Celery task re-sends itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

import structlog

from worker.retention.sweep import utcnow  # wall-clock UTC: due times are shared through the ledger

if TYPE_CHECKING:
    from worker.api.runner import JobRunner
    from worker.bootstrap import Container
    from worker.dispatch.config import PeriodicTask

log = structlog.get_logger("facemedia.api")
# (log keys are allow-listed, worker/logs.py: an entry's name goes in the event, a constant)

#: The ledger lock name of an entry's due time is this prefix and the entry's name.
PREFIX = "schedule:"
#: The longest the schedule thread sleeps between two looks at the clock, seconds.
MAX_SLEEP_S = 60.0
#: After the ledger failed to answer, look again this soon (seconds, at most the interval).
RETRY_S = 5.0
_SEED_HOLDER = "schedule"


class EmbeddedSchedule:
    """Runs ``entries`` (default: beat's, from the container's settings) on ``runner``'s thread
    while started; see the module docstring. ``ran`` counts the passes this process ran."""

    def __init__(
        self,
        container: Container,
        runner: JobRunner,
        entries: Sequence[PeriodicTask] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        from worker.dispatch.config import periodic_tasks

        self.container = container
        self.runner = runner
        self.entries = tuple(periodic_tasks(container.settings) if entries is None else entries)
        self.clock = clock
        self.ran: dict[str, int] = {entry.name: 0 for entry in self.entries}
        self._due: dict[str, datetime] = {}
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----- the thread ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the schedule thread (a daemon: :meth:`stop` ends it)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="facemedia-schedule", daemon=True)
        self._thread.start()
        log.info("schedule.started", count=len(self.entries))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking passes and wait for the thread (a pass already handed to the job thread
        finishes there; one still waiting is dropped)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """True while the schedule thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        try:
            self._seed()
        except Exception as exc:  # the ledger is down: each entry one interval from now
            log.warning("schedule.seed_failed", exc_type=type(exc).__name__)
            now = self.clock()
            for entry in self.entries:
                self._due.setdefault(entry.name, now + timedelta(seconds=entry.every))
        while not self._stop.is_set():
            now = self.clock()
            for entry in self.entries:
                if self._stop.is_set():
                    return
                if self._due[entry.name] <= now:
                    self._tick(entry, now)
            if not self._due:
                return
            wait = (min(self._due.values()) - self.clock()).total_seconds()
            self._stop.wait(min(max(wait, 0.05), MAX_SLEEP_S))

    # ----- due times in the ledger --------------------------------------------------------------

    def _seed(self) -> None:
        """Read each entry's due time; create the rows of entries never seen (due one interval
        from now) and bring forward a due time past one interval from now (the interval was
        shortened). Two processes seeding at once: the loser reads the winner's rows."""
        from sqlalchemy import select, update
        from sqlalchemy.exc import IntegrityError

        from worker.ledger.models import Lock

        names = [PREFIX + entry.name for entry in self.entries]
        for attempt in range(3):
            now = self.clock()
            due: dict[str, datetime] = {}
            try:
                with self.container.db.session() as s:
                    rows: dict[str, datetime] = {
                        name: at
                        for name, at in s.execute(
                            select(Lock.name, Lock.expires_at).where(Lock.name.in_(names))
                        )
                    }
                    for entry in self.entries:
                        name, first = PREFIX + entry.name, now + timedelta(seconds=entry.every)
                        at = rows.get(name)
                        if at is None:
                            s.add(Lock(name=name, holder=_SEED_HOLDER, expires_at=first))
                            at = first
                        elif at > first:
                            s.execute(
                                update(Lock)
                                .where(Lock.name == name, Lock.expires_at > first)
                                .values(expires_at=first)
                            )
                            at = first
                        due[entry.name] = at
            except IntegrityError:
                if attempt == 2:
                    raise
                continue
            self._due.update(due)
            return

    def _tick(self, entry: PeriodicTask, now: datetime) -> None:
        """``entry`` is due by this process's clock: take the pass in the ledger and hand it to
        the job thread, or learn when the process that took it made it due next."""
        from worker.retention.locks import LedgerLock

        every = timedelta(seconds=entry.every)
        with self._lock:
            busy = entry.name in self._busy
        if busy:  # the last pass still waits behind jobs: this one is skipped (beat's expiry)
            self._due[entry.name] = now + every
            return
        try:
            lock = LedgerLock(self.container.db, PREFIX + entry.name, every, self.clock)
            if lock.acquire():
                self._due[entry.name] = self.clock() + every
                self._submit(entry, now)
            else:
                self._due[entry.name] = max(self._row_due(entry), now + timedelta(seconds=1))
        except Exception as exc:  # the ledger did not answer: try again soon
            log.warning(f"schedule.{entry.name}.ledger_error", exc_type=type(exc).__name__)
            self._due[entry.name] = now + timedelta(seconds=min(RETRY_S, entry.every))

    def _row_due(self, entry: PeriodicTask) -> datetime:
        """The due time another process set for ``entry`` (now, if the row is gone)."""
        from sqlalchemy import select

        from worker.ledger.models import Lock

        with self.container.db.session() as s:
            at = s.scalar(select(Lock.expires_at).where(Lock.name == PREFIX + entry.name))
        return at if at is not None else self.clock()

    # ----- the passes (on the job thread) -------------------------------------------------------

    def _submit(self, entry: PeriodicTask, due_at: datetime) -> None:
        with self._lock:
            self._busy.add(entry.name)
        if not self.runner.call(partial(self._run, entry, due_at)):
            with self._lock:
                self._busy.discard(entry.name)

    def _run(self, entry: PeriodicTask, due_at: datetime) -> None:
        """One pass of ``entry`` on the job thread; a sweep with more to do queues its next."""
        more = False
        try:
            waited = (self.clock() - due_at).total_seconds()
            if waited > entry.expires:
                log.info(f"schedule.{entry.name}.expired", duration_ms=round(waited * 1000))
                return
            if self._stop.is_set():
                return
            log.debug(f"schedule.{entry.name}")
            more = self._pass(entry)
            self.ran[entry.name] += 1
        except Exception as exc:  # logged here: the job thread must go on
            log.warning(f"schedule.{entry.name}.failed", exc_type=type(exc).__name__)
        finally:
            going_on = (
                more
                and not self._stop.is_set()
                and self.runner.call(partial(self._run, entry, self.clock()))
            )
            if not going_on:
                with self._lock:
                    self._busy.discard(entry.name)

    def _pass(self, entry: PeriodicTask) -> bool:
        """What the entry's Celery task runs; True when a sweep has more to do."""
        from worker.dispatch import handlers, names

        c = self.container
        if entry.task == names.SWEEP:  # the task's body, for its report (``more``)
            try:
                return bool(handlers.sweep(c).more)
            finally:
                c.checkpoint()
        c.dispatcher.send(entry.task, [], entry.queue)  # inline: the body, then the checkpoint
        return False


def start_schedule(runner: JobRunner) -> EmbeddedSchedule | None:
    """The embedded server's schedule, started; None when tasks go to a broker (beat runs the
    schedule there)."""
    if runner.remote:
        return None
    schedule = EmbeddedSchedule(runner.container, runner)
    schedule.start()
    return schedule
