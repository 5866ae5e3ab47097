"""Who is calling: ``Authorization: Bearer <key>`` → :class:`~worker.ledger.api_keys.Principal`,
then the scope (403) and the key's rate limit (429).

With the Redis token buckets (a Redis broker) a key's principal is kept in memory for
:data:`PRINCIPAL_TTL_S` seconds, under the SHA-256 of the key (never the key), so a request
needs no ledger read: the bucket's Lua script, one Redis round trip the request makes anyway,
also answers whether the key was revoked (``apikey revoke`` adds it to a Redis set), so a
revoked key is refused from its next request on, and the cached principal is dropped. Should
that Redis set be lost (a flushed Redis), the ledger is read again at the latest after
:data:`PRINCIPAL_TTL_S`. With the ledger buckets (no Redis) the key's row is read on every
request, as is any key not in the cache. The check runs in a worker thread (the ledger and the
Redis client are sync). The key text is never logged, echoed or kept beyond the check.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from worker.api.errors import ApiError, forbidden, unauthorized
from worker.api.ratelimit import retry_after

if TYPE_CHECKING:
    from worker.api.app import ApiState
    from worker.ledger.api_keys import Principal

PRINCIPAL_TTL_S = 10.0
"""How long a key's principal is used without reading its ledger row again (Redis buckets
only): the bound on a revocation's delay should the Redis revoked set be lost."""
PRINCIPAL_CACHE_MAX = 4096
"""The most principals kept per process (the oldest half is dropped beyond it)."""


class PrincipalCache:
    """Principals by the SHA-256 of their key, each for ``ttl`` seconds (thread-safe)."""

    def __init__(
        self,
        ttl: float = PRINCIPAL_TTL_S,
        size: int = PRINCIPAL_CACHE_MAX,
        clock: object = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._items: dict[bytes, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def digest(bearer: str) -> bytes:
        """The cache's name for a key (its SHA-256; the key itself is never kept)."""
        return hashlib.sha256(bearer.encode("utf-8", "replace")).digest()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def get(self, digest: bytes) -> Principal | None:
        """The principal cached for ``digest``, if still fresh."""
        with self._lock:
            found = self._items.get(digest)
            if found is None:
                return None
            if self._now() >= found[0]:
                del self._items[digest]
                return None
            return found[1]

    def put(self, digest: bytes, principal: Principal) -> None:
        """Keep ``principal`` for ``ttl`` seconds."""
        with self._lock:
            if len(self._items) >= self.size:
                for old in list(self._items)[: self.size // 2]:  # insertion order: oldest
                    del self._items[old]
            self._items[digest] = (self._now() + self.ttl, principal)

    def drop(self, digest: bytes) -> None:
        """Forget ``digest`` (its key was found revoked)."""
        with self._lock:
            self._items.pop(digest, None)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"PrincipalCache({len(self._items)} principals)"


def bearer_of(request: Request) -> str | None:
    """The bearer token of the request, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_key(state: ApiState, bearer: str, scope: str) -> tuple[Principal | None, float]:
    """The principal of ``bearer`` and the seconds to wait for its bucket's token (0: go on);
    (None, 0) for a bad or revoked key, (principal, 0) without a token taken if the key lacks
    ``scope``. Sync: runs in a worker thread."""
    limiter = state.limiter
    cache: PrincipalCache | None = state.principals if limiter.checks_revocation else None
    digest = PrincipalCache.digest(bearer) if cache is not None else b""
    principal = cache.get(digest) if cache is not None else None
    cached = principal is not None
    if principal is None or scope not in principal.scopes:
        principal = state.container.api_keys.authenticate(bearer)  # the ledger's word
        cached = False
        if principal is None or scope not in principal.scopes:
            if principal is None and cache is not None:
                cache.drop(digest)
            return principal, 0.0
    wait = limiter.take_live(principal.key_id, principal.rate_per_second, principal.burst)
    if wait is None:  # revoked (the Redis set): refused from this request on
        if cache is not None:
            cache.drop(digest)
        return None, 0.0
    if cache is not None and not cached:
        cache.put(digest, principal)
    return principal, wait


async def authorize(request: Request, scope: str) -> Principal:
    """The caller's principal, holding ``scope``, within its rate limit; else ApiError
    401 ``unauthorized``, 403 ``forbidden`` or 429 ``rate_limited``. The key check and the
    token take run in one worker thread (one hop off the event loop)."""
    state: ApiState = request.app.state.api
    token = bearer_of(request)
    if token is None:
        raise unauthorized()
    principal, wait = await run_in_threadpool(check_key, state, token, scope)
    del token
    if principal is None:
        raise unauthorized()
    if scope not in principal.scopes:
        raise forbidden(scope)
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            "this key is over its rate limit; retry after the Retry-After seconds",
            {"Retry-After": retry_after(wait)},
        )
    return principal
