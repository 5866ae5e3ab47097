"""Tenants: every subject, job and audit entry belongs to one (issue 17).

A tenant id is a short lowercase slug (``^[a-z0-9][a-z0-9_-]{0,31}$``) chosen by the operator
when an API key is created; it is an organisational label, never personal data. Data written
before tenancy existed, and everything the CLI does without ``--tenant``, belongs to
:data:`DEFAULT_TENANT`.

Subjects are namespaced by tenant: the subject pseudonym of tenant ``T``'s upstream id ``u1`` is
an HMAC under a key derived for ``T`` (:func:`worker.ledger.pseudonyms.Pseudonymizer.subject_hash`),
so tenant A's ``u1`` and tenant B's ``u1`` are two unrelated subjects. The default tenant keeps
the pseudonyms it had before tenancy, so existing subjects are still found.
"""

from __future__ import annotations

import re

from worker.ledger.errors import LedgerError

DEFAULT_TENANT = "default"
"""The tenant of pre-tenancy data and of the CLI without ``--tenant``."""

TENANT_MAX_CHARS = 32
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class BadTenant(LedgerError):
    """A tenant id that is not a slug (``^[a-z0-9][a-z0-9_-]{0,31}$``)."""

    code = "bad_tenant"

    def __init__(self) -> None:
        super().__init__(
            "a tenant id is 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter "
            "or digit"
        )


def check_tenant(value: str) -> str:
    """``value`` if it is a valid tenant id, else :class:`BadTenant` (the value is not echoed)."""
    if not isinstance(value, str) or _TENANT.fullmatch(value) is None:
        raise BadTenant()
    return value
