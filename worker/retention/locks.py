"""A named lock with an expiry, in the ledger: works the same on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, update
from sqlalchemy.exc import IntegrityError

from worker.ledger.db import Database
from worker.ledger.models import Lock


class LedgerLock:
    """``acquire()`` takes the lock if free or expired; a dead holder's lock lapses by itself."""

    def __init__(
        self, db: Database, name: str, ttl: timedelta, clock: Callable[[], datetime]
    ) -> None:
        self.db, self.name, self.ttl, self.clock = db, name, ttl, clock
        self.token = uuid.uuid4().hex

    def acquire(self) -> bool:
        """True if this holder now has the lock."""
        t = self.clock()
        with self.db.session() as s:
            taken = cast(
                CursorResult[Any],
                s.execute(
                    update(Lock)
                    .where(Lock.name == self.name, Lock.expires_at < t)
                    .values(holder=self.token, expires_at=t + self.ttl)
                ),
            ).rowcount
            if taken == 1:
                return True
            if s.get(Lock, self.name) is not None:
                return False
        try:
            with self.db.session() as s:
                s.add(Lock(name=self.name, holder=self.token, expires_at=t + self.ttl))
            return True
        except IntegrityError:  # created concurrently by someone else
            return False

    def renew(self) -> bool:
        """Extend the expiry; False if the lock was lost."""
        with self.db.session() as s:
            return (
                cast(
                    CursorResult[Any],
                    s.execute(
                        update(Lock)
                        .where(Lock.name == self.name, Lock.holder == self.token)
                        .values(expires_at=self.clock() + self.ttl)
                    ),
                ).rowcount
                == 1
            )

    def release(self) -> None:
        """Give the lock up (only if still ours)."""
        with self.db.session() as s:
            s.execute(delete(Lock).where(Lock.name == self.name, Lock.holder == self.token))
