"""Attack (issue 13, part 1): a KEK rotation racing an erasure must never resurrect a destroyed
subject key.

Two real connections to the same ledger (two ``Database`` engines), the interleaving forced with
threading events at the exact statement where it matters:

* the re-wrap reads the key (connection 1), the destroy commits (connection 2), the re-wrap
  writes (connection 1): the key stays destroyed, no wrapped bytes are left in the row, and the
  re-wrap reports the key lost (``KeyShreddedError``);
* on PostgreSQL also: the destroy has written but not committed (it holds the row lock) when the
  re-wrap's write arrives and waits on it; and two destroys racing record one audit entry.

The old read-check-update ``replace()`` fails the PostgreSQL tests: it wrote the new wrap over
the tombstone (``wrapped`` not NULL after the destroy committed). On SQLite every write
transaction is ``BEGIN IMMEDIATE``, so the same interleaving is serialised; the SQLite test keeps
that guarantee (and the compare-and-set) from regressing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from worker.crypto import KeyShreddedError, SubjectKeys, WrappedSubjectKey
from worker.crypto.keyring_local import LocalKeyring
from worker.crypto.subject_keys import subject_key_context
from worker.ledger.db import Database
from worker.ledger.models import AuditEntry, SubjectKeyRow
from worker.ledger.subject_keys import LedgerSubjectKeyStore

WAIT = 10.0  # seconds any step may take before the test calls it a hang


@dataclass(frozen=True)
class Ledger:
    """Two independent engines (connection 1: the re-wrap, connection 2: the eraser)."""

    keys: SubjectKeys
    one: LedgerSubjectKeyStore
    two: LedgerSubjectKeyStore
    observer: Database


def _ledger(url: str, tmp_path: Path) -> Iterator[Ledger]:
    dbs = [Database(url) for _ in range(3)]
    dbs[0].migrate()
    keyring = LocalKeyring(tmp_path / "keys" / "kek.json")
    one = LedgerSubjectKeyStore(dbs[0])
    try:
        yield Ledger(SubjectKeys(keyring, one), one, LedgerSubjectKeyStore(dbs[1]), dbs[2])
    finally:
        for db in dbs:
            db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """The ledger on SQLite (a file) or PostgreSQL (a fresh database)."""
    if request.param == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
    else:
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    yield from _ledger(url, tmp_path)


@pytest.fixture
def pg_ledger(pg_url: str, tmp_path: Path) -> Iterator[Ledger]:
    """PostgreSQL only: interleavings inside a transaction (SQLite serialises whole write
    transactions from BEGIN IMMEDIATE, so they cannot happen there)."""
    yield from _ledger(pg_url, tmp_path)


def _row(ledger: Ledger, key_id: str) -> tuple[bytes | None, Any]:
    with ledger.observer.session() as s:
        row = s.execute(
            select(SubjectKeyRow.wrapped, SubjectKeyRow.destroyed_at).where(
                SubjectKeyRow.key_id == key_id
            )
        ).one()
        return row[0], row[1]


def _destroy_entries(ledger: Ledger, key_id: str) -> int:
    with ledger.observer.session() as s:
        return int(
            s.scalar(
                select(func.count()).where(
                    AuditEntry.event == "subject_key.destroyed", AuditEntry.entity == key_id
                )
            )
            or 0
        )


def _rewrapped(ledger: Ledger, key_id: str) -> WrappedSubjectKey:
    """What a rotation computes from the row it read: the same key under a new KEK version."""
    record = ledger.one.get(key_id)  # connection 1 reads the live row
    keyring = ledger.keys.keyring
    keyring.rotate()
    ctx = subject_key_context(key_id)
    return WrappedSubjectKey(key_id, keyring.wrap(keyring.unwrap(record.wrapped, ctx), ctx))


class Pause:
    """Stops connection 1 at one hook until the test says go (once)."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()
        self.armed = False

    def __call__(self, *_args: Any, **_kw: Any) -> None:
        if self.armed:
            self.armed = False
            self.reached.set()
            assert self.go.wait(WAIT), "the test never released connection 1"


def _in_thread(fn: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, errors


def _pause_before_subject_key_update(db: Database, pause: Pause) -> None:
    def hook(_conn: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE SUBJECT_KEYS"):
            pause()

    event.listen(db.engine, "before_cursor_execute", hook)


def _destroy_between_read_and_write(ledger: Ledger, pause: Pause) -> None:
    key_id = ledger.keys.create()
    new_wrap = _rewrapped(ledger, key_id)
    pause.armed = True
    thread, errors = _in_thread(lambda: ledger.one.replace(new_wrap))
    assert pause.reached.wait(WAIT)
    ledger.two.destroy(key_id)  # connection 2: destroy, committed
    pause.go.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], KeyShreddedError), errors
    wrapped, destroyed_at = _row(ledger, key_id)
    assert wrapped is None and destroyed_at is not None
    with pytest.raises(KeyShreddedError):
        ledger.keys.unwrap(key_id)
    assert _destroy_entries(ledger, key_id) == 1


