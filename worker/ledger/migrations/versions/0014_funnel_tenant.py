"""the research funnel per tenant (issue 17)

``research_funnel`` gains ``tenant`` (String(32), NOT NULL, server default ``'default'``) and
its primary key becomes (tenant, month, outcome, reason): a release restricted to one tenant
(``research release --tenant``) states that tenant's sampling decisions only, not every
tenant's. Counts recorded before this revision belong to the default tenant (they cannot be
told apart: the table never held a job id). The table is rebuilt (a primary key cannot be
altered in place on SQLite); the downgrade sums each (month, outcome, reason) over tenants.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _table(name: str, with_tenant: bool) -> None:
    columns: list[sa.schema.SchemaItem] = [
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
    ]
    key = ["month", "outcome", "reason"]
    if with_tenant:
        columns.insert(
            0, sa.Column("tenant", sa.String(length=32), nullable=False, server_default="default")
        )
        key.insert(0, "tenant")
    op.create_table(name, *columns, sa.PrimaryKeyConstraint(*key, name=f"{name}_pkey"))


def upgrade() -> None:
    _table("research_funnel_v2", with_tenant=True)
    op.execute(
        "INSERT INTO research_funnel_v2 (tenant, month, outcome, reason, count)"
        " SELECT 'default', month, outcome, reason, count FROM research_funnel"
    )
    op.drop_table("research_funnel")
    op.rename_table("research_funnel_v2", "research_funnel")


def downgrade() -> None:
    _table("research_funnel_v1", with_tenant=False)
    op.execute(
        "INSERT INTO research_funnel_v1 (month, outcome, reason, count)"
        " SELECT month, outcome, reason, SUM(count) FROM research_funnel"
        " GROUP BY month, outcome, reason"
    )
    op.drop_table("research_funnel")
    op.rename_table("research_funnel_v1", "research_funnel")
