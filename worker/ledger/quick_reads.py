"""The subject reads a short command makes over DB-API (:class:`~worker.ledger.db.QuickReader`),
without SQLAlchemy: ``facemedia crypto encrypt`` for a subject the ledger knows (its start-up is
in docs/BENCHMARKS.md, *CLI start-up*).

These are fast paths, never second answers: :func:`live_subject_key_id` answers only the plain
case (a subject known in the tenant, not erased, no erasure pending) and None for everything
else, which the caller then takes through :class:`~worker.ledger.subjects.SubjectRegistry`
(creation, a returning subject, the refusal of a pending erasure). A subject key's row decodes
through :func:`wrapped_subject_key`, which the ledger's own store
(:class:`~worker.ledger.subject_keys.LedgerSubjectKeyStore`) uses too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from worker.crypto import (
    KekRef,
    KeyNotFoundError,
    KeyShreddedError,
    KeyStoreError,
    SubjectKeyStore,
    WrappedKey,
    WrappedSubjectKey,
)
from worker.ledger.pseudonyms import SECRET_NAME, pseudonym
from worker.ledger.service_keys import read_service_secret
from worker.ledger.tenants import DEFAULT_TENANT

if TYPE_CHECKING:
    from worker.crypto import Keyring
    from worker.ledger.db import QuickReader

_LIVE_SUBJECT_SQL = (
    "SELECT key_id FROM subjects WHERE subject_hash = :digest AND tenant = :tenant"
    " AND erased_at IS NULL AND erase_requested_at IS NULL"
)
_SUBJECT_KEY_SQL = (
    "SELECT key_id, keyring_id, kek_version, wrapped, destroyed_at FROM subject_keys"
    " WHERE key_id = :key_id"
)


def wrapped_subject_key(
    key_id: str, keyring_id: str, kek_version: str, wrapped: Any, destroyed: bool
) -> WrappedSubjectKey:
    """A ``subject_keys`` row as the crypto port's value; :class:`KeyShreddedError` once the
    key was destroyed (its tombstone keeps no bytes)."""
    if destroyed or wrapped is None:
        raise KeyShreddedError("subject key destroyed")
    return WrappedSubjectKey(
        key_id=key_id, wrapped=WrappedKey(KekRef(keyring_id, kek_version), bytes(wrapped))
    )


def live_subject_key_id(
    reader: QuickReader, keyring: Keyring, subject_id: str, tenant: str = DEFAULT_TENANT
) -> str | None:
    """The subject key id of ``subject_id`` in ``tenant`` if the ledger knows it live (not
    erased, no erasure pending); None in every other case, the pseudonym secret not created
    yet included (the caller goes through ``SubjectRegistry.ensure``)."""
    secret = read_service_secret(reader, keyring, SECRET_NAME)
    if secret is None:
        return None
    digest = pseudonym(secret, subject_id, tenant)
    rows = reader.rows(_LIVE_SUBJECT_SQL, {"digest": digest, "tenant": tenant})
    return str(rows[0]["key_id"]) if rows else None


class QuickSubjectKeyStore(SubjectKeyStore):
    """The subject-key store port, read-only, over a :class:`QuickReader` (a short command
    that encrypts for a known subject); every write is refused."""

    def __init__(self, reader: QuickReader) -> None:
        self._reader = reader

    def get(self, key_id: str) -> WrappedSubjectKey:
        """The wrapped key; KeyShreddedError once destroyed, KeyNotFoundError if never created."""
        rows = self._reader.rows(_SUBJECT_KEY_SQL, {"key_id": key_id})
        if not rows:
            raise KeyNotFoundError("unknown subject key")
        row = rows[0]
        return wrapped_subject_key(
            row["key_id"],
            row["keyring_id"],
            row["kek_version"],
            row["wrapped"],
            row["destroyed_at"] is not None,
        )

    def add(self, wrapped: WrappedSubjectKey) -> None:
        """Refused: this store only reads."""
        raise KeyStoreError("read-only subject key store")

    def replace(self, wrapped: WrappedSubjectKey) -> None:
        """Refused: this store only reads."""
        raise KeyStoreError("read-only subject key store")

    def destroy(self, key_id: str) -> None:
        """Refused: this store only reads."""
        raise KeyStoreError("read-only subject key store")

    def ids(self) -> Iterator[str]:
        """Refused: this store only reads single keys."""
        raise KeyStoreError("read-only subject key store")
