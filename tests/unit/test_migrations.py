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
