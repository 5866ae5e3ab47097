"""The ledger's implementation of the crypto package's subject-key store port."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import select

from worker.crypto import (
    KekRef,
    KeyNotFoundError,
    KeyShreddedError,
    KeyStoreError,
    SubjectKeyStore,
    WrappedKey,
    WrappedSubjectKey,
)
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import SubjectKeyRow


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
            if row.destroyed_at is not None or row.wrapped is None:
                raise KeyShreddedError("subject key destroyed")
            return WrappedSubjectKey(
                key_id=row.key_id,
                wrapped=WrappedKey(KekRef(row.keyring_id, row.kek_version), row.wrapped),
            )

    def add(self, wrapped: WrappedSubjectKey) -> None:
        """Insert a new subject key."""
        with self.db.session() as s:
            if s.get(SubjectKeyRow, wrapped.key_id) is not None:
                raise KeyStoreError("subject key id already exists")
            s.add(self._row(wrapped))

    def replace(self, wrapped: WrappedSubjectKey) -> None:
        """Re-wrap a live key (KEK rotation)."""
        with self.db.session() as s:
            row = s.get(SubjectKeyRow, wrapped.key_id)
            if row is None:
                raise KeyNotFoundError("unknown subject key")
            if row.destroyed_at is not None:
                raise KeyShreddedError("subject key destroyed")
            row.keyring_id = wrapped.wrapped.kek.keyring_id
            row.kek_version = wrapped.wrapped.kek.version
            row.wrapped = wrapped.wrapped.blob

    def destroy(self, key_id: str) -> None:
        """Crypto-shred: drop the wrapped bytes, keep the tombstone; idempotent and audited."""
        with self.db.session() as s:
            row = s.get(SubjectKeyRow, key_id)
            if row is None:
                raise KeyNotFoundError("unknown subject key")
            if row.destroyed_at is None:
                row.wrapped = None
                row.destroyed_at = datetime.now(UTC)
                audit.append(s, "subject_key.destroyed", key_id)

    def ids(self) -> Iterator[str]:
        """Live key ids."""
        with self.db.session() as s:
            ids = list(
                s.scalars(select(SubjectKeyRow.key_id).where(SubjectKeyRow.destroyed_at.is_(None)))
            )
        yield from ids

    @staticmethod
    def _row(wrapped: WrappedSubjectKey) -> SubjectKeyRow:
        return SubjectKeyRow(
            key_id=wrapped.key_id,
            keyring_id=wrapped.wrapped.kek.keyring_id,
            kek_version=wrapped.wrapped.kek.version,
            wrapped=wrapped.wrapped.blob,
            created_at=datetime.now(UTC),
        )
