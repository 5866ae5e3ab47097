"""SIGKILL a real worker mid-job — a pool child, or the whole worker (its process group) — on
Redis and on RabbitMQ, and check that every job still finishes exactly once.

Per kill, the time to redelivery is measured in the ledger: from the kill to the next claim of
the same job (``jobs.deliveries`` incremented, a new ``started_at``).

The jobs cycle through four kinds, so a kill lands in whichever is running: ``detect``, ``pta``
and ``ar`` on a 24-face image, and ``ar`` on a short generated video (48 frames, 640x480).

Bounded run (``make test``): 4 kills per broker (3 children, 1 whole worker).
Long run: ``FACEMEDIA_TEST_LONG=1 .venv/bin/python -m pytest tests/reliability/test_crash.py``
— 52 kills per broker (every 4th the whole worker), 104 in all.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.reliability.checks import (
    assert_exactly_once,
    assert_logs_clean,
    assert_no_input_in_files,
    assert_no_plaintext,
    delivery_times,
    distinctive,
    files_under,
    report,
)
from tests.reliability.conftest import LONG, Worker, distributed_settings, job_row
from tests.workers import wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.services]

KILLS = 52 if LONG else 4
MAX_DELIVERIES = 5


@dataclass(frozen=True)
class Kind:
    """One kind of job the kill test submits."""

    label: str
    job_type: str
    media: bytes
    params: dict[str, Any]
    outputs: frozenset[str]


def _kinds(image: bytes, video: bytes) -> list[Kind]:
    return [
        Kind("detect", "detect", image, {}, frozenset({"faces.json"})),
        Kind(
            "pta",
            "pta",
            image,
            {},
            frozenset({"avatar.json", "avatar.svg", "avatar.png", "avatar.glb"}),
        ),
        Kind("ar-image", "ar", image, {}, frozenset({"result.jpg"})),
        Kind("ar-video", "ar", video, {}, frozenset({"result.mp4"})),
    ]


def _victim(
    container: Any, job_ids: list[str], after: datetime
) -> tuple[str, int, datetime] | None:
    """A job being processed right now by the live worker: claimed after ``after`` (the last
    kill or restart), at least 0.3 s ago, with deliveries to spare before the poison limit."""
    from worker.ledger.models import Job

    t = datetime.now(UTC)
    with container.db.session() as s:
        for job in s.scalars(select(Job).where(Job.id.in_(job_ids), Job.status == "processing")):
            if (
                job.started_at is not None
                and job.started_at > after
                and job.started_at < t - timedelta(seconds=0.3)
                and job.lease_until is not None
                and job.lease_until > t
                and job.deliveries < MAX_DELIVERIES - 1
            ):
                return job.id, job.deliveries, job.started_at
    return None


def _queued(container: Any, job_ids: list[str]) -> int:
    from worker.ledger.models import Job

    with container.db.session() as s:
        return len(
            list(s.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.status == "queued")))
        )


def _diagnose(container: Any, job_ids: list[str], url: str) -> dict[str, Any]:
    """Where the unfinished jobs are: ledger state, and on Redis whether a message naming the
    job is in the queue or in the unacked hash."""
    from worker.ledger.models import Job

    with container.db.session() as s:
        open_jobs = {
            j.id: (j.status, j.deliveries, j.retries)
            for j in s.scalars(
                select(Job).where(Job.id.in_(job_ids), Job.status.in_(("queued", "processing")))
            )
        }
    found: dict[str, Any] = {"ledger": open_jobs}
    if url.startswith("redis"):
        import redis

        r = redis.Redis.from_url(url)
        queue = b"".join(r.lrange("media", 0, -1))
        unacked = b"".join(r.hvals("unacked"))
        found["llen"] = r.llen("media")
        found["unacked"] = r.hlen("unacked")
        found["where"] = {
            j: (
                "queue"
                if j.encode() in queue
                else "unacked"
                if j.encode() in unacked
                else "nowhere"
            )
            for j in open_jobs
        }
    return found


@pytest.mark.timeout(3600 if LONG else 420)
def test_sigkill_mid_job_every_job_finishes_once(
    rel_broker: tuple[str, str],
    pg_url: str,
    s3_bucket: str,
    s3_endpoint: str,
    tmp_path: Path,
    slow_jpeg: bytes,
    short_video: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.bootstrap import Container
    from worker.settings import load_settings

    broker, url = rel_broker
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(worker_tmp))  # the worker's temp files land here
    settings = distributed_settings(
        url, pg_url, s3_bucket, s3_endpoint, tmp_path / "var", max_deliveries=MAX_DELIVERIES
    )
    container = Container(load_settings(**settings))
    container.db.migrate()
    subject = f"crash-subject-{uuid.uuid4().hex[:8]}"
    (tmp_path / "logs").mkdir()
    worker = Worker(settings, tmp_path / "logs", concurrency=1)
    started = time.time()
    job_ids: list[str] = []
    kinds = _kinds(slow_jpeg, short_video)
    kind_of: dict[str, Kind] = {}
    kills: list[dict[str, Any]] = []
    last_sweep = [time.monotonic()]
    requeued: list[str] = []

    def beat() -> None:
        """What celery beat does in production: the sweep re-queues a job whose message was
        lost (kombu's Redis transport can drop one when a whole worker dies between taking it
        and recording it unacked) once it has sat queued past the visibility timeout."""
        if time.monotonic() - last_sweep[0] < 10:
            return
        last_sweep[0] = time.monotonic()
        for job_id in container.sweeper.run().requeued_ids:
            requeued.append(job_id)
            container.dispatcher.enqueue(job_id)

    def submit(n: int) -> None:
        for _ in range(n):
            kind = kinds[len(job_ids) % len(kinds)]
            job_id = container.client.submit(
                kind.media, kind.job_type, kind.params, subject_id=subject
            )
            job_ids.append(job_id)
            kind_of[job_id] = kind

    try:
        worker.start()
        assert worker.wait_children(), worker.logs()[-3000:]
        submit(6)
        after = datetime.now(UTC) - timedelta(seconds=1)
        for i in range(KILLS):
            mode = "whole" if i % 4 == 2 else "child"
            # Aim each kill at a kind in turn (whole-worker kills rotate through the kinds
            # too); take any running job if the wanted kind does not come up within 20 s.
            want = kinds[(i + i // 4) % len(kinds)]
            victim = None
            t_aim = time.monotonic()
            deadline = t_aim + 120
            while victim is None and time.monotonic() < deadline:
                if _queued(container, job_ids) < 2:  # keep the worker fed
                    submit(3)
                aimed = time.monotonic() - t_aim < 20
                candidates = [j for j in job_ids if kind_of[j] == want] if aimed else job_ids
                victim = _victim(container, candidates, after)
                if victim is None:
                    time.sleep(0.05)
            assert victim is not None, ("no job to kill", _diagnose(container, job_ids, url))
            job_id, deliveries, _ = victim
            t_kill = datetime.now(UTC)
            if mode == "child":
                worker.kill_child()
            else:
                worker.kill_all()
                worker.start()
            after = t_kill

            def redelivered(
                job_id: str = job_id, d0: int = deliveries, t0: datetime = t_kill
            ) -> bool:
                beat()
                _, d, s = job_row(container, job_id)
                return d > d0 and s is not None and s > t0

            assert wait_for(redelivered, timeout=120, interval=0.05), (
                mode,
                job_id,
                worker.logs()[-4000:],
            )
            _, _, s1 = job_row(container, job_id)
            assert s1 is not None
            kills.append(
                {
                    "mode": mode,
                    "job": job_id,
                    "kind": kind_of[job_id].label,
                    "seconds": (s1 - t_kill).total_seconds(),
                    "t_kill": t_kill,
                }
            )
            worker.wait_children()

        def done() -> bool:
            beat()
            states = [container.service.status(j) for j in job_ids]
            return all(s["status"] == "succeeded" and s["original_deleted"] for s in states)

        finished = wait_for(done, timeout=600 if LONG else 180, interval=0.5)
        statuses = {j: container.service.status(j) for j in job_ids}
        assert finished, (
            [(s["status"], s["error_code"]) for s in statuses.values()],
            worker.logs()[-3000:],
        )
    finally:
        worker.close()
    elapsed = time.time() - started

    # Exactly once: every job succeeded with its kind's result, one output set, one receipt.
    expected_faces = {"detect": 24, "pta": 24, "ar-image": 24, "ar-video": 1}
    for j, st in statuses.items():
        kind = kind_of[j]
        assert st["faces"] == expected_faces[kind.label], (kind.label, st)
        assert set(st["outputs"]) == kind.outputs, (kind.label, st)
    for k in kills:
        assert statuses[k["job"]]["deliveries"] >= 2  # the kill was recorded as a delivery
    assert_exactly_once(container, job_ids, s3_endpoint, s3_bucket)
    detect_job = next(j for j in job_ids if kind_of[j].label == "detect")
    doc = container.client.outputs(detect_job)["faces.json"]
    assert b'"faces"' in doc and doc.count(b'"score"') == 24

    # Nothing in plaintext: object versions, worker logs, the worker's temp dir, new /tmp files.
    logs = worker.logs()
    inputs = [slow_jpeg, short_video]
    scanned = assert_no_plaintext(s3_endpoint, s3_bucket, inputs, [("worker logs", logs)])
    # pytest's own temp root (every test's inputs, this run's and, under xdist, the other
    # workers') is not the worker's: leave it out
    pytest_root = next(p for p in tmp_path.parents if p.name.startswith("pytest-of-"))
    tmp_files = files_under(worker_tmp, started) + [
        p for p in files_under(Path("/tmp"), started) if pytest_root not in p.parents
    ]
    assert_no_input_in_files(tmp_files, [distinctive(x) for x in inputs])
    lines = assert_logs_clean(logs, [subject])
    assert lines > 0

    # The message's own return: the first delivery of the job after the kill, as the worker
    # logged it (a delivery that finds the dead holder's lease still live logs
    # job.leased_elsewhere and waits for the lease; one that finds it lapsed logs job.claimed).
    seen = delivery_times(logs)
    for k in kills:
        after_kill = [t for t in seen.get(k["job"], []) if t > k["t_kill"]]
        k["message_seconds"] = (
            (min(after_kill) - k["t_kill"]).total_seconds() if after_kill else None
        )
    by_mode = {m: sorted(k["seconds"] for k in kills if k["mode"] == m) for m in ("child", "whole")}
    figures: dict[str, dict[str, Any]] = {
        m: {
            "kills": len(v),
            "median_s": round(statistics.median(v), 2),
            "max_s": round(max(v), 2),
        }
        for m, v in by_mode.items()
        if v
    }
    for m, fig in figures.items():
        msg = [k["message_seconds"] for k in kills if k["mode"] == m]
        known = sorted(x for x in msg if x is not None)
        fig["message_back_median_s"] = round(statistics.median(known), 2) if known else None
        fig["message_back_max_s"] = round(max(known), 2) if known else None
        fig["message_back_unseen"] = len(msg) - len(known)
    report(
        "crash",
        broker=broker,
        jobs=len(job_ids),
        jobs_by_kind=dict(Counter(k.label for k in kind_of.values())),
        kills=len(kills),
        kills_by_kind=dict(Counter(k["kind"] for k in kills)),
        redelivery=figures,
        requeued_by_sweep=len(requeued),
        objects_scanned=scanned,
        log_lines_scanned=lines,
        seconds=round(elapsed, 1),
    )
    assert all(k["seconds"] <= 30 for k in kills), kills
    container.close()
