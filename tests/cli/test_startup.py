"""``facemedia status`` starts without SQLAlchemy (issue 14, item 6: every command that processes
no media starts in ≤ 0.3 s; figures in docs/BENCHMARKS.md, *CLI start-up*).

It reads the ledger through :func:`worker.ledger.db.quick_reader` (a DB-API connection) and
:func:`worker.jobs.reads.job_status_view_quick`, which must give exactly what the ORM's
:func:`~worker.jobs.reads.job_status_view` gives: compared here row for row on SQLite and on
PostgreSQL. The import guard (no SQLAlchemy, OpenCV, NumPy, Celery... in a ``status`` process)
is not timed; the timing is bench/cli_bench.py's."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cli_process import loaded, run_facemedia
from worker.jobs.errors import JobNotFound
from worker.jobs.reads import JSON_COLUMNS, job_status_view, job_status_view_quick
from worker.ledger.db import QuickReader, quick_reader

# What a status process must not load: the media stack, the broker, the store's SDK, the ORM.
NOT_LOADED = ("cv2", "numpy", "scipy", "av", "celery", "kombu", "boto3", "botocore", "sqlalchemy")


def _jobs(container: Any) -> dict[str, str]:
    """Jobs in every shape the view distinguishes, written through the ORM; name → id."""
    from worker.ledger.models import Job, StoredObject

    subject = container.subjects.ensure("startup-subject")
    t0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    ids = {name: uuid.uuid4().hex for name in ("done", "failed", "queued", "hooked", "tenant_b")}
    rows = [
        Job(
            id=ids["done"],
            subject_id=subject.id,
            job_type="ar",
            params={"effect": "x"},
            status="succeeded",
            deliveries=2,
            retries=1,
            summary={"faces": 2, "kind": "video", "frames": 90, "effects": ["a", "b"]},
            created_at=t0,
            started_at=t0 + timedelta(seconds=1),
            finished_at=t0 + timedelta(seconds=3, microseconds=250000),
            original_deleted_at=t0 + timedelta(seconds=4),
        ),
        Job(
            id=ids["failed"],
            subject_id=subject.id,
            job_type="detect",
            params={},
            status="failed",
            error_code="unsupported_format",
            error_message="not an image",
            summary={"faces": True, "kind": 3, "effects": "nope"},  # odd values: ignored alike
            created_at=t0,
            started_at=t0,
            finished_at=t0,
        ),
        Job(
            id=ids["queued"],
            subject_id=subject.id,
            job_type="detect",
            params={},
            status="queued",
            summary=None,
            created_at=t0,
        ),
        Job(
            id=ids["hooked"],
            subject_id=subject.id,
            job_type="deid",
            params={},
            status="succeeded",
            created_at=t0,
            callback_url="https://example.invalid/hook",
            api_key_id="k" * 16,
            webhook_state="dead",
            webhook_attempts=8,
            webhook_error="http_500",
        ),
        Job(
            id=ids["tenant_b"],
            tenant="tenant-b",
            subject_id=subject.id,
            job_type="detect",
            params={},
            status="queued",
            created_at=t0,
        ),
    ]
    objects = [  # live outputs (out of name order), a deleted one, an original
        ("output", "z.jpg", None),
        ("output", "a.json", None),
        ("output", "gone.jpg", t0),
        ("original", "original", None),
    ]
    with container.db.session() as s:
        s.add_all(rows)
        s.flush()
        for object_class, name, deleted_at in objects:
            s.add(
                StoredObject(
                    id=uuid.uuid4().hex,
                    key=f"outputs/{uuid.uuid4().hex}",
                    object_class=object_class,
                    job_id=ids["done"],
                    name=name,
                    created_at=t0,
                    deleted_at=deleted_at,
                )
            )
    return ids


def _same_answers(container: Any, reader: QuickReader, ids: dict[str, str]) -> None:
    for job_id in [*ids.values(), uuid.uuid4().hex]:
        for tenant in (None, "default", "tenant-b"):
            try:
                expected: Any = job_status_view(container.db, job_id, tenant=tenant)
            except JobNotFound:
                expected = JobNotFound
            try:
                got: Any = job_status_view_quick(reader, job_id, tenant=tenant)
            except JobNotFound:
                got = JobNotFound
            assert got == expected, (job_id, tenant)
    done = job_status_view_quick(reader, ids["done"])
    assert done.outputs == ("a.json", "z.jpg") and done.duration_s == 2.25
    assert done.created_at == "2026-03-01T12:00:00.123456+00:00"
    hooked = job_status_view_quick(reader, ids["hooked"]).to_json()
    assert hooked["webhook"] == {"state": "dead", "attempts": 8, "error": "http_500"}
    # read-only, whatever SQL it is given
    with pytest.raises(Exception, match=r"read-?only"):
        reader.rows("DELETE FROM jobs WHERE id = :job_id", {"job_id": ids["queued"]})
    assert job_status_view(container.db, ids["queued"]).status == "queued"


def test_the_quick_read_answers_as_the_orm_on_sqlite(embedded: Any) -> None:
    ids = _jobs(embedded)
    reader = quick_reader(embedded.settings.effective_database_url)
    assert reader is not None and reader.dialect == "sqlite"
    with reader:
        _same_answers(embedded, reader, ids)


def test_the_quick_read_answers_as_the_orm_on_postgresql(pg_container: Any) -> None:
    ids = _jobs(pg_container)
    reader = quick_reader(pg_container.settings.effective_database_url)
    assert reader is not None and reader.dialect == "postgresql"
    with reader:
        _same_answers(pg_container, reader, ids)


def test_the_quick_read_decodes_each_column_as_the_model_types_it() -> None:
    """The quick read decodes ``jobs`` columns by name (datetimes end in ``_at``/``_until``,
    JSON columns are listed): a new column that breaks the rule fails here."""
    from sqlalchemy import JSON

    from worker.ledger.models import Job, UtcDateTime

    for column in Job.__table__.columns:
        is_time = isinstance(column.type, UtcDateTime)
        assert is_time == column.name.endswith(("_at", "_until")), column.name
        assert isinstance(column.type, JSON) == (column.name in JSON_COLUMNS), column.name


def test_no_quick_reader_where_the_orm_must_go_first(tmp_path: Path, make_settings: Any) -> None:
    """A missing ledger file, a schema behind the newest migration, or an unknown driver: the
    caller goes through ``Database`` (which creates and migrates)."""
    from worker.ledger.db import Database

    missing = tmp_path / "none" / "ledger.db"
    assert quick_reader(f"sqlite:///{missing}") is None
    assert not missing.parent.exists()  # nothing created
    assert quick_reader("sqlite:///:memory:") is None
    assert quick_reader("mysql://x@127.0.0.1/db") is None
    assert quick_reader("postgresql+psycopg://x@127.0.0.1:1/db?not_a_libpq_option=1") is None
    behind = tmp_path / "behind.db"
    db = Database(f"sqlite:///{behind}")
    db.migrate()
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    db.dispose()
    assert quick_reader(f"sqlite:///{behind}") is None
    empty = tmp_path / "empty.db"
    empty.touch()
    assert quick_reader(f"sqlite:///{empty}") is None  # no alembic_version table at all


def test_status_loads_no_orm_and_no_media_stack(embedded: Any, tmp_path: Path) -> None:
    ids = _jobs(embedded)
    home = embedded.settings.home_dir
    embedded.close()  # the ledger as another process left it
    proc, modules = run_facemedia(home, "status", ids["done"], "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads(proc.stdout)
    assert status["status"] == "succeeded" and status["outputs"] == ["a.json", "z.jpg"]
    assert loaded(modules, NOT_LOADED) == []
    assert loaded(modules, ("rich", "structlog", "alembic", "cryptography")) == []
    proc, modules = run_facemedia(home, "status", ids["done"])  # the human form: plain text
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '  outputs           ["a.json", "z.jpg"]' in proc.stdout.splitlines()
    assert loaded(modules, (*NOT_LOADED, "rich")) == []
    proc, modules = run_facemedia(home, "status", ids["tenant_b"], "--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"] == "not_found"
    assert loaded(modules, NOT_LOADED) == []


def test_status_on_a_fresh_home_goes_through_the_orm(tmp_path: Path) -> None:
    """The guard can fail: with no ledger yet, ``status`` builds it (SQLAlchemy, Alembic) and
    answers as before."""
    home = tmp_path / "var"
    proc, modules = run_facemedia(home, "status", "f" * 32, "--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"] == "not_found"
    assert (home / "ledger.db").exists()
    assert "sqlalchemy" in loaded(modules, NOT_LOADED)
    # and the next one reads it quickly
    proc, modules = run_facemedia(home, "status", "f" * 32, "--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"] == "not_found"
    assert loaded(modules, NOT_LOADED) == []


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("crypto", "encrypt", "{src}", "{dst}", "--subject", "s1", "--json"), 0),
        (("research", "verify", "{pulled}", "--json"), 2),  # refused: no signer pinned
    ],
    ids=["crypto-encrypt", "research-verify"],
)
def test_the_other_timed_commands_load_no_media_stack(
    tmp_path: Path, args: tuple[str, ...], code: int
) -> None:
    """The rest of issue 14's timed commands (``--help``, ``audit verify``: tests/unit/
    test_cli_imports.py) on the ORM path still load no media stack, NumPy, Celery or boto3."""
    src = tmp_path / "empty.bin"
    src.write_bytes(b"")
    (tmp_path / "pulled").mkdir()
    paths = {"src": src, "dst": tmp_path / "empty.fme", "pulled": tmp_path / "pulled"}
    proc, modules = run_facemedia(tmp_path / "var", *(a.format(**paths) for a in args))
    assert proc.returncode == code, proc.stderr[-2000:]
    json.loads(proc.stdout)
    assert loaded(modules, tuple(n for n in NOT_LOADED if n != "sqlalchemy")) == []


def test_the_human_form_escapes_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli._common import emit

    emit({"message": "a\x1b[2Jb\nc", "n": 3}, False, "title")
    assert capsys.readouterr().out == "title\n  message  a\\x1b[2Jb\\x0ac\n  n        3\n"
