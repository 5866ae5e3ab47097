"""Rate limit per API key: a token bucket, in Redis when the broker is Redis, else in the ledger.

A key holds ``burst`` tokens, refilled at ``rate_per_second``; each request takes one. A request
finding less than one token is refused (429 ``rate_limited``) with the seconds until one is
back (``Retry-After``, rounded up). Both buckets are one atomic step shared by every worker
process: a Lua script in Redis (the server's clock), one ``UPDATE ... WHERE tokens >= 1`` on
``api_rate_buckets`` in the ledger (the callers' clock, epoch seconds).

The Redis script also answers whether the key was revoked (``facemedia:apikeys:revoked``, a set
that :meth:`ApiKeyStore.revoke` adds to through
:func:`~worker.ledger.api_keys.mark_revoked`), in the same round trip: so
the API may keep a key's principal in memory (:mod:`worker.api.auth`) instead of reading the
ledger on every request, and a revocation still refuses the key's very next request.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from sqlalchemy import case, column, insert, literal, select, table, update
from sqlalchemy.exc import IntegrityError

from worker.ledger.api_keys import REVOKED_SET
from worker.ledger.db import Database

_BUCKETS = table("api_rate_buckets", column("key_id"), column("tokens"), column("updated_at"))

_LUA = """
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then
  return 'revoked'
end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RateLimiter(Protocol):
    """Takes one token of a key's bucket."""

    checks_revocation: bool
    """True if :meth:`take_live` learns a revocation at once (Redis), False if the caller must
    read the key's row for that (the ledger buckets)."""

    def take(self, key_id: str, rate: float, burst: int) -> float:
        """0 if the request may go on, else the seconds until a token is back."""

    def take_live(self, key_id: str, rate: float, burst: int) -> float | None:
        """:meth:`take`, or None (no token taken) if the key is known to be revoked."""


def retry_after(wait: float) -> str:
    """The ``Retry-After`` value (whole seconds, at least 1) of a wait."""
    return str(max(1, math.ceil(wait)))


class RedisBuckets:
    """Token buckets in Redis (``facemedia:ratelimit:<key_id>``), one Lua script per take, which
    checks the revoked set first."""

    PREFIX = "facemedia:ratelimit:"
    checks_revocation = True

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._script: Any = self._redis.register_script(_LUA)

    def take(self, key_id: str, rate: float, burst: int) -> float:
        """One token of ``key_id``'s bucket (atomic in Redis); a revoked key waits forever."""
        wait = self.take_live(key_id, rate, burst)
        return math.inf if wait is None else wait

    def take_live(self, key_id: str, rate: float, burst: int) -> float | None:
        """One token of ``key_id``'s bucket, or None if the key is in the revoked set (one
        round trip, atomic in Redis)."""
        got = self._script(
            keys=[self.PREFIX + key_id, REVOKED_SET],
            args=[repr(float(rate)), int(burst), key_id],
        )
        text = got.decode() if isinstance(got, bytes) else str(got)
        return None if text == "revoked" else float(text)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


class LedgerBuckets:
    """Token buckets in the ledger's ``api_rate_buckets`` (key_id, tokens, updated_at: epoch
    seconds): one conditional UPDATE per take, an INSERT for a key's first request. They do not
    know revocations: the API reads the key's row on every request with them."""

    checks_revocation = False

    def __init__(self, db: Database, clock: Any = time.time) -> None:
        self.db = db
        self.clock = clock

    def take(self, key_id: str, rate: float, burst: int) -> float:
        """One token of ``key_id``'s bucket (one atomic UPDATE)."""
        now = float(self.clock())
        tokens, updated = _BUCKETS.c.tokens, _BUCKETS.c.updated_at
        elapsed = case((updated > literal(now), literal(0.0)), else_=literal(now) - updated)
        refill = tokens + elapsed * literal(float(rate))
        level = case((refill > literal(float(burst)), literal(float(burst))), else_=refill)
        with self.db.session() as s:
            done = s.execute(
                update(_BUCKETS)
                .where(_BUCKETS.c.key_id == key_id, level >= literal(1.0))
                .values(tokens=level - literal(1.0), updated_at=literal(now))
            )
            if int(getattr(done, "rowcount", 0) or 0) == 1:
                return 0.0
            current = s.execute(select(level).where(_BUCKETS.c.key_id == key_id)).scalar()
        if current is None:  # the key's first request: a full bucket, less this one
            try:
                with self.db.session() as s:
                    s.execute(
                        insert(_BUCKETS).values(
                            key_id=key_id, tokens=float(burst) - 1.0, updated_at=now
                        )
                    )
                return 0.0
            except IntegrityError:  # another process inserted it first: take from it
                return self.take(key_id, rate, burst)
        return max((1.0 - float(current)) / float(rate), 0.001)

    def take_live(self, key_id: str, rate: float, burst: int) -> float | None:
        """:meth:`take` (revocation is not known here: never None)."""
        return self.take(key_id, rate, burst)


def make_limiter(broker_url: str, db: Database) -> RedisBuckets | LedgerBuckets:
    """Redis buckets when the broker is Redis, ledger buckets otherwise."""
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisBuckets(broker_url)
    return LedgerBuckets(db)
