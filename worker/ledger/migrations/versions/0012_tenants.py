"""tenants and the HTTP API's job fields (issue 17)

- ``tenant`` (String(32), NOT NULL, server default ``'default'``, indexed) on ``subjects``,
  ``jobs`` and ``audit_log``: every existing row belongs to the default tenant. Audit rows of
  the default tenant hash exactly as before (the tenant enters an entry's hash only when it is
  not ``default``), so the existing chain, its MACs and its checkpoints still verify.
- On ``jobs``: ``idempotency_key`` (unique per tenant), ``api_key_id`` (the submitting key's
  id, never the key), ``callback_url``, and the webhook delivery state ``webhook_state``
  (NULL, ``pending``, ``delivered`` or ``dead``), ``webhook_attempts`` and ``webhook_error``
  (an error code, never a response body), with a partial index on the deliveries still owed
  (``webhook_state = 'pending'``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("subjects", "jobs", "audit_log")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(
                sa.Column("tenant", sa.String(length=32), nullable=False, server_default="default")
            )
            batch_op.create_index(f"ix_{table}_tenant", ["tenant"])
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("api_key_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("webhook_state", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("webhook_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("webhook_error", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ux_jobs_tenant_idempotency", ["tenant", "idempotency_key"], unique=True
        )
        batch_op.create_index(
            "ix_jobs_webhook_pending",
            ["webhook_state"],
            postgresql_where=sa.text("webhook_state = 'pending'"),
            sqlite_where=sa.text("webhook_state = 'pending'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_webhook_pending")
        batch_op.drop_index("ux_jobs_tenant_idempotency")
        for column in (
            "webhook_error",
            "webhook_attempts",
            "webhook_state",
            "callback_url",
            "api_key_id",
            "idempotency_key",
        ):
            batch_op.drop_column(column)
    for table in reversed(_TABLES):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_index(f"ix_{table}_tenant")
            batch_op.drop_column("tenant")
