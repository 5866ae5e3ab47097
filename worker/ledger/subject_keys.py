"""The ledger's implementation of the crypto package's subject-key store port.

Every write to a ``subject_keys`` row is one compare-and-set statement. A re-wrap (KEK rotation)
is ``UPDATE ... WHERE key_id = :id AND destroyed_at IS NULL``: a destroy committed at any moment
before it - even between the re-wrap's read of the row and its write - makes it touch no row,
and the re-wrap reports the key lost (:class:`KeyShreddedError`) instead of writing a freshly
wrapped key back over the tombstone. A destroy is ``UPDATE ... SET wrapped = NULL, destroyed_at
= now WHERE key_id = :id AND destroyed_at IS NULL``, audited only when it changed the row, so two
destroys racing each other record one ``subject_key.destroyed`` entry. On PostgreSQL a statement
that finds the row locked by an uncommitted writer waits for it and re-checks its ``WHERE`` on
the committed row; on SQLite every write transaction is ``BEGIN IMMEDIATE`` (serialised).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CursorResult, insert, select, update
from sqlalchemy.exc import IntegrityError

from worker.crypto import (
    KeyNotFoundError,
    KeyShreddedError,
    KeyStoreError,
    SubjectKeyStore,
    WrappedSubjectKey,
)
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import SubjectKeyRow
from worker.ledger.quick_reads import wrapped_subject_key

_K = SubjectKeyRow
_PLAIN = {"synchronize_session": False}


def _rowcount(result: Any) -> int:
    """Rows matched by an UPDATE (both drivers report matched rows, not changed ones)."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


class LedgerSubjectKeyStore(SubjectKeyStore):
    """Subject keys as rows, wrapped only; destroying one drops the bytes, keeps a tombstone."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key_id: str) -> WrappedSubjectKey:
        """The wrapped key; KeyShreddedError once destroyed, KeyNotFoundError if never created."""
        with self.db.session() as s:
            row = s.get(SubjectKeyRow, key_id)
            if row is None:
                raise KeyNotFoundError("unknown subject key")
            return wrapped_subject_key(
                row.key_id,
                row.keyring_id,
                row.kek_version,
                row.wrapped,
                row.destroyed_at is not None,
            )

    def add(self, wrapped: WrappedSubjectKey) -> None:
        """Insert a new subject key: one INSERT; an id that exists (live or tombstoned) is
        refused with KeyStoreError by the primary key, not by a read before the write."""
        try:
            with self.db.session() as s:
                s.execute(
                    insert(_K).values(
                        key_id=wrapped.key_id,
                        keyring_id=wrapped.wrapped.kek.keyring_id,
                        kek_version=wrapped.wrapped.kek.version,
                        wrapped=wrapped.wrapped.blob,
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            raise KeyStoreError("subject key id already exists") from None

    def replace(self, wrapped: WrappedSubjectKey) -> None:
        """Re-wrap a live key (KEK rotation) with one compare-and-set UPDATE.

        Raises KeyShreddedError if the key is destroyed - also when the destroy committed after
        the caller read the key - and KeyNotFoundError if the id was never created.
        """
        with self.db.session() as s:
            result = s.execute(
                update(_K)
                .where(_K.key_id == wrapped.key_id, _K.destroyed_at.is_(None))
                .values(
                    keyring_id=wrapped.wrapped.kek.keyring_id,
                    kek_version=wrapped.wrapped.kek.version,
                    wrapped=wrapped.wrapped.blob,
                ),
                execution_options=_PLAIN,
            )
            if _rowcount(result) == 1:
                return
            exists = s.scalar(select(_K.key_id).where(_K.key_id == wrapped.key_id))
        if exists is None:
            raise KeyNotFoundError("unknown subject key")
        raise KeyShreddedError("subject key destroyed")

    def destroy(self, key_id: str) -> None:
        """Crypto-shred: drop the wrapped bytes, keep the tombstone; idempotent, audited once.

        One compare-and-set UPDATE (``WHERE destroyed_at IS NULL``) sets the tombstone and
        clears the bytes together; only the statement that matched the row appends the audit
        entry, in its own transaction.
        """
        with self.db.session() as s:
            result = s.execute(
                update(_K)
                .where(_K.key_id == key_id, _K.destroyed_at.is_(None))
                .values(wrapped=None, destroyed_at=datetime.now(UTC)),
                execution_options=_PLAIN,
            )
            if _rowcount(result) == 1:
                audit.append(s, "subject_key.destroyed", key_id)
                return
            # Already a tombstone (or unknown): make sure no bytes survive under it.
            healed = s.execute(
                update(_K).where(_K.key_id == key_id, _K.wrapped.is_not(None)).values(wrapped=None),
                execution_options=_PLAIN,
            )
            if _rowcount(healed) == 1:
                return
            exists = s.scalar(select(_K.key_id).where(_K.key_id == key_id))
        if exists is None:
            raise KeyNotFoundError("unknown subject key")

    def ids(self) -> Iterator[str]:
        """Live key ids."""
        with self.db.session() as s:
            ids = list(
                s.scalars(select(SubjectKeyRow.key_id).where(SubjectKeyRow.destroyed_at.is_(None)))
            )
        yield from ids
