"""Subjects are recorded under HMAC-SHA256(service key, upstream subject id), never in clear.

The HMAC key is a service secret generated once, stored only wrapped by the keyring's KEK in the
``service_keys`` table, and unwrapped into memory when needed.

Subjects are namespaced by tenant (issue 17): the default tenant's pseudonyms are the HMAC under
the service key itself (exactly as before tenancy, so existing subjects are still found); any
other tenant's are the HMAC under a key derived from the service key for that tenant
(``HMAC(service key, "facemedia-tenant-pseudonym-v1" ‖ 0 ‖ tenant)``), so tenant A's ``u1`` and
tenant B's ``u1`` have unrelated pseudonyms and neither can be computed from the other.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING

from worker.ledger.service_keys import ServiceSecret
from worker.ledger.tenants import DEFAULT_TENANT, check_tenant

if TYPE_CHECKING:
    from worker.crypto import Keyring, SecretKey
    from worker.ledger.db import Database

#: The pseudonym secret's name in ``service_keys``.
SECRET_NAME = "subject-pseudonym"
_TENANT_DOMAIN = b"facemedia-tenant-pseudonym-v1\x00"


def pseudonym(secret: SecretKey, subject_id: str, tenant: str = DEFAULT_TENANT) -> str:
    """The hex HMAC of ``subject_id`` in ``tenant``'s namespace under the pseudonym secret."""
    if not subject_id:
        raise ValueError("subject id must not be empty")
    check_tenant(tenant)
    key = secret.raw()
    if tenant != DEFAULT_TENANT:
        key = hmac.new(key, _TENANT_DOMAIN + tenant.encode(), hashlib.sha256).digest()
    return hmac.new(key, subject_id.encode(), hashlib.sha256).hexdigest()


class Pseudonymizer:
    """Turns an upstream subject id into the ledger's opaque subject hash."""

    def __init__(self, db: Database, keyring: Keyring) -> None:
        self._secret = ServiceSecret(db, keyring, SECRET_NAME, lambda: os.urandom(32))

    def subject_hash(self, subject_id: str, *, tenant: str = DEFAULT_TENANT) -> str:
        """The hex HMAC of ``subject_id`` in ``tenant``'s namespace; stable for the life of the
        service key."""
        return pseudonym(self._secret.get(), subject_id, tenant)

    def rewrap(self) -> bool:
        """Re-wrap the service key under the keyring's current KEK (after a rotation)."""
        return self._secret.rewrap()
