"""The ledger's PostgreSQL pool pings a connection only after it sat idle (worker/ledger/db.py
``PING_AFTER_IDLE_S``, HikariCP's rule): no ``SELECT 1`` per transaction on a busy worker (about
seven per job with SQLAlchemy's ``pool_pre_ping``), and a connection the server dropped while it
sat in the pool (a PostgreSQL restart, an idle timeout) is replaced, not handed out."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from worker.ledger import db as ledger_db
from worker.ledger.db import Database


def _pings(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record each ping the pool makes (the dialect's own ping still runs)."""
    seen: list[bool] = []
    real = database.engine.dialect.do_ping

    def counted(conn: Any) -> bool:
        try:
            alive = real(conn)
        except Exception:
            seen.append(False)
            raise
        seen.append(alive)
        return alive

    monkeypatch.setattr(database.engine.dialect, "do_ping", counted)
    return seen


def test_a_busy_pool_does_not_ping(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    database = Database(pg_url)
    try:
        pings = _pings(database, monkeypatch)
        for _ in range(20):
            with database.session() as s:
                assert s.execute(text("SELECT 1")).scalar() == 1
        assert pings == []
    finally:
        database.dispose()


def test_a_connection_dropped_while_idle_is_replaced(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_db, "PING_AFTER_IDLE_S", 0.2)  # read when the engine is made
    database = Database(pg_url)
    try:
        pings = _pings(database, monkeypatch)
        with database.session() as s:
            pid = s.execute(text("SELECT pg_backend_pid()")).scalar()
        # the server drops the pooled connection (what a restart does to every one)
        with psycopg.connect("postgresql://" + pg_url.split("://", 1)[1], autocommit=True) as c:
            assert c.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        time.sleep(0.3)
        with database.session() as s:
            assert s.execute(text("SELECT pg_backend_pid()")).scalar() != pid
        assert pings == [False]  # pinged once, found dead, replaced without an error
    finally:
        database.dispose()
