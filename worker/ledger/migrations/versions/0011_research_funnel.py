"""research funnel (issue 18): aggregate counts of research-sampling decisions

``research_funnel``: one row per (calendar month of the decision, outcome, reason) with the
number of candidate jobs that decision took. No job, subject or sample id is stored: the table
answers "where did the candidates go" for ``research release`` and ``research status`` without
holding anything about a person. Jobs sampled before this revision are not counted.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 08:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "research_funnel",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("month", "outcome", "reason"),
    )


def downgrade() -> None:
    op.drop_table("research_funnel")
