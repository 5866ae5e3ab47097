"""API keys and the ledger's rate-limit buckets (issue 17)

- ``api_keys``: one row per HTTP API key. Only the SHA-256 of the key text is stored
  (``key_hash``), never the key; the webhook secret that signs the callbacks of the key's jobs is
  stored wrapped by the keyring's KEK (``keyring_id``, ``kek_version``,
  ``wrapped_webhook_secret``) and re-wrapped by every KEK epoch pass. ``tenant`` (indexed),
  ``scopes`` (a JSON list), ``rate_per_second``/``burst`` (NULL: the configured default),
  ``created_at``, ``revoked_at`` (NULL: live).
- ``api_rate_buckets``: the token bucket of one key when the rate limit lives in the ledger (no
  Redis broker): ``tokens`` and ``updated_at`` (Unix seconds, double precision).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("rate_per_second", sa.Double(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column("keyring_id", sa.String(length=255), nullable=False),
        sa.Column("kek_version", sa.String(length=255), nullable=False),
        sa.Column("wrapped_webhook_secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"], unique=False)
    op.create_table(
        "api_rate_buckets",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )


def downgrade() -> None:
    op.drop_table("api_rate_buckets")
    op.drop_index("ix_api_keys_tenant", table_name="api_keys")
    op.drop_table("api_keys")
