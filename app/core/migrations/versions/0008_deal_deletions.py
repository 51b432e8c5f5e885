"""Deleted deals: what the deal looked like (title, amount, currency, source, CPL on the snapshot) and one row per
deletion with who deleted it and when.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.core.models import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SNAPSHOT_COLUMNS = ("title", "amount", "currency", "source_id", "cpl")


def _snapshot_columns() -> list[sa.Column]:
    return [
        sa.Column("title", sa.String(255), nullable=False, server_default=""),
        sa.Column("amount", sa.String(32), nullable=False, server_default="0"),
        sa.Column("currency", sa.String(8), nullable=False, server_default=""),
        sa.Column("source_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("cpl", sa.String(32)),
    ]


def upgrade() -> None:
    with op.batch_alter_table("deal_snapshots") as batch:
        for column in _snapshot_columns():
            batch.add_column(column)
    op.create_table(
        "deal_deletions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("portal_id", sa.Integer(), sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("deleted_by", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("violation", sa.Boolean(), nullable=False),
        sa.Column("known", sa.Boolean(), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("amount", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("pipeline_id", sa.String(64), nullable=False),
        sa.Column("stage_id", sa.String(64), nullable=False),
        sa.Column("responsible_id", sa.String(64), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("refusal_cases.id", ondelete="SET NULL")),
        sa.Column("penalty_id", sa.Integer(), sa.ForeignKey("penalties.id", ondelete="SET NULL")),
        sa.Column("deleted_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("portal_id", "deal_id", name="uq_deal_deletions_portal_deal"),
    )
    op.create_index("ix_deal_deletions_portal_id", "deal_deletions", ["portal_id"])
    op.create_index("ix_deal_deletions_deleted_at", "deal_deletions", ["deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_deal_deletions_deleted_at", table_name="deal_deletions")
    op.drop_index("ix_deal_deletions_portal_id", table_name="deal_deletions")
    op.drop_table("deal_deletions")
    with op.batch_alter_table("deal_snapshots") as batch:
        for name in reversed(SNAPSHOT_COLUMNS):
            batch.drop_column(name)
