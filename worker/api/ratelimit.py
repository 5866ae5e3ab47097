"""Rate limit per API key: a token bucket, in Redis when the broker is Redis, else in the ledger.

A key holds ``burst`` tokens, refilled at ``rate_per_second``; each request takes one. A request
finding less than one token is refused (429 ``rate_limited``) with the seconds until one is
back (``Retry-After``, rounded up). Both buckets are one atomic step shared by every worker
process: a Lua script in Redis (the server's clock), one ``UPDATE ... WHERE tokens >= 1`` on
``api_rate_buckets`` in the ledger (the callers' clock, epoch seconds).
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from sqlalchemy import case, column, insert, literal, select, table, update
from sqlalchemy.exc import IntegrityError

from worker.ledger.db import Database

_BUCKETS = table("api_rate_buckets", column("key_id"), column("tokens"), column("updated_at"))

_LUA = """
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

    def take(self, key_id: str, rate: float, burst: int) -> float:
        """0 if the request may go on, else the seconds until a token is back."""


def retry_after(wait: float) -> str:
    """The ``Retry-After`` value (whole seconds, at least 1) of a wait."""
    return str(max(1, math.ceil(wait)))


class RedisBuckets:
    """Token buckets in Redis (``facemedia:ratelimit:<key_id>``), one Lua script per take."""

    PREFIX = "facemedia:ratelimit:"

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._script: Any = self._redis.register_script(_LUA)

    def take(self, key_id: str, rate: float, burst: int) -> float:
        """One token of ``key_id``'s bucket (atomic in Redis)."""
        wait = self._script(keys=[self.PREFIX + key_id], args=[repr(float(rate)), int(burst)])
        return float(wait.decode() if isinstance(wait, bytes) else wait)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


class LedgerBuckets:
    """Token buckets in the ledger's ``api_rate_buckets`` (key_id, tokens, updated_at: epoch
    seconds): one conditional UPDATE per take, an INSERT for a key's first request."""

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


def make_limiter(broker_url: str, db: Database) -> RedisBuckets | LedgerBuckets:
    """Redis buckets when the broker is Redis, ledger buckets otherwise."""
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisBuckets(broker_url)
    return LedgerBuckets(db)
