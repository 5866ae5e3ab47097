"""KEK epochs: cryptographic erasure that does not depend on a row being physically gone.

Destroying a subject key sets its row's bytes to NULL, but the old row version lives on in
PostgreSQL's heap until vacuum, in the WAL, its archives and every backup (on SQLite in the
``-wal`` file). Those copies are wrapped under a KEK version; once that version is destroyed they
are noise. An *epoch change* therefore:

1. makes a new current KEK (:meth:`Keyring.begin_epoch`: local - a new version in the file;
   KMS - another KMS key, recorded in ``kek_epochs`` so every process wraps under it);
2. re-wraps every live key under it, in one pass (:meth:`KeyEpochs.rewrap_all`, also used by
   ``facemedia keys rotate``): subject keys, every row of ``service_keys``, release keys, the
   API keys' webhook secrets;
3. re-checks that nothing live is left under an older version (a key created meanwhile by a
   process that still saw the old version), re-wrapping again if so;
4. destroys every older version (:meth:`Keyring.destroy`: local - the material is removed from
   the keyring file, atomically and fsynced; KMS - deletion scheduled with the 7-day window).

A destroyed subject key whose KEK version is still live is a *pending* cryptographic erasure.
Erasures are batched: beat runs :meth:`KeyEpochs.run` every :meth:`KeyEpochs.check_interval`
and it changes the epoch once the oldest pending erasure would otherwise wait longer than
``erasure_epoch_delay``; ``facemedia keys retire`` does it now. One pass at a time (a ledger
lock); a pass that crashed is resumed by the next (its ``kek_epochs`` row has no
``completed_at``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, bindparam, func, not_, select, update

from worker.crypto import KekRef, Keyring, SubjectKeys, WrappedKey
from worker.crypto.keyring_kms import KmsEpochState
from worker.crypto.subject_keys import subject_key_context
from worker.ledger import audit
from worker.ledger.api_keys import rewrap_webhook_secrets, stale_webhook_secrets
from worker.ledger.db import Database
from worker.ledger.models import KekEpoch, Release, ServiceKeyRow, SubjectKeyRow
from worker.ledger.service_keys import rewrap_all_service_keys
from worker.retention.locks import LedgerLock

__all__ = [
    "EpochBusy",
    "EpochError",
    "EpochResult",
    "ErasureStatus",
    "KeyEpochs",
    "PendingErasures",
    "RewrapCounts",
    "kms_epoch_state",
]

log = structlog.get_logger("facemedia.epochs")

LOCK_NAME = "kek-epoch"
_BARRIER_ROUNDS = 5
REWRAP_BATCH = 500
"""Subject keys re-wrapped per ledger transaction."""


def utcnow() -> datetime:
    """UTC now."""
    return datetime.now(UTC)


class EpochError(Exception):
    """An epoch pass could not finish; ``code`` is stable, the message is for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EpochBusy(EpochError):
    """Another epoch pass holds the lock."""

    def __init__(self) -> None:
        super().__init__("epoch_busy", "another KEK epoch pass is running; try again later")


@dataclass(frozen=True)
class PendingErasures:
    """Destroyed subject keys whose KEK version is still live, and the oldest destruction."""

    count: int
    oldest: datetime | None


@dataclass(frozen=True)
class RewrapCounts:
    """Keys re-wrapped under the current KEK by one pass."""

    subject_keys: int = 0
    service_keys: int = 0
    releases: int = 0
    webhook_secrets: int = 0

    def __add__(self, other: RewrapCounts) -> RewrapCounts:
        return RewrapCounts(
            self.subject_keys + other.subject_keys,
            self.service_keys + other.service_keys,
            self.releases + other.releases,
            self.webhook_secrets + other.webhook_secrets,
        )


