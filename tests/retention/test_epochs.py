"""KEK epochs (worker.retention.epochs): pending erasures, batching, one pass at a time, crash
and resume, the KMS key switch (moto's server over HTTP), ``keys rotate`` on the same re-wrap."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import select

from worker.crypto import (
    KeyringError,
    KeyShreddedError,
    KmsKeyring,
    LocalKeyring,
    SubjectKeys,
    SubjectKeyStore,
    WrappedSubjectKey,
)
from worker.crypto.key_store import InMemorySubjectKeyStore
from worker.crypto.subject_keys import subject_key_context
from worker.ledger.models import KekEpoch, ServiceKeyRow, SubjectKeyRow
from worker.retention.epochs import EpochBusy, KeyEpochs, kms_epoch_state
from worker.retention.locks import LedgerLock

REGION = "cn-north-1"


class Clock:
    """A settable clock starting now."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.t


def _subjects(container: Any, *names: str) -> dict[str, str]:
    """{name: ledger subject id}, created with keys."""
    return {n: container.subjects.ensure(n).id for n in names}


def _key_of(container: Any, subject_id: str) -> str:
    from worker.ledger.models import Subject

    with container.db.session() as s:
        row = s.get(Subject, subject_id)
        assert row is not None
        return str(row.key_id)


def test_pending_erasure_detected_and_completed_by_one_epoch(embedded: Any) -> None:
    ids = _subjects(embedded, "p-a", "p-b", "p-c")
    epochs: KeyEpochs = embedded.epochs
    assert epochs.pending().count == 0
    assert epochs.run().ran is False  # nothing pending: nothing to do
    embedded.rights.erase(ids["p-a"])
    pending = epochs.pending()
    assert pending.count == 1 and pending.oldest is not None
    status = epochs.erasure_status(_key_of(embedded, ids["p-a"]))
    assert status.complete is False and status.complete_by is not None

    result = epochs.run(force=True)
    assert result.ran and result.pending_before == 1
    assert result.versions_destroyed == ("v1",) and result.kek_version == "v2"
    assert result.rewrapped.subject_keys == 2  # p-b, p-c
    assert result.rewrapped.service_keys >= 1  # the pseudonym key at least
    assert epochs.pending().count == 0
    assert embedded.keyring.versions() == ["v2"]
    # Everything live opens under the new KEK; service secrets are all under it.
    for name in ("p-b", "p-c"):
        embedded.subject_keys.unwrap(_key_of(embedded, ids[name]))
    with embedded.db.session() as s:
        assert {r.kek_version for r in s.scalars(select(ServiceKeyRow))} == {"v2"}
    assert epochs.erasure_status(_key_of(embedded, ids["p-a"])).complete is True
    # The old KEK's material is gone from the keyring file (not only marked retired).
    doc = json.loads((embedded.settings.home_dir / "keys" / "kek.json").read_text())
    assert [k["version"] for k in doc["keks"]] == ["v2"]
    assert [r["version"] for r in doc["retired"]] == ["v1"]


def test_batching_waits_for_the_delay_then_one_pass_completes_every_erasure(
    embedded: Any,
) -> None:
    clock = Clock()
    epochs = KeyEpochs(embedded.db, embedded.subject_keys, delay=timedelta(hours=1), clock=clock)
    assert epochs.check_interval() == timedelta(minutes=5)
    ids = _subjects(embedded, "b-a", "b-b", "b-c")
    embedded.rights.erase(ids["b-a"])
    clock.t += timedelta(minutes=10)
    assert epochs.run().ran is False  # not due yet
    embedded.rights.erase(ids["b-b"])
    assert epochs.pending().count == 2
    clock.t += timedelta(minutes=44)  # the oldest erasure is 54 min old: still not due
    assert epochs.run().ran is False
    clock.t += timedelta(minutes=2)  # 56 min: the next check would be past the hour
    result = epochs.run()
    assert result.ran and result.pending_before == 2
    with embedded.db.session() as s:
        assert len(list(s.scalars(select(KekEpoch)))) == 1
    assert epochs.run().ran is False