def test_destroy_committed_before_the_rewrap_transaction_wins(ledger: Ledger) -> None:
    """Read (conn 1) → destroy + commit (conn 2) → re-wrap transaction (conn 1)."""
    pause = Pause()
    # Before the re-wrap's transaction takes its connection (ahead of SQLite's BEGIN
    # IMMEDIATE, which holds the write lock until the transaction ends).
    event.listen(ledger.one.db.engine, "engine_connect", pause)
    _destroy_between_read_and_write(ledger, pause)


def test_destroy_committed_inside_the_rewrap_transaction_wins_pg(pg_ledger: Ledger) -> None:
    """Read (conn 1, also inside its own write transaction) → destroy + commit (conn 2) →
    re-wrap UPDATE (conn 1). The old read-check-update code wrote its wrap over the tombstone
    here."""
    pause = Pause()
    _pause_before_subject_key_update(pg_ledger.one.db, pause)
    _destroy_between_read_and_write(pg_ledger, pause)


def _pause_before_commit(db: Database, pause: Pause) -> None:
    event.listen(db.engine, "commit", pause)


def _wait_for_lock_waiter(observer: Database) -> None:
    """Until some backend of this database waits on a row lock (the re-wrap's UPDATE)."""
    import time

    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with observer.session() as s:
            waiting = s.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("connection 1 never waited on connection 2's lock")


def test_rewrap_waiting_on_an_uncommitted_destroy_loses_pg(pg_ledger: Ledger) -> None:
    """Destroy written, not committed (conn 2 holds the row) → re-wrap UPDATE waits (conn 1) →
    destroy commits → the re-wrap re-checks the committed row and touches nothing."""
    ledger = pg_ledger
    key_id = ledger.keys.create()
    new_wrap = _rewrapped(ledger, key_id)
    pause = Pause()
    _pause_before_commit(ledger.two.db, pause)
    pause.armed = True
    eraser, erase_errors = _in_thread(lambda: ledger.two.destroy(key_id))
    assert pause.reached.wait(WAIT)  # the destroy's UPDATE ran; its COMMIT has not
    rewrap, errors = _in_thread(lambda: ledger.one.replace(new_wrap))
    _wait_for_lock_waiter(ledger.observer)
    pause.go.set()
    eraser.join(WAIT)
    rewrap.join(WAIT)
    assert not eraser.is_alive() and not rewrap.is_alive() and not erase_errors
    assert len(errors) == 1 and isinstance(errors[0], KeyShreddedError), errors
    wrapped, destroyed_at = _row(ledger, key_id)
    assert wrapped is None and destroyed_at is not None
    assert _destroy_entries(ledger, key_id) == 1


def test_two_racing_destroys_are_audited_once_pg(pg_ledger: Ledger) -> None:
    """Destroy (conn 2) written, not committed → destroy (conn 1) waits → both end; one tombstone,
    one ``subject_key.destroyed`` audit entry."""
    ledger = pg_ledger
    key_id = ledger.keys.create()
    pause = Pause()
    _pause_before_commit(ledger.two.db, pause)
    pause.armed = True
    first, first_errors = _in_thread(lambda: ledger.two.destroy(key_id))
    assert pause.reached.wait(WAIT)
    second, second_errors = _in_thread(lambda: ledger.one.destroy(key_id))
    _wait_for_lock_waiter(ledger.observer)
    pause.go.set()
    first.join(WAIT)
    second.join(WAIT)
    assert not first_errors and not second_errors
    assert _row(ledger, key_id)[0] is None
    assert _destroy_entries(ledger, key_id) == 1


def test_rotation_after_erasure_leaves_the_tombstone(ledger: Ledger) -> None:
    """The whole rotation (``rewrap``) with a destroy committed between its read and write."""
    keep, doomed = ledger.keys.create(), ledger.keys.create()
    ledger.keys.keyring.rotate()
    pause = Pause()
    event.listen(ledger.one.db.engine, "engine_connect", pause)
    counted: list[int] = []

    def rotate() -> None:
        # arm only once the rotation has read ``doomed`` (its reads are connection 1's too)
        original_get = ledger.one.get

        def get(key_id: str) -> WrappedSubjectKey:
            record = original_get(key_id)
            pause.armed = key_id == doomed
            return record

        ledger.one.get = get  # type: ignore[method-assign]
        counted.append(ledger.keys.rewrap())

    thread, errors = _in_thread(rotate)
    assert pause.reached.wait(WAIT)
    ledger.two.destroy(doomed)
    pause.go.set()
    thread.join(WAIT)
    assert not errors and counted == [1]  # ``keep`` re-wrapped, ``doomed`` reported lost
    assert _row(ledger, doomed)[0] is None
    assert ledger.keys.load(keep)[1] == ledger.keys.keyring.current()
