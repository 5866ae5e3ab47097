"""Subjects are recorded under HMAC-SHA256(service key, upstream subject id), never in clear.

The HMAC key is a service secret generated once, stored only wrapped by the keyring's KEK in the
``service_keys`` table, and unwrapped into memory when needed.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from worker.crypto import Keyring
from worker.ledger.db import Database
from worker.ledger.service_keys import ServiceSecret

_NAME = "subject-pseudonym"


class Pseudonymizer:
    """Turns an upstream subject id into the ledger's opaque subject hash."""

    def __init__(self, db: Database, keyring: Keyring) -> None:
        self._secret = ServiceSecret(db, keyring, _NAME, lambda: os.urandom(32))

    def subject_hash(self, subject_id: str) -> str:
        """The hex HMAC of ``subject_id``; stable for the life of the service key."""
        if not subject_id:
            raise ValueError("subject id must not be empty")
        key = self._secret.get()
        return hmac.new(key.raw(), subject_id.encode(), hashlib.sha256).hexdigest()

    def rewrap(self) -> bool:
        """Re-wrap the service key under the keyring's current KEK (after a rotation)."""
        return self._secret.rewrap()
