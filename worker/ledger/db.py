"""Engine and unit of work for the ledger (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and serialised writers."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
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
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


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
        """Whether the schema's recorded revision is the newest migration's. Revision ids are
        the migration files' number prefixes (a test holds every file to that)."""
        from sqlalchemy.exc import DBAPIError

        head = max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))
        try:
            with self.engine.connect() as conn:
                rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        except DBAPIError:  # no alembic_version table yet: an empty database
            return False
        return [r[0] for r in rows] == [head]

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
