"""API keys of the HTTP API: who may call it, for which tenant, with which scopes and limits.

A key reads ``fmk_<key_id>_<secret>``: ``key_id`` (16 hex characters) names the row, ``secret``
is 32 random bytes in URL-safe base64. The ledger stores only the SHA-256 of the whole key text,
never the key: a key holds 256 random bits, so no password-hashing KDF (salt, work factor) is
needed - nobody can guess a preimage of a 256-bit random value, fast hash or not. A bearer is
checked by looking its row up by ``key_id`` and comparing the hashes with
:func:`hmac.compare_digest` (constant time; an unknown id is compared against a dummy hash so it
costs the same). :meth:`ApiKeyStore.authenticate` reads the row on every call, so a revoked key
fails at once; a caller that caches principals (the HTTP API with Redis, :mod:`worker.api.auth`)
learns revocations through ``on_revoke`` (the API's Redis revoked set), called by every
:meth:`ApiKeyStore.revoke` of a known key, so re-running a revocation re-announces it.

Each key also has a *webhook secret* (``whsec_...``) that signs the callbacks of the jobs it
submitted. The callback receiver must know it, so it cannot be a hash: it is stored wrapped under
the keyring's current KEK (columns ``keyring_id``, ``kek_version``, ``wrapped_webhook_secret``,
context ``{"purpose": "webhook-secret", "key_id": ...}``) and re-wrapped by every KEK epoch pass
(:func:`rewrap_webhook_secrets`, called by :class:`worker.retention.epochs.KeyEpochs`), so a
ledger backup taken before an epoch holds it only under a destroyed KEK. The HMAC key of the
signatures is the UTF-8 text of the whole ``whsec_...`` string, as printed at creation (what the
receiver holds; no decoding step on their side).

Creation and revocation are audited by key id (``apikey.created``, ``apikey.revoked``); the key,
its hash and the webhook secret never appear in the audit log, a repr or a log line.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from worker.crypto import KekRef, Keyring, WrappedKey
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.errors import LedgerError
from worker.ledger.models import ApiKeyRow

__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_RATE_PER_SECOND",
    "KEY_PREFIX",
    "REVOKED_SET",
    "SCOPES",
    "WEBHOOK_SECRET_PREFIX",
    "ApiKeyError",
    "ApiKeyStore",
    "BadScope",
    "CreatedKey",
    "Principal",
    "UnknownApiKey",
    "mark_revoked",
    "rewrap_webhook_secrets",
    "stale_webhook_secrets",
]

SCOPE_JOBS_WRITE = "jobs:write"
SCOPE_JOBS_READ = "jobs:read"
SCOPE_SUBJECTS_MANAGE = "subjects:manage"
SCOPES: frozenset[str] = frozenset({SCOPE_JOBS_WRITE, SCOPE_JOBS_READ, SCOPE_SUBJECTS_MANAGE})
"""Every scope a key may hold: submit jobs, read jobs and their outputs, exercise subjects'
rights (erase, withdraw consent, export, holds)."""

KEY_PREFIX = "fmk_"
WEBHOOK_SECRET_PREFIX = "whsec_"
DEFAULT_RATE_PER_SECOND = 20.0
DEFAULT_BURST = 40
"""Limits of a key created without its own, unless the store is given others (settings)."""

REVOKED_SET = "facemedia:apikeys:revoked"
"""The Redis set of revoked key ids (key ids only: never a key or its hash) that the API's
token-bucket script checks (:mod:`worker.api.ratelimit`)."""

_KEY_RE = re.compile(r"^fmk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_CONTEXT_PURPOSE = "webhook-secret"
_DUMMY_HASH = hashlib.sha256(b"facemedia-no-such-api-key").hexdigest()


class ApiKeyError(LedgerError):
    """A refused API key request; ``code`` is stable, the message is for humans."""

    code = "bad_api_key_request"


class BadScope(ApiKeyError):
    """A scope that is not one of :data:`SCOPES`, or no scope at all."""

    code = "bad_scope"


class BadLimit(ApiKeyError):
    """A rate or burst that is not positive."""

    code = "bad_limit"


class UnknownApiKey(ApiKeyError):
    """No API key has this id."""

    code = "not_found"


@dataclass(frozen=True)
class CreatedKey:
    """A key just created: the only time the key and the webhook secret exist in clear outside
    the caller's receiver. ``repr`` shows the id only."""

    key_id: str
    key: str = field(repr=False)
    webhook_secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"CreatedKey(key_id={self.key_id!r}, key=<hidden>, webhook_secret=<hidden>)"

    def to_json(self) -> dict[str, str]:
        """``{"key_id", "key", "webhook_secret"}``: printed once by ``apikey create --json``."""
        return {"key_id": self.key_id, "key": self.key, "webhook_secret": self.webhook_secret}


