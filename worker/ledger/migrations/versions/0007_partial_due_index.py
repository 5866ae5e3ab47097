"""due index on live objects only (a deleted row leaves it)

The sweep stamps every object it deletes; with ``(deleted_at, expires_at)`` each stamp also wrote
a new entry into this index, and the index kept every deleted row for ever. Partial on
``deleted_at IS NULL`` it holds only what is still to delete, and a stamp only removes from it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 07:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_objects_due", table_name="objects")
    op.create_index(
        "ix_objects_live_due",
        "objects",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL"),
        sqlite_where=sa.text("deleted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_objects_live_due", table_name="objects")
    op.create_index("ix_objects_due", "objects", ["deleted_at", "expires_at"], unique=False)
