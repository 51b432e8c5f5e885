"""Scheduled report deliveries: one row per portal, period and head, so each report goes out once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.core.models import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("portal_id", sa.Integer(), sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("period_key", sa.String(32), nullable=False),
        sa.Column("head_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime()),
        sa.UniqueConstraint("portal_id", "period_key", "head_id", name="uq_report_deliveries_portal_period_head"),
    )
    op.create_index("ix_report_deliveries_portal_id", "report_deliveries", ["portal_id"])


def downgrade() -> None:
    op.drop_table("report_deliveries")
