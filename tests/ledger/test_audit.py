"""The audit log's chain on the embedded ledger (worker/ledger/audit.py): an edited or removed
row is found. The attacker's side (MACs, checkpoints, PostgreSQL) is
tests/attacks/test_audit_tamper.py."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import func, select

from worker.ledger import audit
from worker.ledger.models import AuditEntry


def test_audit_verify_detects_an_edited_row(embedded: Any, astronaut_jpeg: bytes) -> None:
    embedded.client.submit(astronaut_jpeg, "detect", subject_id="subject-g")
    db_path = embedded.settings.home_dir / "ledger.db"
    with embedded.db.session() as s:
        assert audit.verify(s).ok
        rows = s.scalar(select(func.count()).select_from(AuditEntry))
    assert rows and rows >= 4
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE audit_log SET details = '{\"faces\":9}' WHERE seq = 3")
    conn.commit()
    conn.close()
    with embedded.db.session() as s:
        report = audit.verify(s)
    assert not report.ok and report.first_bad_seq == 3
    conn = sqlite3.connect(db_path)
    conn.execute("DELETE FROM audit_log WHERE seq = 2")
    conn.commit()
    conn.close()
    with embedded.db.session() as s:
        assert audit.verify(s).first_bad_seq == 3
