"""``facemedia serve`` on the embedded default (no broker, so no beat) runs beat's schedule
itself (worker/api/schedule.py): the same entries at the same intervals, each pass taken once
across ``--workers`` processes through the ledger, kept across restarts.

Over a real server process (tests/serving.py): a job left ``queued`` when a server stopped is
requeued and run, one left past the originals' maximum age is expired and its webhook posted,
signed, and outputs past their retention are deleted — with nobody running ``facemedia sweep``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.serving import facemedia_serve
from tests.webhooks.conftest import Receiver, receiver  # noqa: F401  (the fixture)
from tests.workers import settings_env
from worker.webhooks import HEADER, verify

EMBEDDED = {"broker_url": "", "database_url": "", "store_url": ""}


def _container(home: Path, **overrides: Any) -> Any:
    from worker.bootstrap import Container
    from worker.settings import load_settings

    return Container(load_settings(home=home, **{**EMBEDDED, **overrides}))


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "var"


def _probe(every: float, name: str = "probe") -> Any:
    """A cheap entry (the lease rescue's task) at ``every`` seconds."""
    from worker.dispatch import names
    from worker.dispatch.config import PeriodicTask

    return PeriodicTask(name, names.RESCUE, every, names.PRIVACY, every)


def _wait(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# ----- the schedule is beat's ---------------------------------------------------------------


def test_the_embedded_schedule_is_beats_and_every_entry_has_a_body(home: Path) -> None:
    """One list (``periodic_tasks``) makes beat's ``beat_schedule`` and the embedded schedule;
    ``schedule_interval`` moves both; every entry's task has the body the inline dispatcher
    runs."""
    from worker.api.runner import JobRunner
    from worker.api.schedule import EmbeddedSchedule
    from worker.dispatch import handlers, names
    from worker.dispatch.config import celery_config

    c = _container(home, schedule_interval=7)
    try:
        schedule = EmbeddedSchedule(c, JobRunner(c))
        beat = celery_config(c.settings)["beat_schedule"]
        assert [e.name for e in schedule.entries] == list(beat)
        for entry in schedule.entries:
            assert beat[entry.name]["task"] == entry.task
            assert beat[entry.name]["schedule"] == entry.every
            assert beat[entry.name]["options"]["expires"] == entry.expires
            assert entry.task in handlers.HANDLERS
        every = {e.task: e.every for e in schedule.entries}
        assert every[names.SWEEP] == every[names.RESCUE_WEBHOOKS] == 7.0
        assert every[names.RESCUE] == c.settings.rescue_interval
        # the sweep comes before the webhook rescue: a job it expired is posted in that pass
        tasks = [e.task for e in schedule.entries]
        assert tasks.index(names.SWEEP) < tasks.index(names.RESCUE_WEBHOOKS)
    finally:
        c.close()


def test_no_schedule_when_a_broker_takes_the_tasks(home: Path) -> None:
    from worker.api.runner import JobRunner
    from worker.api.schedule import start_schedule

    c = _container(home, broker_url="redis://127.0.0.1:6379/15")
    try:
        assert start_schedule(JobRunner(c)) is None  # beat runs it there
    finally:
        c.close()


# ----- one pass per interval across processes, kept across restarts -------------------------


def test_two_processes_run_each_due_pass_once(home: Path) -> None:
    """Two servers on one ledger (as ``--workers 2``): each due pass is taken by one of them,
    so together they take about one pass per interval (two schedules of their own would take
    two)."""
    import threading

    from worker.api.runner import JobRunner
    from worker.api.schedule import EmbeddedSchedule

    taken: list[tuple[float, int]] = []
    lock = threading.Lock()

    class Recording(JobRunner):
        def __init__(self, container: Any, index: int) -> None:
            super().__init__(container)
            self.index = index

        def call(self, fn: Callable[[], None]) -> bool:
            with lock:
                taken.append((time.monotonic(), self.index))
            return super().call(fn)

    every = 0.5
    a, b = _container(home), _container(home)
    schedules = [
        EmbeddedSchedule(c, Recording(c, i), [_probe(every)]) for i, c in enumerate([a, b])
    ]
    try:
        for schedule in schedules:
            schedule.start()
        _wait(lambda: len(taken) >= 9, 60, f"passes taken: {taken}")
        for schedule in schedules:
            schedule.stop()
        for schedule in schedules:
            schedule.runner.wait_idle(10)
        window = taken[-1][0] - taken[0][0]
        # (a take waits for SQLite's write lock after reading its clock: allow one interval)
        assert len(taken) <= window / every + 2, (window, taken)
        assert sum(s.ran["probe"] for s in schedules) >= 1
    finally:
        for schedule in schedules:
            schedule.runner.close()
        a.close()
        b.close()


def test_the_schedule_survives_a_restart_and_a_shorter_interval(home: Path) -> None:
    """A fresh ledger: first due one interval after the start (as beat). An entry that came due
    while the server was down runs at the next start's first tick; an interval shortened since
    applies at once."""
    from sqlalchemy import select, update

    from worker.api.runner import JobRunner
    from worker.api.schedule import PREFIX, EmbeddedSchedule
    from worker.ledger.models import Lock

    c = _container(home)
    runner = JobRunner(c)
    try:
        first = EmbeddedSchedule(c, runner, [_probe(3600.0)])
        first.start()
        _wait(lambda: "probe" in first._due, 10, "the schedule did not start")
        first.stop()
        with c.db.session() as s:
            due = s.scalar(select(Lock.expires_at).where(Lock.name == PREFIX + "probe"))
        assert due is not None
        assert timedelta(minutes=59) < due - datetime.now(UTC) <= timedelta(hours=1)
        assert first.ran["probe"] == 0

        # the server was down while the entry came due: the next start runs it at once
        with c.db.session() as s:
            s.execute(
                update(Lock)
                .where(Lock.name == PREFIX + "probe")
                .values(expires_at=datetime.now(UTC) - timedelta(minutes=5))
            )
        again = EmbeddedSchedule(c, runner, [_probe(3600.0)])
        again.start()
        _wait(lambda: again.ran["probe"] == 1, 10, "an overdue entry did not run at start")
        again.stop()

        # due in an hour, but the interval is now 0.3 s: it runs within about that
        shorter = EmbeddedSchedule(c, runner, [_probe(0.3)])
        shorter.start()
        _wait(lambda: shorter.ran["probe"] >= 2, 10, "a shortened interval was not applied")
        shorter.stop()
    finally:
        runner.close()
        c.close()


# ----- over a real ``facemedia serve`` --------------------------------------------------------


def _left_behind(home: Path, receiver_: Receiver, jpeg: bytes) -> tuple[str, str, str, str]:
    """Before the server starts: a key of tenant ``acme``, and two jobs submitted with a
    callback but never run (the server that took them stopped): one queued an hour ago (its
    message lost), one queued 25 hours ago (past the originals' 24 h). Returns (key, webhook
    secret, requeued job, expired job)."""
    from worker.jobs.client import JobClient

    c = _container(home)
    try:
        created = c.api_keys.create("acme", ["jobs:write", "jobs:read"])
        client = JobClient(
            c.db, c.records, c.subjects, lambda _job: None, c.settings.max_upload_bytes
        )
        jobs = [
            client.submit(
                jpeg,
                "detect",
                {},
                subject_id=f"left-{path}",
                tenant="acme",
                callback_url=receiver_.url(f"/{path}"),
                api_key_id=created.key_id,
            )
            for path in ("requeued", "expired")
        ]
        # their server stopped long ago: backdate the submissions
        from sqlalchemy import update

        from worker.ledger.models import Job

        now = datetime.now(UTC)
        with c.db.session() as s:
            for job_id, age in zip(jobs, (timedelta(hours=1), timedelta(hours=25)), strict=True):
                s.execute(update(Job).where(Job.id == job_id).values(created_at=now - age))
        c.checkpoint()
    finally:
        c.close()
    return created.key, created.webhook_secret, jobs[0], jobs[1]


def _store_keys(home: Path) -> set[str]:
    c = _container(home)
    try:
        return {e.key for e in c.store.entries()}
    finally:
        c.close()


def _events(home: Path, event: str) -> list[str]:
    """The timestamps of the audit log's ``event`` entries."""
    db = sqlite3.connect(home / "ledger.db")
    try:
        rows = db.execute("SELECT ts FROM audit_log WHERE event = ? ORDER BY seq", (event,))
        return [str(ts) for (ts,) in rows]
    finally:
        db.close()


def test_the_server_requeues_expires_posts_and_deletes_on_its_own(
    tmp_path: Path,
    home: Path,
    receiver: Receiver,  # noqa: F811  (the imported fixture)
    astronaut_jpeg: bytes,
) -> None:
    import httpx

    receiver.reset()
    key, secret, requeued, expired = _left_behind(home, receiver, astronaut_jpeg)
    env = settings_env(
        {
            "home": home,
            "schedule_interval": 1,
            "retention__outputs": "4s",
            "api__callback_allow_hosts": "127.0.0.1",
        }
    )
    auth = {"Authorization": f"Bearer {key}"}
    with (
        facemedia_serve(env, tmp_path / "serve.log", ready_s=60) as served,
        httpx.Client(base_url=served.url, headers=auth, timeout=30) as http,
    ):

        def status(job_id: str) -> dict[str, Any]:
            answer: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
            return answer

        # the sweep expired the old one: its original deleted, its webhook posted, signed
        _wait(lambda: bool(receiver.hits("/expired")), 60, str(status(expired)))
        [hit] = receiver.hits("/expired")
        assert verify(secret.encode(), hit.body, hit.headers[HEADER])
        doc = json.loads(hit.body)
        assert (doc["job_id"], doc["status"], doc["error_code"]) == (expired, "expired", "expired")
        assert b"left-expired" not in hit.body
        _wait(lambda: status(expired)["original_deleted"] is True, 30, str(status(expired)))

        # the lost one was requeued and ran on the server's job thread, then called back
        _wait(lambda: bool(receiver.hits("/requeued")), 120, str(status(requeued)))
        view = status(requeued)
        assert view["status"] == "succeeded" and view["original_deleted"] is True, view
        done = json.loads(receiver.hits("/requeued")[0].body)
        assert done["status"] == "succeeded" and done["outputs"], done
        names = done["outputs"]

        # its outputs, past their 4 s retention, are deleted by the server's next sweeps
        _wait(lambda: status(requeued)["outputs"] == [], 30, str(status(requeued)))
        for name in names:
            gone = http.get(f"/v1/jobs/{requeued}/outputs/{name}")
            assert (gone.status_code, gone.json()["error"]) == (404, "not_found")
    assert not {k for k in _store_keys(home) if requeued in k or expired in k}
    assert _events(home, "sweep.ran") and _events(home, "job.expired")
    assert len(_events(home, "job.requeued")) == 1
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_two_server_processes_sweep_once_per_interval(tmp_path: Path, home: Path) -> None:
    """``--workers 2``: both processes run the schedule thread, and between them they run the
    retention sweep about once a second (the interval), not twice."""
    _container(home).close()  # a ledger to start from
    env = settings_env({"home": home, "schedule_interval": 1, "log_level": "DEBUG"})
    log = tmp_path / "serve.log"

    def sweeps() -> list[str]:
        lines = log.read_text(errors="replace").splitlines()
        return [line for line in lines if '"schedule.retention-sweep"' in line]

    with facemedia_serve(env, log, workers=2, ready_s=60):
        _wait(lambda: len(_events(home, "sweep.ran")) >= 2, 90, "the server did not sweep")
        started = time.monotonic()
        before = len(sweeps())
        time.sleep(6.0)
        ran = len(sweeps()) - before
        window = time.monotonic() - started
    assert 1 <= ran <= window / 1.0 + 2, (ran, window)
    text = log.read_text()
    assert text.count("schedule.started") == 2, text[-3000:]
    assert len(_events(home, "sweep.ran")) >= 3
