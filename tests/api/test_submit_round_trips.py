"""Ledger round trips of one submission (issue 17: the HTTP ingest's cost), counted on
PostgreSQL with SQLAlchemy's engine events, as tests/spine/test_round_trips.py counts a job's.

A submission for a subject seen before is one transaction (the subject and its key read in
one statement, the job, the original's row, the audit entry, in that order: the audit chain's
lock is taken last, so nothing else runs under it) and, after the upload, one UPDATE of the
object's size and version in autocommit (no BEGIN/COMMIT round trips). The chain's lock and
head are read on the transaction's own DB-API cursor (one round trip), which the engine's
events do not see; that they serialise appenders is checked below with concurrent submissions
and a verified chain.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from worker.ledger import audit
from worker.ledger.models import AuditEntry, Job, StoredObject


@pytest.fixture
def traced(make_settings: Any, pg_url: str) -> Iterator[tuple[Any, list[tuple[str, str]]]]:
    """A container on PostgreSQL and the local store, its engine's transactions traced."""
    from worker.bootstrap import Container

    c = Container(make_settings(database_url=pg_url))
    c.client.enqueue = lambda job_id: None  # ledger and store only: no broker here
    events: list[tuple[str, str]] = []
    engine = c.db.engine
    event.listen(engine, "begin", lambda conn: events.append(("begin", "")))
    event.listen(engine, "commit", lambda conn: events.append(("commit", "")))
    event.listen(engine, "rollback", lambda conn: events.append(("rollback", "")))

    def on_sql(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        events.append(("sql", " ".join(statement.split())))

    event.listen(engine, "before_cursor_execute", on_sql)
    try:
        yield c, events
    finally:
        c.close()


def _transactions(events: list[tuple[str, str]]) -> list[list[str]]:
    out: list[list[str]] = []
    current: list[str] = []
    for kind, text in events:
        if kind == "begin":
            current = []
        elif kind in ("commit", "rollback"):
            out.append([*current, kind.upper()])
        else:
            current.append(text)
    return out


def test_a_known_subjects_submission_is_one_transaction_and_one_update(
    traced: tuple[Any, list[tuple[str, str]]], astronaut_jpeg: bytes
) -> None:
    c, events = traced
    c.client.submit(astronaut_jpeg, "detect", subject_id="rt-subject", tenant="acme")
    events.clear()
    job_id = c.client.submit(astronaut_jpeg, "detect", subject_id="rt-subject", tenant="acme")
    txs = _transactions(events)
    assert len(txs) == 2, "\n\n".join("\n".join(t) for t in txs)
    job_tx, stored_tx = txs
    assert job_tx[-1] == "COMMIT" and stored_tx[-1] == "COMMIT"
    kinds = [st.split(" (")[0] for st in job_tx[:-1]]
    assert len(kinds) == 4, job_tx
    assert "JOIN subject_keys" in job_tx[0] and job_tx[0].startswith("SELECT")
    assert kinds[1].startswith("INSERT INTO jobs")
    assert kinds[2].startswith("INSERT INTO objects")
    assert kinds[3].startswith("INSERT INTO audit_log")  # last: the chain's lock to the commit
    assert len(stored_tx) == 2 and stored_tx[0].startswith("UPDATE objects SET size")
    with c.db.session() as s:
        assert s.get(Job, job_id) is not None
        row = s.scalars(select(StoredObject).where(StoredObject.job_id == job_id)).one()
        assert row.size and row.stored_at is not None
        assert audit.verify(s).ok


def test_concurrent_submissions_keep_one_verified_chain(
    traced: tuple[Any, list[tuple[str, str]]], astronaut_jpeg: bytes
) -> None:
    c, _ = traced
    c.client.submit(astronaut_jpeg, "detect", subject_id="rt-subject", tenant="acme")
    errors: list[BaseException] = []

    def submit(n: int) -> None:
        try:
            for _ in range(n):
                c.client.submit(astronaut_jpeg, "detect", subject_id="rt-subject", tenant="acme")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(6,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with c.db.session() as s:
        report = audit.verify(s)
        submitted = s.scalars(
            select(AuditEntry.seq).where(AuditEntry.event == "job.submitted")
        ).all()
    assert report.ok, report.problems
    assert len(submitted) == 37
