"""Subjects are recorded under HMAC-SHA256(service key, upstream subject id), never in clear.

The HMAC key is a service secret generated once, stored only wrapped by the keyring's KEK in the
``service_keys`` table, and unwrapped into memory when needed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from worker.crypto import KekRef, Keyring, SecretKey, WrappedKey
from worker.ledger.db import Database
from worker.ledger.models import ServiceKeyRow

_NAME = "subject-pseudonym"
_CONTEXT = {"purpose": _NAME}


class Pseudonymizer:
    """Turns an upstream subject id into the ledger's opaque subject hash."""

    def __init__(self, db: Database, keyring: Keyring) -> None:
        self.db = db
        self.keyring = keyring
        self._key: SecretKey | None = None

    def _load(self) -> SecretKey:
        if self._key is not None:
            return self._key
        with self.db.session() as s:
            row = s.get(ServiceKeyRow, _NAME)
            wrapped = (
                None
                if row is None
                else WrappedKey(KekRef(row.keyring_id, row.kek_version), row.wrapped)
            )
        if wrapped is None:
            raw = os.urandom(32)
            wrapped = self.keyring.wrap(raw, _CONTEXT)
            try:
                with self.db.session() as s:
                    s.add(
                        ServiceKeyRow(
                            name=_NAME,
                            keyring_id=wrapped.kek.keyring_id,
                            kek_version=wrapped.kek.version,
                            wrapped=wrapped.blob,
                            created_at=datetime.now(UTC),
                        )
                    )
            except IntegrityError:  # another process created it first: use theirs
                return self._load()
        self._key = SecretKey(self.keyring.unwrap(wrapped, _CONTEXT))
        return self._key

    def subject_hash(self, subject_id: str) -> str:
        """The hex HMAC of ``subject_id``; stable for the life of the service key."""
        if not subject_id:
            raise ValueError("subject id must not be empty")
        key = self._load()
        return hmac.new(key.raw(), subject_id.encode(), hashlib.sha256).hexdigest()

    def rewrap(self) -> bool:
        """Re-wrap the service key under the keyring's current KEK (after a rotation)."""
        key = self._load()
        wrapped = self.keyring.wrap(key.raw(), _CONTEXT)
        with self.db.session() as s:
            row = s.get(ServiceKeyRow, _NAME)
            if row is None:
                return False
            row.keyring_id = wrapped.kek.keyring_id
            row.kek_version = wrapped.kek.version
            row.wrapped = wrapped.blob
        return True
