"""KEK epochs (attacker issue part 1): one row per epoch change of the keyring

An epoch change rotates the KEK, re-wraps every live key under the new version and destroys
every older version, which completes the cryptographic erasures pending since the last one. The
row records the new current version (for KMS: the current key's ARN, which every process reads
from here), the versions it destroys, and when the pass started and completed (a row with no
``completed_at`` is a pass that crashed: the next one resumes it).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kek_epochs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("keyring_id", sa.String(length=255), nullable=False),
        sa.Column("kek_version", sa.String(length=255), nullable=False),
        sa.Column("previous_versions", sa.JSON(), nullable=False),
        sa.Column("pending_erasures", sa.Integer(), nullable=False),
        sa.Column("keys_rewrapped", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_kek_epochs_keyring", "kek_epochs", ["keyring_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_kek_epochs_keyring", table_name="kek_epochs")
    op.drop_table("kek_epochs")