def test_two_passes_never_run_at_once(embedded: Any) -> None:
    ids = _subjects(embedded, "l-a")
    embedded.rights.erase(ids["l-a"])
    other = LedgerLock(embedded.db, "kek-epoch", timedelta(minutes=5), lambda: datetime.now(UTC))
    assert other.acquire()
    with pytest.raises(EpochBusy):
        embedded.epochs.run(force=True)
    assert embedded.keyring.versions() == ["v1"]  # nothing touched
    other.release()
    assert embedded.epochs.run(force=True).ran


def test_a_pass_that_crashes_is_resumed_by_the_next(embedded: Any) -> None:
    ids = _subjects(embedded, "c-a", "c-b")
    embedded.rights.erase(ids["c-a"])
    calls = {"n": 0}

    def flaky_release_rewrap() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("worker killed mid-pass")
        return 0

    epochs = KeyEpochs(embedded.db, embedded.subject_keys, rewrap_releases=flaky_release_rewrap)
    with pytest.raises(RuntimeError):
        epochs.run(force=True)
    # Mid-pass: the new KEK is current, the old one still live (nothing lost), row incomplete.
    assert embedded.keyring.versions() == ["v1", "v2"]
    with embedded.db.session() as s:
        (row,) = list(s.scalars(select(KekEpoch)))
        assert row.completed_at is None and row.previous_versions == ["v1"]
    embedded.subject_keys.unwrap(_key_of(embedded, ids["c-b"]))

    result = epochs.run()  # not forced: an unfinished pass is always finished
    assert result.ran and result.resumed and result.versions_destroyed == ("v1",)
    assert embedded.keyring.versions() == ["v2"]
    embedded.subject_keys.unwrap(_key_of(embedded, ids["c-b"]))
    with embedded.db.session() as s:
        (row,) = list(s.scalars(select(KekEpoch)))
        assert row.completed_at is not None


def test_keys_rotate_rewraps_everything_and_keeps_old_versions(embedded: Any) -> None:
    from typer.testing import CliRunner

    from worker.cli import app

    ids = _subjects(embedded, "r-a", "r-b")
    run = CliRunner().invoke(app, ["keys", "rotate", "--json"])
    assert run.exit_code == 0, run.output
    data = json.loads(run.stdout)
    assert data["kek_version"] == "v2" and data["rewrapped"] == 2
    assert data["service_keys_rewrapped"] >= 1
    assert embedded.keyring.versions() == ["v1", "v2"]  # rotate destroys nothing
    for sid in ids.values():
        _key, kek = embedded.subject_keys.load(_key_of(embedded, sid))
        assert kek.version == "v2"
    # Nothing pending: `keys retire` has nothing to complete.
    retire = CliRunner().invoke(app, ["keys", "retire", "--yes", "--json"])
    assert retire.exit_code == 0 and json.loads(retire.stdout)["ran"] is False


def test_keys_retire_asks_first_unless_yes(embedded: Any) -> None:
    from typer.testing import CliRunner

    from worker.cli import app

    ids = _subjects(embedded, "y-a")
    embedded.rights.erase(ids["y-a"])
    # CliRunner is not a terminal: without --yes the command refuses (exit 2) and changes nothing;
    # the question on a real terminal is tested with a pty in tests/cli/.
    refused = CliRunner().invoke(app, ["keys", "retire", "--json"], input="y\n")
    assert refused.exit_code == 2 and "confirmation_required" in refused.stdout
    assert embedded.keyring.versions() == ["v1"]
    accepted = CliRunner().invoke(app, ["keys", "retire", "--yes", "--json"])
    assert accepted.exit_code == 0
    assert embedded.keyring.versions() == ["v2"]


def test_sqlite_connections_use_secure_delete(embedded: Any) -> None:
    with embedded.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1