@dataclass(frozen=True)
class Principal:
    """The caller a valid bearer key stands for: its id, tenant, scopes and rate limit."""

    key_id: str
    tenant: str
    scopes: frozenset[str]
    rate_per_second: float
    burst: int

    def allows(self, scope: str) -> bool:
        """Whether the key holds ``scope``."""
        return scope in self.scopes


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _context(key_id: str) -> dict[str, str]:
    return {"purpose": _CONTEXT_PURPOSE, "key_id": key_id}


def _check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(scopes)
    unknown = sorted(chosen - SCOPES)
    if unknown:
        raise BadScope(f"unknown scope {unknown[0]!r}; scopes are {', '.join(sorted(SCOPES))}")
    if not chosen:
        raise BadScope(f"a key needs at least one scope of {', '.join(sorted(SCOPES))}")
    return chosen


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class ApiKeyStore:
    """API keys in the ledger's ``api_keys`` table; webhook secrets wrapped by ``keyring``."""

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        *,
        default_rate_per_second: float = DEFAULT_RATE_PER_SECOND,
        default_burst: int = DEFAULT_BURST,
        on_revoke: Callable[[str], None] | None = None,
    ) -> None:
        """``default_*``: the limits of keys created without their own (read at
        authentication, so changing the setting changes those keys' limits). ``on_revoke``:
        told the key id after every revocation has committed (the API's Redis revoked set)."""
        self.db = db
        self.keyring = keyring
        self.on_revoke = on_revoke
        self.default_rate_per_second = float(default_rate_per_second)
        self.default_burst = int(default_burst)

    def create(
        self,
        tenant: str,
        scopes: Iterable[str],
        *,
        rate_per_second: float | None = None,
        burst: int | None = None,
    ) -> CreatedKey:
        """A new key for ``tenant`` with ``scopes`` (each one of :data:`SCOPES`); raises
        :class:`BadScope`, :class:`BadLimit` or the tenant check's ``BadTenant``. The key and
        webhook secret are returned once and never stored in clear."""
        from worker.ledger.tenants import check_tenant

        tenant = check_tenant(tenant)
        chosen = _check_scopes(scopes)
        if rate_per_second is not None and not rate_per_second > 0:
            raise BadLimit("rate_per_second must be positive")
        if burst is not None and burst < 1:
            raise BadLimit("burst must be at least 1")
        key_id = secrets.token_hex(8)
        key = f"{KEY_PREFIX}{key_id}_{_b64(secrets.token_bytes(32))}"
        raw_secret = secrets.token_bytes(32)
        wrapped = self.keyring.wrap(raw_secret, _context(key_id))
        with self.db.session() as s:
            s.add(
                ApiKeyRow(
                    key_id=key_id,
                    tenant=tenant,
                    key_hash=_hash(key),
                    scopes=sorted(chosen),
                    rate_per_second=rate_per_second,
                    burst=burst,
                    keyring_id=wrapped.kek.keyring_id,
                    kek_version=wrapped.kek.version,
                    wrapped_webhook_secret=wrapped.blob,
                    created_at=datetime.now(UTC),
                )
            )
            s.flush()
            audit.append(s, "apikey.created", key_id, tenant=tenant, scopes=sorted(chosen))
        self._settle(key_id, raw_secret, wrapped)
        return CreatedKey(key_id, key, WEBHOOK_SECRET_PREFIX + _b64(raw_secret))

    def _settle(self, key_id: str, raw_secret: bytes, wrapped: WrappedKey) -> None:
        """After the insert, make sure the secret is under the KEK version current *now*, as
        :meth:`SubjectKeys.create` does: a process whose view of the keyring was a moment old
        when an epoch change began must not leave it under a version about to be destroyed
        (the epoch pass's barrier re-checks too). Compare-and-set: a re-wrap by the pass wins."""
        for _ in range(5):
            current = self.keyring.current()
            if wrapped.kek == current:
                return
            fresh = self.keyring.wrap(raw_secret, _context(key_id))
            with self.db.session() as s:
                done = s.execute(
                    update(ApiKeyRow)
                    .where(
                        ApiKeyRow.key_id == key_id,
                        ApiKeyRow.wrapped_webhook_secret == wrapped.blob,
                    )
                    .values(
                        keyring_id=fresh.kek.keyring_id,
                        kek_version=fresh.kek.version,
                        wrapped_webhook_secret=fresh.blob,
                    )
                )
            if not int(getattr(done, "rowcount", 0) or 0):
                return  # re-wrapped meanwhile by the epoch pass
            wrapped = fresh

    def authenticate(self, bearer: str) -> Principal | None:
        """The principal of a valid, unrevoked key; ``None`` for anything else (malformed, unknown
        id, wrong secret, revoked). The hash comparison is constant-time."""
        match = _KEY_RE.match(bearer.strip()) if isinstance(bearer, str) else None
        key_id = match.group(1) if match else ""
        row = self._auth_row(key_id) if match else None
        stored = row[0] if row is not None else _DUMMY_HASH
        given = _hash(bearer.strip()) if match else _hash("")
        same = hmac.compare_digest(str(stored).encode("ascii"), given.encode("ascii"))
        if row is None or not same:
            return None
        _, tenant, scopes, rate, burst, revoked = row
        if revoked is not None:
            return None
        if isinstance(scopes, str | bytes):  # SQLite's JSON column, read without the ORM
            scopes = json.loads(scopes)
        return Principal(
            key_id=key_id,
            tenant=str(tenant),
            scopes=frozenset(str(x) for x in scopes),
            rate_per_second=float(rate) if rate is not None else self.default_rate_per_second,
            burst=int(burst) if burst is not None else self.default_burst,
        )

    def _auth_row(self, key_id: str) -> tuple[Any, ...] | None:
        """(key_hash, tenant, scopes, rate_per_second, burst, revoked_at) of ``key_id``.

        On SQLite it reads on a pooled connection outside any transaction (a WAL reader never
        waits for a writer), not through a session, whose ``BEGIN IMMEDIATE`` would queue every
        request's authentication behind the job writes (p99 of seconds with one busy writer,
        measured); each call still sees the latest commit, so a revocation counts at once."""
        if self.db.dialect == "sqlite":
            raw = self.db.engine.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute(
                    "SELECT key_hash, tenant, scopes, rate_per_second, burst, revoked_at "
                    "FROM api_keys WHERE key_id = ?",
                    (key_id,),
                )
                found = cur.fetchone()
                cur.close()
            finally:
                raw.close()
            return None if found is None else tuple(found)
        with self.db.engine.connect() as conn:  # a read: no ORM session needed
            got = conn.execute(
                select(
                    ApiKeyRow.key_hash,
                    ApiKeyRow.tenant,
                    ApiKeyRow.scopes,
                    ApiKeyRow.rate_per_second,
                    ApiKeyRow.burst,
                    ApiKeyRow.revoked_at,
                ).where(ApiKeyRow.key_id == key_id)
            ).first()
        return None if got is None else tuple(got)

    def _view(self, row: ApiKeyRow) -> dict[str, Any]:
        return {
            "key_id": row.key_id,
            "tenant": row.tenant,
            "scopes": list(row.scopes),
            "rate_per_second": row.rate_per_second,
            "burst": row.burst,
            "created_at": _iso(row.created_at),
            "revoked_at": _iso(row.revoked_at),
            "revoked": row.revoked_at is not None,
        }

    def list(self, tenant: str | None = None) -> builtins.list[dict[str, Any]]:
        """Every key (of ``tenant``, or of all tenants), oldest first: id, tenant, scopes,
        limits (``None``: the default), created and revoked times. Never the key, its hash or
        the webhook secret."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.key_id)
        if tenant is not None:
            query = query.where(ApiKeyRow.tenant == tenant)
        with self.db.session() as s:
            return [self._view(row) for row in s.scalars(query)]

    def get(self, key_id: str) -> dict[str, Any] | None:
        """One key as :meth:`list` shows it, or ``None``."""
        with self.db.session() as s:
            row = s.get(ApiKeyRow, key_id)
            return None if row is None else self._view(row)

    def revoke(self, key_id: str) -> bool:
        """Revoke the key now (its next :meth:`authenticate` is ``None``, and ``on_revoke`` is
        told); ``True`` if it was live, ``False`` if unknown or already revoked. The webhook
        secret stays, so callbacks of jobs the key submitted before are still signed."""
        with self.db.session() as s:
            tenant = s.scalar(select(ApiKeyRow.tenant).where(ApiKeyRow.key_id == key_id))
            done = s.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.key_id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            changed = tenant is not None and bool(int(getattr(done, "rowcount", 0) or 0))
            if changed:
                audit.append(s, "apikey.revoked", key_id, tenant=str(tenant))
        if tenant is not None and self.on_revoke is not None:
            self.on_revoke(key_id)  # after the commit; again for a key revoked before
        return changed

    def webhook_secret(self, key_id: str) -> bytes:
        """The HMAC key that signs the callbacks of ``key_id``'s jobs: the UTF-8 bytes of its
        ``whsec_...`` text, unwrapped from the KEK. Raises :class:`UnknownApiKey`."""
        with self.db.session() as s:
            row = s.execute(
                select(
                    ApiKeyRow.keyring_id, ApiKeyRow.kek_version, ApiKeyRow.wrapped_webhook_secret
                ).where(ApiKeyRow.key_id == key_id)
            ).first()
        if row is None:
            raise UnknownApiKey("no such API key")
        wrapped = WrappedKey(
            KekRef(row.keyring_id, row.kek_version), bytes(row.wrapped_webhook_secret)
        )
        raw = self.keyring.unwrap(wrapped, _context(key_id))
        return (WEBHOOK_SECRET_PREFIX + _b64(raw)).encode("ascii")

    def __repr__(self) -> str:
        return "ApiKeyStore(<key hashes and wrapped webhook secrets in api_keys>)"


def mark_revoked(broker_url: str, key_id: str) -> None:
    """Add ``key_id`` to :data:`REVOKED_SET` in the Redis at ``broker_url``: the ``on_revoke``
    of the container's store (a no-op for another broker: the API's ledger buckets read the
    key's row on every request). A Redis that cannot be reached is logged, not raised: the
    revocation is committed in the ledger, which the API reads again within
    ``worker.api.auth.PRINCIPAL_TTL_S``."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return
    import redis
    import structlog

    try:
        with redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5) as r:
            r.sadd(REVOKED_SET, key_id)
    except redis.RedisError as exc:
        structlog.get_logger("facemedia.apikeys").warning(
            "apikey.revocation_not_announced", key_id=key_id, error=type(exc).__name__
        )


