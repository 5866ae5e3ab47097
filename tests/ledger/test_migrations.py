"""The Alembic migrations build exactly the schema the models declare (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from worker.ledger.db import Database
from worker.ledger.models import Base


def _diff(url: str) -> list[object]:
    db = Database(url)
    db.migrate()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    db.dispose()
    return list(diff)


def test_sqlite_schema_matches_models(tmp_path: Path) -> None:
    assert _diff(f"sqlite:///{tmp_path / 'l.db'}") == []


@pytest.mark.services
def test_postgresql_schema_matches_models(pg_url: str) -> None:
    assert _diff(pg_url) == []


def test_migrations_are_a_single_line(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from worker.ledger.db import alembic_config

    script = ScriptDirectory.from_config(alembic_config(f"sqlite:///{tmp_path / 'x.db'}"))
    assert len(script.get_heads()) == 1


def test_revision_ids_are_the_file_prefixes_and_migrate_skips_a_current_schema(
    tmp_path: Path,
) -> None:
    """``Database.at_head`` reads the newest revision from the file names: hold every
    migration to ``revision == its file's number prefix``, and the head to the newest file."""
    from alembic.script import ScriptDirectory

    from worker.ledger.db import MIGRATIONS, alembic_config

    url = f"sqlite:///{tmp_path / 'h.db'}"
    script = ScriptDirectory.from_config(alembic_config(url))
    for rev in script.walk_revisions():
        assert rev.path is not None
        assert Path(rev.path).name.split("_", 1)[0] == rev.revision
    files = [p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py")]
    assert script.get_current_head() == max(files)
    db = Database(url)
    assert not db.at_head()  # empty database
    db.migrate()
    assert db.at_head() and db.current_revision() == max(files)
    with db.engine.begin() as conn:  # a schema one revision behind is not taken for current
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0009'")
    assert not db.at_head()
    db.dispose()
