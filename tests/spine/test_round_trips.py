"""Ledger round trips of one processed job, counted on PostgreSQL (issue 16: at most three).

SQLAlchemy's engine events see every transaction (``begin``/``commit``/``rollback``) and every
statement the service sends; the store's delete is logged into the same sequence, so the test
also checks the lifecycle's order: outputs recorded and state committed → original deleted →
deletion recorded. Submission is not counted (the job is submitted with no dispatcher, then
processed by one ``service.process`` call, as a worker's delivery does); the audit checkpoint
that ends every unit of work (a task, an inline run) is counted on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select, update

from worker.ledger.models import DeletionReceipt, Job, StoredObject
from worker.objects.layout import outputs_prefix


class Trace:
    """Transactions and statements on an engine, and store deletes, in the order they ran."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.on = False

    def add(self, kind: str, text: str = "") -> None:
        if self.on:
            self.events.append((kind, text))

    def transactions(self) -> list[list[str]]:
        """The statements of each transaction, in order (a store delete is a pseudo-statement
        ``STORE DELETE`` outside every transaction)."""
        out: list[list[str]] = []
        current: list[str] | None = None
        for kind, text in self.events:
            if kind == "begin":
                current = []
            elif kind in ("commit", "rollback"):
                assert current is not None
                out.append([*current, kind.upper()])
                current = None
            elif kind == "sql":
                assert current is not None, f"a statement outside a transaction: {text}"
                current.append(text)
        return out

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events if k != "sql"]