def rewrap_webhook_secrets(db: Database, keyring: Keyring, *, only_stale: bool = True) -> int:
    """Re-wrap every key's webhook secret (revoked keys' too) under the keyring's current KEK;
    return how many rows were written. Compare-and-set, as for service keys: a row is written
    only if it still holds the wrap that was read."""
    current = keyring.current()
    with db.session() as s:
        rows = [
            (r.key_id, KekRef(r.keyring_id, r.kek_version), bytes(r.wrapped_webhook_secret))
            for r in s.execute(
                select(
                    ApiKeyRow.key_id,
                    ApiKeyRow.keyring_id,
                    ApiKeyRow.kek_version,
                    ApiKeyRow.wrapped_webhook_secret,
                )
            )
        ]
    count = 0
    for key_id, kek, blob in rows:
        if only_stale and kek == current:
            continue
        context = _context(key_id)
        fresh = keyring.wrap(keyring.unwrap(WrappedKey(kek, blob), context), context)
        with db.session() as s:
            done = s.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.key_id == key_id, ApiKeyRow.wrapped_webhook_secret == blob)
                .values(
                    keyring_id=fresh.kek.keyring_id,
                    kek_version=fresh.kek.version,
                    wrapped_webhook_secret=fresh.blob,
                )
            )
            count += int(getattr(done, "rowcount", 0) or 0)
    return count


def stale_webhook_secrets(db: Database, current: KekRef) -> int:
    """How many webhook secrets are not wrapped under ``current`` (the epoch pass's barrier)."""
    from sqlalchemy import and_, func, not_

    with db.session() as s:
        count = s.scalar(
            select(func.count()).where(
                not_(
                    and_(
                        ApiKeyRow.keyring_id == current.keyring_id,
                        ApiKeyRow.kek_version == current.version,
                    )
                )
            )
        )
    return int(count or 0)
