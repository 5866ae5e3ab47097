"""authenticated audit log and hold reason codes (attacker issue part 4)

- ``audit_log.mac``: HMAC-SHA256 of the entry under the audit key (a service secret held only
  wrapped by the KEK); rows written before this revision keep NULL and verify reports them as
  legacy.
- ``audit_checkpoints``: the ledger's memory of the checkpoints written to the object store.
- ``subjects.hold_note`` / ``jobs.hold_note``: an optional note on a legal hold, sealed under the
  subject's key (erasure shreds it).
- Hold reasons become codes: a ``hold_reason`` that is not one of the codes is set to NULL (the
  free text is dropped, never guessed into a code), and the free-text ``reason`` of earlier
  ``hold.set`` / ``hold.released`` audit entries is replaced by its code or null. The legacy
  (unauthenticated) chain is then re-hashed from the first redacted row; nothing authenticated or
  checkpointed exists before this revision, so no earlier guarantee is broken.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 05:30:00
"""

import hashlib
import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of worker.retention.holds.HoldReason at this revision.
CODES = (
    "litigation",
    "court_order",
    "regulator_request",
    "law_enforcement",
    "contract_dispute",
    "security_incident",
)
GENESIS = "0" * 64


def _digest(prev: str, seq: int, ts: str, event: str, entity: str | None, details: str) -> str:
    body = json.dumps([seq, ts, event, entity, details], separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


def _redact_audit(conn: sa.Connection) -> None:
    log = sa.table(
        "audit_log",
        sa.column("seq", sa.Integer()),
        sa.column("ts", sa.String()),
        sa.column("event", sa.String()),
        sa.column("entity", sa.String()),
        sa.column("details", sa.Text()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
    )
    first = conn.execute(
        sa.select(sa.func.min(log.c.seq)).where(
            log.c.event.in_(("hold.set", "hold.released")), log.c.details.like('%"reason":%')
        )
    ).scalar()
    if first is None:
        return
    prev_row = conn.execute(sa.select(log.c.hash).where(log.c.seq == first - 1)).first()
    prev = GENESIS if prev_row is None else str(prev_row[0])
    last_seq = first - 1
    while True:
        rows = conn.execute(
            sa.select(log).where(log.c.seq > last_seq).order_by(log.c.seq).limit(1000)
        ).all()
        if not rows:
            break
        for row in rows:
            details = row.details
            if row.event in ("hold.set", "hold.released"):
                data = json.loads(details)
                if "reason" in data:
                    reason = data["reason"]
                    data["reason"] = reason if reason in CODES else None
                    details = json.dumps(data, sort_keys=True, separators=(",", ":"))
            digest = _digest(prev, row.seq, row.ts, row.event, row.entity, details)
            conn.execute(
                sa.update(log)
                .where(log.c.seq == row.seq)
                .values(details=details, prev_hash=prev, hash=digest)
            )
            prev = digest
            last_seq = row.seq


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch_op:
        batch_op.add_column(sa.Column("mac", sa.String(length=64), nullable=True))
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    for table in ("subjects", "jobs"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("hold_note", sa.LargeBinary(), nullable=True))
        t = sa.table(table, sa.column("hold_reason", sa.Text()))
        op.execute(
            sa.update(t)
            .where(t.c.hold_reason.is_not(None), t.c.hold_reason.not_in(CODES))
            .values(hold_reason=None)
        )
    _redact_audit(op.get_bind())


def downgrade() -> None:
    for table in ("jobs", "subjects"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("hold_note")
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("audit_log") as batch_op:
        batch_op.drop_column("mac")
