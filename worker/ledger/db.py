"""Engine and unit of work for the ledger (SQLite embedded, PostgreSQL in production).

SQLAlchemy is imported by the functions that build an engine, not by this module: importing it
(for :class:`Database` as a type, or for :class:`QuickReader`) costs nothing. A
:class:`QuickReader` is a read-only DB-API connection (``sqlite3`` or psycopg) for the few reads
a short command makes (``facemedia status``): SQLAlchemy's import alone is about 0.2 s of a
command's start (docs/BENCHMARKS.md, *CLI start-up*). Each read's SQL lives in one place, the
module that owns the read (:mod:`worker.jobs.reads`), and runs on either connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def head_revision() -> str:
    """The newest migration's revision id: revision ids are the migration files' number
    prefixes (``tests/ledger/test_migrations.py`` holds every file to that)."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def _sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///PATH`` URL ("" for in-memory or no path)."""
    return url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and serialised writers."""
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path and path != ":memory:" and not path.startswith("file:"):
            _private_sqlite_files(Path(path))
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            # Deleted and overwritten content (a destroyed subject key) is zeroed in the file.
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock up front: no lock-upgrade deadlocks between
            # the CLI and worker processes ("database is locked").
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_engine(url, pool_size=5, max_overflow=5)
    _ping_after_idle(engine, PING_AFTER_IDLE_S)
    return engine


#: A pooled PostgreSQL connection idle for longer than this is pinged before it is handed out
#: (HikariCP's ``aliveBypassWindowMs``, 500 ms by default, is the same rule).
PING_AFTER_IDLE_S = 0.5


def _ping_after_idle(engine: Engine, idle_s: float) -> None:
    """Pessimistic disconnect handling without a round trip per transaction: a connection is
    pinged at checkout only when it has sat in the pool for ``idle_s`` or more; a dead one is
    discarded and the pool connects afresh (SQLAlchemy retries the checkout on
    ``DisconnectionError``). SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one
    ``SELECT 1`` per transaction, about seven per job on the spine. A connection reused within
    the window (a busy worker's) is not pinged; one that died in that window fails its statement
    as any outage does, which the job's delivery retries (a transient ledger fault)."""
    import time

    from sqlalchemy import event
    from sqlalchemy.exc import DisconnectionError

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle_s:
            return  # just connected, or back in use within the window
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError("pooled connection is gone") from exc
        if not alive:
            raise DisconnectionError("pooled connection is gone")


def _private_sqlite_files(db_file: Path) -> None:
    """The ledger file is created 0600 (in a 0700 directory if that is missing) before SQLite
    opens it: SQLite creates it with the umask, and its ``-wal``/``-shm``/``-journal`` files copy
    the database file's mode. Existing files are tightened to 0600."""
    from worker.private_files import ensure_private_file, private_dir

    if not db_file.parent.exists():
        private_dir(db_file.parent)
    ensure_private_file(db_file)
    for suffix in ("-wal", "-shm", "-journal"):
        ensure_private_file(db_file.with_name(db_file.name + suffix), create=False)


class Database:
    """Owns the engine and hands out transactional sessions (the unit of work)."""

    def __init__(self, url: str) -> None:
        self.url = url
        from sqlalchemy.orm import sessionmaker

        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (Alembic is imported only when the
        schema is behind: most commands find it current and skip ~0.1 s of imports)."""
        if self.at_head():
            return
        from alembic import command

        command.upgrade(alembic_config(self.url), "head")

    def at_head(self) -> bool:
        """Whether the schema's recorded revision is the newest migration's
        (:func:`head_revision`)."""
        from sqlalchemy.exc import DBAPIError

        try:
            with self.engine.connect() as conn:
                rows = conn.exec_driver_sql(_VERSION_SQL).all()
        except DBAPIError:  # no alembic_version table yet: an empty database
            return False
        return [r[0] for r in rows] == [head_revision()]

    def current_revision(self) -> str | None:
        """The schema's Alembic revision, or None on an empty database."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def checkpoint(self) -> bool:
        """SQLite: copy the ``-wal`` file into the database and truncate it to zero bytes (run
        after destroying keys, so overwritten pages do not linger there). True if complete;
        False if a reader elsewhere kept part of it (the next checkpoint finishes). PostgreSQL:
        nothing to do here (its WAL is covered by the KEK epoch, see docs/ENCRYPTION.md)."""
        if self.dialect != "sqlite":
            return True
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            row = cur.fetchone()
            cur.close()
        finally:
            raw.close()
        return row is None or int(row[0]) == 0

    def reader(self) -> QuickReader:
        """A :class:`QuickReader` on a connection of this engine's pool (``close`` hands it
        back): the reads written for DB-API (the audit walk) run the same SQL here as in a
        command that never imports SQLAlchemy. Each statement reads committed data (SQLite
        autocommit; PostgreSQL a transaction, READ COMMITTED, rolled back at ``close``)."""
        return QuickReader(self.engine.raw_connection(), self.dialect)

    def dispose(self) -> None:
        """Close every pooled connection (after fork, at shutdown)."""
        self.engine.dispose()


def alembic_config(url: str) -> Any:
    """An Alembic config pointing at the packaged migrations and ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


_VERSION_SQL = "SELECT version_num FROM alembic_version"
_NAMED_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class QuickReader:
    """A read-only DB-API connection to the ledger, in one snapshot for its whole life, for a
    short command's few reads without SQLAlchemy's import (:func:`quick_reader` opens one).

    ``rows(sql, params)`` runs SQL written with ``:name`` parameters (SQLAlchemy's ``text()``
    style) and returns the rows as dicts by column name, values as the driver gives them:
    decode them with :func:`utc_datetime` and :func:`json_value`."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self._conn = conn
        self.dialect = dialect

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The rows of one SELECT, each a dict by column name."""
        if self.dialect == "postgresql":  # psycopg's paramstyle is %(name)s
            sql = _NAMED_PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))
        cur = self._conn.cursor()
        try:
            cur.execute(sql, dict(params or {}))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            cur.close()

    def iter_rows(
        self, sql: str, params: Mapping[str, Any] | None = None, batch: int = 2000
    ) -> Iterator[dict[str, Any]]:
        """The rows of one SELECT as :meth:`rows` gives them, streamed ``batch`` at a time
        (PostgreSQL: a server-side cursor, so a long audit log is never held whole)."""
        if self.dialect == "postgresql":
            sql = _NAMED_PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))
            cur = self._conn.cursor(name=f"quick_{id(self):x}")
        else:
            cur = self._conn.cursor()
        try:
            cur.execute(sql, dict(params or {}))
            names: list[str] | None = None
            while chunk := cur.fetchmany(batch):
                if names is None:
                    names = [d[0] for d in cur.description]
                yield from (dict(zip(names, row, strict=True)) for row in chunk)
        finally:
            cur.close()

    def close(self) -> None:
        """End the snapshot and close the connection."""
        try:
            self._conn.rollback()
        finally:
            self._conn.close()

    def __enter__(self) -> QuickReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quick_reader(url: str) -> QuickReader | None:
    """A :class:`QuickReader` on the ledger at ``url``, or None where the caller must go through
    :class:`Database` instead: an in-memory or missing SQLite file (``Database`` creates it), a
    driver other than ``sqlite3`` or psycopg (or a URL libpq does not take), or a schema that is
    not at the newest migration (``Database.migrate`` brings it there; the quick reads' SQL is
    written for the newest).
    A server that cannot be reached raises the driver's error, as ``Database`` would."""
    conn: Any
    missing: tuple[type[Exception], ...]
    if url.startswith("sqlite"):
        import sqlite3
        from urllib.parse import quote

        path = _sqlite_path(url)
        if not path or path == ":memory:" or path.startswith("file:") or not Path(path).is_file():
            return None
        _private_sqlite_files(Path(path))
        conn = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA query_only=ON")  # read-only, whatever SQL it is given
        reader = QuickReader(conn, "sqlite")
        missing = (sqlite3.OperationalError,)
    elif url.startswith(("postgresql://", "postgresql+psycopg://")):
        import psycopg

        try:
            conn = psycopg.connect("postgresql://" + url.split("://", 1)[1])
        except psycopg.ProgrammingError:  # a URL only SQLAlchemy understands: let it connect
            return None
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        reader = QuickReader(conn, "postgresql")
        missing = (psycopg.errors.UndefinedTable,)
    else:
        return None
    try:
        at_head = [r["version_num"] for r in reader.rows(_VERSION_SQL)] == [head_revision()]
    except missing:  # no alembic_version table: an empty database
        at_head = False
    except BaseException:
        reader.close()
        raise
    if not at_head:
        reader.close()
        return None
    if reader.dialect == "sqlite":  # one snapshot for every read that follows
        conn.execute("BEGIN")
    return reader


def utc_datetime(value: Any) -> datetime | None:
    """A ``UtcDateTime`` column's value as read over DB-API: an aware UTC datetime (SQLite
    gives the stored text, naive UTC; psycopg an aware datetime), None for NULL."""
    if value is None:
        return None
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def json_value(value: Any) -> Any:
    """A ``JSON`` column's value as read over DB-API (SQLite gives its text, psycopg the
    decoded value)."""
    return json.loads(value) if isinstance(value, str | bytes) else value
