"""ABC qualification: each deal's class, its outcome and last activity (reports by class, the A-idle notice).

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.core.models import UtcDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deal_classes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("portal_id", sa.Integer(), sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("abc_class", sa.String(1), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("pipeline_id", sa.String(64), nullable=False),
        sa.Column("responsible_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("classified_at", UtcDateTime()),
        sa.Column("closed_at", UtcDateTime()),
        sa.Column("last_activity_at", UtcDateTime()),
        sa.Column("idle_notified_for", UtcDateTime()),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("portal_id", "deal_id", name="uq_deal_classes_deal"),
    )
    op.create_index("ix_deal_classes_portal_id", "deal_classes", ["portal_id"])
    op.create_index("ix_deal_classes_classified_at", "deal_classes", ["classified_at"])


def downgrade() -> None:
    op.drop_index("ix_deal_classes_classified_at", table_name="deal_classes")
    op.drop_index("ix_deal_classes_portal_id", table_name="deal_classes")
    op.drop_table("deal_classes")