@dataclass(frozen=True)
class EpochResult:
    """What one call of :meth:`KeyEpochs.run` did (``ran`` False: nothing was due)."""

    ran: bool
    pending_before: int
    kek_version: str
    epoch: int | None = None
    resumed: bool = False
    rewrapped: RewrapCounts = field(default_factory=RewrapCounts)
    versions_destroyed: tuple[str, ...] = ()
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view (KEK versions are key names or ARNs, never key material)."""
        return {
            "ran": self.ran,
            "epoch": self.epoch,
            "resumed": self.resumed,
            "pending_before": self.pending_before,
            "keys_rewrapped": self.rewrapped.subject_keys,
            "service_keys_rewrapped": self.rewrapped.service_keys,
            "releases_rewrapped": self.rewrapped.releases,
            "webhook_secrets_rewrapped": self.rewrapped.webhook_secrets,
            "versions_destroyed": list(self.versions_destroyed),
            "kek_version": self.kek_version,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class ErasureStatus:
    """Whether a destroyed subject key is beyond recovery from any copy of the ledger, and by
    when it will be (``None``: the key is not destroyed, e.g. an erasure waiting on a hold)."""

    complete: bool
    complete_by: datetime | None


def kms_epoch_state(db: Database, keyring_id: str) -> KmsEpochState | None:
    """The current KMS key and the destroyed ones, as the ``kek_epochs`` rows record them.

    Called on every KMS operation, also from inside a ledger transaction (the audit log wraps
    under the keyring while appending): on SQLite it reads on a pooled connection without a
    transaction (a WAL reader never waits for the writer), not through a write session.
    """
    rows: list[tuple[str, list[str], bool]] = []
    if db.dialect == "sqlite":
        raw = db.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(
                "SELECT kek_version, previous_versions, completed_at IS NOT NULL "
                "FROM kek_epochs WHERE keyring_id = ? ORDER BY id",
                (keyring_id,),
            )
            for version, previous, done in cur.fetchall():
                loaded = json.loads(previous) if isinstance(previous, str) else previous
                rows.append((str(version), [str(v) for v in loaded], bool(done)))
            cur.close()
        finally:
            raw.close()
    else:
        with db.session() as s:
            for version, previous, completed_at in s.execute(
                select(KekEpoch.kek_version, KekEpoch.previous_versions, KekEpoch.completed_at)
                .where(KekEpoch.keyring_id == keyring_id)
                .order_by(KekEpoch.id)
            ):
                rows.append((str(version), [str(v) for v in previous], completed_at is not None))
    if not rows:
        return None
    destroyed: set[str] = set()
    for _version, previous, done in rows:
        if done:
            destroyed.update(previous)
    current = rows[-1][0]
    destroyed.discard(current)
    return KmsEpochState(current=current, destroyed=frozenset(destroyed))


class KeyEpochs:
    """KEK epoch changes over a keyring, the ledger and an injected release re-wrap."""

    def __init__(
        self,
        db: Database,
        subject_keys: SubjectKeys,
        *,
        delay: timedelta = timedelta(hours=1),
        rewrap_releases: Callable[[], int] | None = None,
        clock: Callable[[], datetime] = utcnow,
        lock_ttl: timedelta = timedelta(hours=1),
    ) -> None:
        """``rewrap_releases`` re-wraps every live release key under the current KEK and
        returns how many releases (injected: this module does not import the research
        package)."""
        self.db = db
        self.subject_keys = subject_keys
        self.delay = delay
        self.rewrap_releases = rewrap_releases
        self.clock = clock
        self.lock_ttl = lock_ttl
        self._lock: LedgerLock | None = None  # held by a running pass: renewed as it goes

    @property
    def keyring(self) -> Keyring:
        """The keyring whose epochs this changes."""
        return self.subject_keys.keyring

    # ----- pending erasures ----------------------------------------------------------------

    def check_interval(self) -> timedelta:
        """How often beat should call :meth:`run` so no erasure waits longer than the delay:
        a twelfth of it, at most 5 minutes, at least 1 second."""
        return max(timedelta(seconds=1), min(self.delay / 12, timedelta(minutes=5)))

    def pending(self) -> PendingErasures:
        """Destroyed subject keys still wrapped (in some copy) under a live KEK version."""
        keyring = self.keyring
        live = keyring.versions()
        with self.db.session() as s:
            count, oldest = s.execute(
                select(func.count(), func.min(SubjectKeyRow.destroyed_at)).where(
                    SubjectKeyRow.destroyed_at.is_not(None),
                    SubjectKeyRow.keyring_id == keyring.keyring_id,
                    SubjectKeyRow.kek_version.in_(live),
                )
            ).one()
        return PendingErasures(int(count or 0), oldest)

    def due(self, pending: PendingErasures | None = None, now: datetime | None = None) -> bool:
        """Whether an epoch change is due: the oldest pending erasure would pass the delay
        before the next check."""
        pending = self.pending() if pending is None else pending
        if pending.count == 0 or pending.oldest is None:
            return False
        now = self.clock() if now is None else now
        return pending.oldest + self.delay - self.check_interval() <= now

    def erasure_status(self, key_id: str) -> ErasureStatus:
        """Whether the destroyed subject key ``key_id`` can no longer be unwrapped from any copy
        (its KEK version is destroyed, and on KMS the deletion window has passed)."""
        keyring = self.keyring
        with self.db.session() as s:
            row = s.execute(
                select(
                    SubjectKeyRow.keyring_id, SubjectKeyRow.kek_version, SubjectKeyRow.destroyed_at
                ).where(SubjectKeyRow.key_id == key_id)
            ).first()
            if row is None or row.destroyed_at is None:
                return ErasureStatus(False, None)
            destroyed_at: datetime = row.destroyed_at
            done_at = s.scalar(
                select(func.min(KekEpoch.completed_at)).where(
                    KekEpoch.keyring_id == row.keyring_id,
                    KekEpoch.completed_at >= destroyed_at,
                )
            )
        live = row.keyring_id == keyring.keyring_id and row.kek_version in keyring.versions()
        if live:
            by = destroyed_at + self.delay + keyring.destruction_delay
            return ErasureStatus(False, by)
        by = (done_at or destroyed_at) + keyring.destruction_delay
        return ErasureStatus(self.clock() >= by, by)

    # ----- the one re-wrap pass ------------------------------------------------------------

    def rewrap_all(self) -> RewrapCounts:
        """Re-wrap every live key under the keyring's current KEK version: subject keys (those
        not yet under it), every service secret, every live release's keys, every API key's
        webhook secret."""
        subject = self._rewrap_subject_keys()
        service = rewrap_all_service_keys(self.db, self.keyring)
        releases = self.rewrap_releases() if self.rewrap_releases is not None else 0
        webhooks = rewrap_webhook_secrets(self.db, self.keyring)
        return RewrapCounts(subject, service, releases, webhooks)

    def _rewrap_subject_keys(self) -> int:
        """Re-wrap live subject keys not under the current KEK, ``REWRAP_BATCH`` rows per
        transaction; returns how many were written.

        Each row is written by a compare-and-set (``WHERE key_id = :id AND destroyed_at IS NULL
        AND wrapped = :read``): a key destroyed, or re-wrapped by someone else, after it was
        read is left as it is - never resurrected, never overwritten with an older wrap. A row
        left stale that way is caught by the barrier in :meth:`run`. (One transaction per batch,
        not per key: a per-key commit costs a WAL flush each; see docs/BENCHMARKS.md.)
        """
        keyring = self.keyring
        current = keyring.current()
        write = (
            update(SubjectKeyRow)
            .where(
                SubjectKeyRow.key_id == bindparam("b_key_id"),
                SubjectKeyRow.destroyed_at.is_(None),
                SubjectKeyRow.wrapped == bindparam("b_read"),
            )
            .values(
                keyring_id=bindparam("b_keyring_id"),
                kek_version=bindparam("b_version"),
                wrapped=bindparam("b_wrapped"),
            )
        )
        written, after = 0, ""
        while True:
            with self.db.session() as s:
                rows = s.execute(
                    select(
                        SubjectKeyRow.key_id,
                        SubjectKeyRow.keyring_id,
                        SubjectKeyRow.kek_version,
                        SubjectKeyRow.wrapped,
                    )
                    .where(
                        SubjectKeyRow.key_id > after,
                        SubjectKeyRow.destroyed_at.is_(None),
                        SubjectKeyRow.wrapped.is_not(None),
                        not_(
                            and_(
                                SubjectKeyRow.keyring_id == current.keyring_id,
                                SubjectKeyRow.kek_version == current.version,
                            )
                        ),
                    )
                    .order_by(SubjectKeyRow.key_id)
                    .limit(REWRAP_BATCH)
                ).all()
            if not rows:
                return written
            after = str(rows[-1].key_id)
            if self._lock is not None and written % (20 * REWRAP_BATCH) == 0:
                self._lock.renew()  # a long pass keeps its lock
            params = []
            for key_id, keyring_id, version, blob in rows:
                assert blob is not None  # selected so
                context = subject_key_context(key_id)
                raw = keyring.unwrap(WrappedKey(KekRef(keyring_id, version), bytes(blob)), context)
                fresh = keyring.wrap(raw, context)
                params.append(
                    {
                        "b_key_id": key_id,
                        "b_read": bytes(blob),
                        "b_keyring_id": fresh.kek.keyring_id,
                        "b_version": fresh.kek.version,
                        "b_wrapped": fresh.blob,
                    }
                )
            with self.db.session() as s:
                s.connection().execute(write, params)
            written += len(params)

    def rotate(self, new_kek: str | None = None) -> tuple[KekRef, RewrapCounts]:
        """``facemedia keys rotate``: a new KEK version and the re-wrap pass; old versions stay
        live (nothing is destroyed; an epoch change does that)."""
        self.keyring.rotate(new_kek)
        counts = self.rewrap_all()
        current = self.keyring.current()
        with self.db.session() as s:
            audit.append(
                s,
                "keys.rotated",
                None,
                count=counts.subject_keys,
                service_keys=counts.service_keys,
                releases=counts.releases,
                webhook_secrets=counts.webhook_secrets,
            )
        return current, counts

    def _stale(self, current: KekRef) -> int:
        """Live keys (subject, service, release, webhook secret) not wrapped under
        ``current``."""
        under_current = and_(
            SubjectKeyRow.keyring_id == current.keyring_id,
            SubjectKeyRow.kek_version == current.version,
        )
        with self.db.session() as s:
            subjects = s.scalar(
                select(func.count()).where(
                    SubjectKeyRow.destroyed_at.is_(None), not_(under_current)
                )
            )
            services = s.scalar(
                select(func.count()).where(
                    not_(
                        and_(
                            ServiceKeyRow.keyring_id == current.keyring_id,
                            ServiceKeyRow.kek_version == current.version,
                        )
                    )
                )
            )
            releases: int | None = 0
            if self.rewrap_releases is not None:
                releases = s.scalar(
                    select(func.count()).where(
                        Release.revoked_at.is_(None),
                        not_(
                            and_(
                                Release.keyring_id == current.keyring_id,
                                Release.kek_version == current.version,
                            )
                        ),
                    )
                )
        webhooks = stale_webhook_secrets(self.db, current)
        return int(subjects or 0) + int(services or 0) + int(releases or 0) + webhooks

    # ----- the epoch change ----------------------------------------------------------------

    def run(self, *, force: bool = False) -> EpochResult:
        """Change the KEK epoch if an erasure is pending (and, unless ``force``, due), or finish
        a pass that crashed. Raises :class:`EpochBusy` if another pass runs."""
        started = time.monotonic()
        lock = LedgerLock(self.db, LOCK_NAME, self.lock_ttl, self.clock)
        if not lock.acquire():
            raise EpochBusy()
        self._lock = lock
        try:
            pending = self.pending()
            unfinished = self._unfinished()
            if unfinished is None and (pending.count == 0 or not (force or self.due(pending))):
                return EpochResult(
                    ran=False,
                    pending_before=pending.count,
                    kek_version=self.keyring.current().version,
                    seconds=time.monotonic() - started,
                )
            epoch_id, previous, resumed = self._begin(pending.count, unfinished)
            current = self.keyring.current()
            lock.renew()
            counts = self.rewrap_all()
            for _ in range(_BARRIER_ROUNDS):
                lock.renew()
                if self._stale(current) == 0:
                    break
                counts = counts + self.rewrap_all()
            else:
                raise EpochError(
                    "stale_keys",
                    "keys kept appearing under an old KEK version; the epoch pass will resume",
                )
            destroyed = self._destroy_old(current, previous)
            self.db.checkpoint()
            left = self._stale(current)
            if left:
                # Created by a process that still saw an old version: SubjectKeys.create
                # re-wraps its own key under the current version after inserting it.
                log.warning("keys.epoch_stale_after_destroy", count=left)
            with self.db.session() as s:
                row = s.get(KekEpoch, epoch_id)
                assert row is not None
                row.completed_at = self.clock()
                row.keys_rewrapped = counts.subject_keys
                audit.append(
                    s,
                    "keys.epoch",
                    None,
                    epoch=epoch_id,
                    pending=pending.count,
                    rewrapped=counts.subject_keys,
                    service_keys=counts.service_keys,
                    releases=counts.releases,
                    webhook_secrets=counts.webhook_secrets,
                    destroyed=len(destroyed),
                )
            result = EpochResult(
                ran=True,
                pending_before=pending.count,
                kek_version=current.version,
                epoch=epoch_id,
                resumed=resumed,
                rewrapped=counts,
                versions_destroyed=tuple(destroyed),
                seconds=time.monotonic() - started,
            )
            log.info(
                "keys.epoch",
                epoch=epoch_id,
                pending=pending.count,
                rewrapped=counts.subject_keys,
                destroyed=len(destroyed),
                seconds=round(result.seconds, 3),
            )
            return result
        finally:
            self._lock = None
            lock.release()

    def _unfinished(self) -> KekEpoch | None:
        """The newest epoch row of this keyring if its pass never completed."""
        with self.db.session() as s:
            row = s.scalars(
                select(KekEpoch)
                .where(KekEpoch.keyring_id == self.keyring.keyring_id)
                .order_by(KekEpoch.id.desc())
                .limit(1)
            ).first()
        if row is None or row.completed_at is not None:
            return None
        return row

    def _begin(self, pending: int, unfinished: KekEpoch | None) -> tuple[int, list[str], bool]:
        """Resume the unfinished epoch whose KEK is current, or begin a new one; returns the
        epoch id, the versions it destroys and whether it resumed."""
        keyring = self.keyring
        if unfinished is not None and unfinished.kek_version == keyring.current().version:
            return unfinished.id, [str(v) for v in unfinished.previous_versions], True
        before = keyring.versions()
        ref = keyring.begin_epoch()
        previous = [v for v in before if v != ref.version]
        with self.db.session() as s:
            if unfinished is not None:
                # Superseded (its KEK is no longer current): this epoch destroys its versions
                # too. Its row stays incomplete, so no process stops accepting them early.
                previous += [str(v) for v in unfinished.previous_versions if str(v) not in previous]
            row = KekEpoch(
                keyring_id=ref.keyring_id,
                kek_version=ref.version,
                previous_versions=[v for v in previous if v != ref.version],
                pending_erasures=pending,
                started_at=self.clock(),
            )
            s.add(row)
            s.flush()
            epoch_id = int(row.id)
        return epoch_id, [v for v in previous if v != ref.version], False

    def _destroy_old(self, current: KekRef, previous: list[str]) -> list[str]:
        """Destroy every KEK version but the current one; returns those destroyed now."""
        keyring = self.keyring
        live = [v for v in keyring.versions() if v != current.version]
        destroyed = []
        for version in sorted(set(live) | set(previous)):
            if version == current.version:
                continue
            keyring.destroy(version)
            destroyed.append(version)
        return destroyed

    def __repr__(self) -> str:
        return f"KeyEpochs(keyring={self.keyring!r}, delay={self.delay})"