class _RotatingStore(InMemorySubjectKeyStore):
    """A store whose first ``add`` lets another process change the KEK epoch just before it
    commits (the worker's view of the keyring was a moment old)."""

    def __init__(self, on_add: Callable[[], None]) -> None:
        super().__init__()
        self._on_add: Callable[[], None] | None = on_add

    def add(self, wrapped: WrappedSubjectKey) -> None:
        if self._on_add is not None:
            hook, self._on_add = self._on_add, None
            hook()
        super().add(wrapped)


def test_a_key_created_during_an_epoch_is_rewrapped_by_its_creator(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    worker_view = LocalKeyring(path)
    epoch_process = LocalKeyring(path)
    worker_view.current()  # creates v1

    def epoch_changes() -> None:
        epoch_process.begin_epoch()
        epoch_process.destroy("v1")

    store: SubjectKeyStore = _RotatingStore(epoch_changes)
    keys = SubjectKeys(worker_view, store)
    key_id = keys.create()
    assert store.get(key_id).wrapped.kek.version == "v2"
    keys.unwrap(key_id)


# ----- KMS: an epoch switches to a new KMS key ---------------------------------------------------


def _kms(moto_endpoint: str) -> Any:
    make: Any = boto3.client
    return make("kms", endpoint_url=moto_endpoint, region_name=REGION)


def _kms_container(
    make_settings: Callable[..., Any], endpoint: str, key_arn: str, **extra: Any
) -> Any:
    """A container whose keyring is the KMS key, built by bootstrap (moto's server)."""
    from worker.bootstrap import Container

    container = Container(make_settings(keyring=key_arn, kms_endpoint_url=endpoint, **extra))
    assert isinstance(container.keyring, KmsKeyring)
    return container


def test_kms_epoch_switches_key_and_schedules_deletion(
    moto_endpoint: str, make_settings: Callable[..., Any]
) -> None:
    kms = _kms(moto_endpoint)
    old = str(kms.create_key(Description="facemedia test KEK")["KeyMetadata"]["Arn"])
    container = _kms_container(make_settings, moto_endpoint, old)
    try:
        ids = _subjects(container, "k-a", "k-b")
        erased_key = _key_of(container, ids["k-a"])
        old_wrap = container.subject_keys.store.get(erased_key).wrapped
        container.rights.erase(ids["k-a"])
        epochs: KeyEpochs = container.epochs
        assert epochs.pending().count == 1
        result = epochs.run(force=True)
        assert result.ran and result.versions_destroyed == (old,)
        new = result.kek_version
        assert new != old and new.startswith(f"arn:aws-cn:kms:{REGION}:")
        meta = kms.describe_key(KeyId=old)["KeyMetadata"]
        assert meta["KeyState"] == "PendingDeletion"
        assert kms.describe_key(KeyId=new)["KeyMetadata"]["KeyState"] == "Enabled"
        # The ledger records the current key; a process configured with the old key follows it.
        state = kms_epoch_state(container.db, "kms")
        assert state is not None and state.current == new and old in state.destroyed
        fresh = KmsKeyring(old, kms, state=lambda: kms_epoch_state(container.db, "kms"))
        assert fresh.current().version == new
        assert fresh.versions() == [new]
        store = container.subject_keys.store
        live = store.get(_key_of(container, ids["k-b"]))
        assert live.wrapped.kek.version == new
        SubjectKeys(fresh, store).unwrap(live.key_id)
        # The erased key's pre-erasure wrap (a backup's copy) no longer opens.
        with pytest.raises(KeyringError):
            fresh.unwrap(old_wrap, subject_key_context(erased_key))
        # The bound on KMS is its deletion window.
        status = epochs.erasure_status(_key_of(container, ids["k-a"]))
        assert status.complete is False and status.complete_by is not None
        assert status.complete_by - datetime.now(UTC) > timedelta(days=6)
        assert epochs.pending().count == 0
    finally:
        container.close()


def test_kms_epoch_takes_the_next_key_of_the_operator_list(
    moto_endpoint: str, make_settings: Callable[..., Any]
) -> None:
    kms = _kms(moto_endpoint)
    arns = [
        str(kms.create_key(Description=f"facemedia KEK {i}")["KeyMetadata"]["Arn"])
        for i in range(2)
    ]
    container = _kms_container(make_settings, moto_endpoint, arns[0], kms_epoch_keys=[arns[1]])
    try:
        ids = _subjects(container, "o-a", "o-b")
        container.rights.erase(ids["o-a"])
        assert container.epochs.run(force=True).kek_version == arns[1]
        container.rights.erase(ids["o-b"])
        with pytest.raises(KeyringError, match="no unused KMS key"):
            container.epochs.run(force=True)
    finally:
        container.close()


def test_a_destroyed_key_stays_destroyed_after_an_epoch(embedded: Any) -> None:
    ids = _subjects(embedded, "d-a")
    key_id = _key_of(embedded, ids["d-a"])
    embedded.rights.erase(ids["d-a"])
    embedded.epochs.run(force=True)
    with pytest.raises(KeyShreddedError):
        embedded.subject_keys.unwrap(key_id)


class _DestroyingKeyring(LocalKeyring):
    """The keyring port as a worker sees it while an erasure commits: wrapping ``victim``'s key
    lets the erasure destroy it first (between the pass's read of the row and its write)."""

    def __init__(self, path: Path, on_wrap: Callable[[str], None]) -> None:
        super().__init__(path)
        self._on_wrap = on_wrap

    def wrap(self, key: bytes, context: Any) -> Any:
        self._on_wrap(str(context.get("facemedia:subject_key_id", "")))
        return super().wrap(key, context)


def test_a_key_destroyed_during_the_pass_is_not_resurrected(embedded: Any) -> None:
    ids = _subjects(embedded, "x-a", "x-b", "x-c")
    victim = _key_of(embedded, ids["x-b"])
    embedded.rights.erase(ids["x-a"])
    store = embedded.subject_keys.store

    def erase_victim(key_id: str) -> None:
        if key_id == victim:
            store.destroy(victim)

    keyring = _DestroyingKeyring(embedded.keyring.path, erase_victim)
    epochs = KeyEpochs(embedded.db, SubjectKeys(keyring, store))
    result = epochs.run(force=True)
    assert result.ran
    with pytest.raises(KeyShreddedError):
        store.get(victim)
    with embedded.db.session() as s:
        row = s.get(SubjectKeyRow, victim)
        assert row is not None and row.destroyed_at is not None
        assert row.wrapped is None  # no freshly wrapped key written over the tombstone
    embedded.subject_keys.unwrap(_key_of(embedded, ids["x-c"]))


def test_beat_checks_often_enough_and_the_task_runs_a_due_epoch(
    embedded: Any, make_settings: Callable[..., Any]
) -> None:
    import worker.tasks.privacy  # noqa: F401  (registers the task)
    from worker.celery_app import app
    from worker.dispatch.config import celery_config

    for delay, most in (("1h", 300.0), ("10m", 50.0), ("1d", 300.0)):
        entry = celery_config(make_settings(erasure_epoch_delay=delay))["beat_schedule"]
        assert entry["kek-epoch"]["task"] == "facemedia.privacy.kek_epoch"
        assert 0 < entry["kek-epoch"]["schedule"] <= most
    ids = _subjects(embedded, "t-a")
    embedded.rights.erase(ids["t-a"])
    task = app.tasks["facemedia.privacy.kek_epoch"]
    assert task.apply(throw=True).get()["ran"] is False  # pending, but not due for an hour
    embedded.epochs.clock = lambda: datetime.now(UTC) + timedelta(hours=1)
    assert task.apply(throw=True).get()["ran"] is True
    assert embedded.keyring.versions() == ["v2"]


def test_the_delay_setting_must_be_a_duration(make_settings: Callable[..., Any]) -> None:
    from pydantic import ValidationError

    assert make_settings(erasure_epoch_delay="15m").epoch_delay == timedelta(minutes=15)
    for bad in ("never", "until_revoked", "soon", "0m"):
        with pytest.raises(ValidationError):
            make_settings(erasure_epoch_delay=bad)