@pytest.fixture
def traced(make_settings: Any, pg_url: str) -> Iterator[tuple[Any, Trace]]:
    """A container on PostgreSQL and the local store, its engine and store deletes traced."""
    from worker.bootstrap import Container

    c = Container(make_settings(database_url=pg_url))
    c.client.enqueue = lambda job_id: None  # submit only: the test runs the delivery
    trace = Trace()
    engine = c.db.engine
    event.listen(engine, "begin", lambda conn: trace.add("begin"))
    event.listen(engine, "commit", lambda conn: trace.add("commit"))
    event.listen(engine, "rollback", lambda conn: trace.add("rollback"))

    def on_sql(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        trace.add("sql", " ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", on_sql)
    store = c.store
    real_delete_many = store.delete_many

    def delete_many(keys: Any, versions: Any = None) -> Any:
        trace.add("store_delete", ",".join(k.split("/")[0] for k in keys))
        return real_delete_many(keys, versions)

    store.delete_many = delete_many  # type: ignore[method-assign]
    try:
        yield c, trace
    finally:
        c.close()


def _run(c: Any, trace: Trace, job_id: str) -> str:
    trace.on = True
    try:
        return str(c.service.process(job_id).status)
    finally:
        trace.on = False


def _has(statements: list[str], *fragments: str) -> bool:
    return any(all(f in st for f in fragments) for st in statements)


def test_a_job_costs_three_ledger_transactions_in_the_lifecycle_order(
    traced: tuple[Any, Trace], astronaut_jpeg: bytes
) -> None:
    c, trace = traced
    c.client.submit(astronaut_jpeg, "detect", subject_id="warm")  # a first job: nothing lazy
    job_id = c.client.submit(astronaut_jpeg, "detect", subject_id="round-trips")
    assert _run(c, trace, job_id) == "succeeded"

    txs = trace.transactions()
    assert len(txs) == 3, "\n\n".join("\n".join(t) for t in txs)
    assert all(t[-1] == "COMMIT" for t in txs)
    claim, end, receipt = txs
    # 1. the claim: the compare-and-set returns the row, the subject and its key with it, in
    # the transaction's first statement (one round trip)
    assert _has(claim[:1], "WITH claimed AS (UPDATE jobs SET", "RETURNING", "JOIN subject_keys")
    assert _has(claim, "INSERT INTO audit_log")
    # 2. the end: outputs recorded, the state moved, audited, the original marked due
    assert _has(end, "INSERT INTO objects")
    assert _has(end, "UPDATE jobs SET status")
    # the tail's read (status, holds, erasure, the original) and the original marked due: the
    # transaction's first statement
    assert _has(end[:1], "WITH due AS (UPDATE objects SET expires_at", "JOIN subjects")
    assert _has(end, "INSERT INTO audit_log")
    assert _has(end, "INSERT INTO research_funnel", "ON CONFLICT")  # the sampler's decision
    # 3. the deletion record, after the store delete (and the state committed before it)
    assert _has(receipt, "deletion_receipts")
    assert trace.kinds() == [
        *["begin", "commit"] * 2,
        "store_delete",
        "begin",
        "commit",
    ]
    everything = [st for t in txs for st in t]
    assert not _has(everything, "UPDATE jobs SET lease_until")  # no heartbeat: a short job
    assert sum("subject_keys" in st for st in everything) == 1  # no per-object key reads
    assert sum("UPDATE jobs SET status" in st for st in everything) == 2  # claim, end

    # The end of the unit of work (after every task): the signed audit checkpoint, counted on
    # its own line: one transaction, its object stored while it is open.
    trace.events.clear()
    trace.on = True
    c.checkpoint()
    trace.on = False
    (checkpoint,) = trace.transactions()
    assert checkpoint[-1] == "COMMIT" and _has(checkpoint, "INSERT INTO audit_checkpoints")

    with c.db.session() as s:
        original = s.scalars(
            select(StoredObject).where(
                StoredObject.job_id == job_id, StoredObject.object_class == "original"
            )
        ).one()
        assert original.deleted_at is not None
        assert s.get(DeletionReceipt, original.id) is not None
    assert c.client.outputs(job_id)["faces.json"].startswith(b"{")


def test_the_webhook_hook_runs_after_the_deletion_in_no_transaction(
    traced: tuple[Any, Trace], astronaut_jpeg: bytes
) -> None:
    c, trace = traced
    called: list[tuple[str, int]] = []
    c.service.on_ended = lambda job_id: called.append((job_id, len(trace.events)))
    plain = c.client.submit(astronaut_jpeg, "detect", subject_id="hook-a")
    assert _run(c, trace, plain) == "succeeded"
    assert called == []  # no callback URL: nothing to schedule

    job_id = c.client.submit(astronaut_jpeg, "detect", subject_id="hook-b")
    with c.db.session() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(callback_url="https://example.org/hook", api_key_id="k" * 32)
        )
    trace.events.clear()
    assert _run(c, trace, job_id) == "succeeded"
    assert len(trace.transactions()) == 3  # the hook costs no transaction
    assert called == [(job_id, len(trace.events))]  # after the deletion's commit, the last event
    assert trace.events[-1][0] == "commit"
    with c.db.session() as s:
        assert s.scalar(select(Job.webhook_state).where(Job.id == job_id)) == "pending"
        assert s.scalar(select(Job.webhook_state).where(Job.id == plain)) is None


def test_an_erasure_while_the_job_runs_records_no_outputs(
    traced: tuple[Any, Trace], astronaut_jpeg: bytes
) -> None:
    """The key is read with the claim, so an erasure requested mid-job cannot stop the outputs
    being sealed: the transaction that would record them sees the erasure and writes nothing;
    the job fails ``subject_erased`` and its outputs are removed from the store."""
    c, _trace = traced
    job_id = c.client.submit(astronaut_jpeg, "detect", subject_id="erased-mid-job")
    subject = c.client.subject_ref("erased-mid-job")
    assert subject is not None

    def erase_meanwhile(job_id: str, media: bytes, **rows: Any) -> None:
        c.rights.erase(subject)  # after the outputs were sealed and stored

    c.service.sampler = erase_meanwhile
    assert c.service.process(job_id).status == "failed"
    status = c.service.status(job_id)
    assert (status["error_code"], status["outputs"]) == ("subject_erased", [])
    assert list(c.store.keys(outputs_prefix(job_id))) == []
    with c.db.session() as s:
        rows = s.scalars(select(StoredObject).where(StoredObject.job_id == job_id)).all()
        assert [r.object_class for r in rows] == ["original"] and rows[0].deleted_at is not None
