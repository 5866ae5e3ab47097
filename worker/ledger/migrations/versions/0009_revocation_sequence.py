"""revocation list sequence numbers (attacker issue part 3)

Every signed ``revocations.json`` of a release carries a sequence number that only grows
(``releases.revocation_seq``, incremented under the release row's lock by each re-signing), so
researchers' ``pull`` and ``verify`` can refuse a rolled-back (older, validly signed) list.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.add_column(
            sa.Column("revocation_seq", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("revocation_seq")
