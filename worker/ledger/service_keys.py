"""Service secrets (the subject-pseudonym HMAC key, the release signing key): generated once,
stored only wrapped by the keyring's KEK in the ``service_keys`` table, unwrapped into memory.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from worker.crypto import KekRef, Keyring, SecretKey, WrappedKey

if TYPE_CHECKING:  # the ORM is imported by the functions that use it (see read_service_secret)
    from worker.ledger.db import Database, QuickReader

#: The read of one secret's row, by name (:func:`read_service_secret`; the audit key's too).
SERVICE_KEY_SQL = "SELECT keyring_id, kek_version, wrapped FROM service_keys WHERE name = :name"


def service_key_context(name: str) -> dict[str, str]:
    """The encryption context every service secret is wrapped under."""
    return {"purpose": name}


def read_service_secret(reader: QuickReader, keyring: Keyring, name: str) -> SecretKey | None:
    """The secret ``name`` read over DB-API and unwrapped (a short command's read, without
    SQLAlchemy); None when it was never created (:meth:`ServiceSecret.get` creates it)."""
    rows = reader.rows(SERVICE_KEY_SQL, {"name": name})
    if not rows:
        return None
    row = rows[0]
    wrapped = WrappedKey(KekRef(row["keyring_id"], row["kek_version"]), bytes(row["wrapped"]))
    return SecretKey(keyring.unwrap(wrapped, service_key_context(name)))


class ServiceSecret:
    """One named service secret: load-or-create (the first writer wins a race), re-wrap."""

    def __init__(
        self, db: Database, keyring: Keyring, name: str, generate: Callable[[], bytes]
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.name = name
        self._generate = generate
        self._context = service_key_context(name)
        self._key: SecretKey | None = None

    def get(self) -> SecretKey:
        """The secret, created and stored wrapped on first use."""
        from sqlalchemy.exc import IntegrityError

        from worker.ledger.models import ServiceKeyRow

        if self._key is not None:
            return self._key
        with self.db.session() as s:
            row = s.get(ServiceKeyRow, self.name)
            wrapped = (
                None
                if row is None
                else WrappedKey(KekRef(row.keyring_id, row.kek_version), row.wrapped)
            )
        if wrapped is None:
            wrapped = self.keyring.wrap(self._generate(), self._context)
            try:
                with self.db.session() as s:
                    s.add(
                        ServiceKeyRow(
                            name=self.name,
                            keyring_id=wrapped.kek.keyring_id,
                            kek_version=wrapped.kek.version,
                            wrapped=wrapped.blob,
                            created_at=datetime.now(UTC),
                        )
                    )
            except IntegrityError:  # another process created it first: use theirs
                return self.get()
        self._key = SecretKey(self.keyring.unwrap(wrapped, self._context))
        return self._key

    def rewrap(self) -> bool:
        """Re-wrap the secret under the keyring's current KEK (after a rotation)."""
        from worker.ledger.models import ServiceKeyRow

        wrapped = self.keyring.wrap(self.get().raw(), self._context)
        with self.db.session() as s:
            row = s.get(ServiceKeyRow, self.name)
            if row is None:
                return False
            row.keyring_id = wrapped.kek.keyring_id
            row.kek_version = wrapped.kek.version
            row.wrapped = wrapped.blob
        return True

    def __repr__(self) -> str:
        return f"ServiceSecret({self.name!r}, <wrapped in service_keys>)"


def rewrap_all_service_keys(db: Database, keyring: Keyring, *, only_stale: bool = True) -> int:
    """Re-wrap every row of ``service_keys`` (whatever secret it holds: pseudonym key, signing
    key, audit key, ...) under the keyring's current KEK; return how many were re-wrapped.

    The context is ``{"purpose": name}``, as :class:`ServiceSecret` wraps it. A row is written
    only if it still holds the wrap that was read (compare-and-set), so a concurrent writer is
    never overwritten with an older secret.
    """
    from sqlalchemy import select, update

    from worker.ledger.models import ServiceKeyRow

    current = keyring.current()
    with db.session() as s:
        rows = [
            (r.name, KekRef(r.keyring_id, r.kek_version), bytes(r.wrapped))
            for r in s.scalars(select(ServiceKeyRow))
        ]
    count = 0
    for name, kek, blob in rows:
        if only_stale and kek == current:
            continue
        context = service_key_context(name)
        raw = keyring.unwrap(WrappedKey(kek, blob), context)
        wrapped = keyring.wrap(raw, context)
        with db.session() as s:
            done = s.execute(
                update(ServiceKeyRow)
                .where(ServiceKeyRow.name == name, ServiceKeyRow.wrapped == blob)
                .values(
                    keyring_id=wrapped.kek.keyring_id,
                    kek_version=wrapped.kek.version,
                    wrapped=wrapped.blob,
                )
            )
            count += int(getattr(done, "rowcount", 0) or 0)
    return count
