"""``facemedia audit verify`` and ``facemedia crypto encrypt`` (of a known subject) without
SQLAlchemy (issue 14, item 6): the audit walk, the checkpoint records, the audit key, the
pseudonym secret, the subject and its key are read over DB-API
(:class:`~worker.ledger.db.QuickReader`).

The quick reads are the same code as the service's: ``Checkpointer.verify`` runs
:func:`~worker.ledger.checkpoints.verify_log` on a pooled connection, the CLI on a bare driver
connection. Held here: a tampered ledger is caught alike over both, on SQLite and PostgreSQL;
the quick subject read answers only the plain case (a known, live subject) and leaves every
other one (new, pending erasure) to the registry; what the quick path encrypts decrypts through
the container. The process-level guard (no SQLAlchemy loaded) is in tests/cli/test_startup.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.cli_process import loaded, run_facemedia
from worker.ledger import audit
from worker.ledger.checkpoints import verify_log
from worker.ledger.db import QuickReader, quick_reader
from worker.ledger.quick_reads import QuickSubjectKeyStore, live_subject_key_id
from worker.objects.layout import CHECKPOINTS

NOT_LOADED = ("sqlalchemy", "alembic", "cv2", "numpy", "scipy", "av", "celery", "boto3")


def _some_history(container: Any, entries: int = 5) -> None:
    """Audit entries through the ORM, then the checkpoint a unit of work ends with."""
    container.subjects.ensure("quick-subject")
    with container.db.session() as s:
        for n in range(entries):
            audit.append(s, "test.event", f"e{n}", n=n)
    container.checkpoint()


def _quick(url: str) -> QuickReader:
    reader = quick_reader(url)
    assert reader is not None
    return reader


def _quick_verify(container: Any) -> audit.AuditReport:
    url = container.settings.effective_database_url
    return verify_log(lambda: _quick(url), container.store, container.audit_auth, CHECKPOINTS)


@pytest.mark.parametrize("ledger", ["sqlite", "postgresql"])
def test_the_quick_verify_answers_as_the_service(
    ledger: str, embedded: Any, pg_container: Any
) -> None:
    container = embedded if ledger == "sqlite" else pg_container
    _some_history(container)
    quick = _quick_verify(container)
    assert quick.ok and quick.rows >= 6 and quick.checkpoint_seq == quick.head_seq
    assert quick == container.checkpoints.verify()
    # an edited row: the hash no longer matches, over either connection
    with container.db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_log SET details = '{\"n\":99}' WHERE seq = 3")
    quick = _quick_verify(container)
    assert not quick.ok and [p.code for p in quick.problems] == ["hash_mismatch"]
    assert quick == container.checkpoints.verify()
    # the newest rows deleted: the checkpoint in the store names a head the ledger lacks
    with container.db.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_log WHERE seq >= 5")
    quick = _quick_verify(container)
    assert "truncated" in {p.code for p in quick.problems}
    assert quick == container.checkpoints.verify()


def test_the_walk_streams_a_long_log_in_order(pg_container: Any) -> None:
    """More rows than one fetch (the server-side cursor's batches) walk as one chain."""
    _some_history(pg_container, entries=40)
    reader = _quick(pg_container.settings.effective_database_url)
    with reader:
        seqs = [row["seq"] for row in reader.iter_rows(audit.ENTRIES_SQL, batch=7)]
        state = audit.walk_rows(reader, pg_container.audit_auth)
    assert seqs == sorted(seqs) and len(seqs) == state.rows >= 41
    assert state.problems == () and state.head_seq == seqs[-1]


def test_the_quick_subject_read_answers_only_the_plain_case(embedded: Any) -> None:
    ref = embedded.subjects.ensure("known")
    pending = embedded.subjects.ensure("leaving")
    with embedded.db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE subjects SET erase_requested_at = CURRENT_TIMESTAMP WHERE id = ?",
            (pending.id,),
        )
    with _quick(embedded.settings.effective_database_url) as reader:
        assert live_subject_key_id(reader, embedded.keyring, "known") == ref.key_id
        assert live_subject_key_id(reader, embedded.keyring, "known", "tenant-b") is None
        assert live_subject_key_id(reader, embedded.keyring, "never-seen") is None
        assert live_subject_key_id(reader, embedded.keyring, "leaving") is None
        store = QuickSubjectKeyStore(reader)
        assert store.get(ref.key_id) == embedded.subject_keys.store.get(ref.key_id)
        with pytest.raises(Exception, match="read-only"):
            store.destroy(ref.key_id)
    embedded.subject_keys.destroy(ref.key_id)
    with _quick(embedded.settings.effective_database_url) as reader:
        from worker.crypto import KeyShreddedError

        with pytest.raises(KeyShreddedError):
            QuickSubjectKeyStore(reader).get(ref.key_id)


def test_no_pseudonym_secret_yet_means_the_registry_decides(embedded: Any) -> None:
    embedded.db.migrate()  # a ledger with no subject ever recorded: no pseudonym secret
    with _quick(embedded.settings.effective_database_url) as reader:
        assert live_subject_key_id(reader, embedded.keyring, "anyone") is None


def test_the_cli_verifies_and_encrypts_without_the_orm(embedded: Any, tmp_path: Path) -> None:
    _some_history(embedded)
    home = embedded.settings.home_dir
    embedded.close()  # the ledger as another process left it
    proc, modules = run_facemedia(home, "audit", "verify", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"ok": true' in proc.stdout
    assert loaded(modules, NOT_LOADED) == []
    src, dst = tmp_path / "in.bin", tmp_path / "out.fme"
    src.write_bytes(b"quick path bytes")
    proc, modules = run_facemedia(
        home, "crypto", "encrypt", str(src), str(dst), "--subject", "quick-subject", "--json"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert loaded(modules, NOT_LOADED) == []
    assert b"quick path bytes" not in dst.read_bytes()
    back = tmp_path / "back.bin"
    proc, _ = run_facemedia(
        home, "crypto", "decrypt", str(dst), str(back), "--subject", "quick-subject"
    )
    assert proc.returncode == 0 and back.read_bytes() == b"quick path bytes"
    # a subject never seen: the registry creates it (the ORM loads), and it decrypts
    proc, modules = run_facemedia(
        home, "crypto", "encrypt", str(src), str(dst), "--subject", "new-one", "--json"
    )
    assert proc.returncode == 0 and "sqlalchemy" in loaded(modules, NOT_LOADED)
    # a tampered audit row fails the command (exit 1), still without the ORM
    with sqlite3.connect(home / "ledger.db") as conn:
        conn.execute("UPDATE audit_log SET event = 'forged' WHERE seq = 2")
    proc, modules = run_facemedia(home, "audit", "verify", "--json")
    assert proc.returncode == 1 and "hash_mismatch" in proc.stdout
    assert loaded(modules, NOT_LOADED) == []


def test_the_cli_refuses_a_pending_erasure_through_the_registry(
    embedded: Any, tmp_path: Path
) -> None:
    ref = embedded.subjects.ensure("leaving")
    with embedded.db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE subjects SET erase_requested_at = CURRENT_TIMESTAMP WHERE id = ?", (ref.id,)
        )
    home = embedded.settings.home_dir
    embedded.close()
    src = tmp_path / "in.bin"
    src.write_bytes(b"x")
    proc, _ = run_facemedia(
        home,
        "crypto",
        "encrypt",
        str(src),
        str(tmp_path / "o.fme"),
        "--subject",
        "leaving",
        "--json",
    )
    assert proc.returncode == 2 and '"error": "subject_erased"' in proc.stdout
    assert not (tmp_path / "o.fme").exists()
