"""Task control: notices deduplicated per object, user and day; the last scan's report per portal.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from app.core.models import UtcDateTime

JsonType = sa.JSON().with_variant(JSONB(), "postgresql")

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _portal_fk() -> sa.Column:
    return sa.Column("portal_id", sa.Integer(), sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "task_notices",
        sa.Column("id", sa.Integer(), primary_key=True),
        _portal_fk(),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("deal_id", sa.String(64)),
        sa.Column("task_id", sa.String(64)),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("claim", sa.String(64)),
        sa.Column("claimed_at", UtcDateTime()),
        sa.Column("sent_at", UtcDateTime()),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("portal_id", "key", name="uq_task_notices_portal_key"),
    )
    op.create_index("ix_task_notices_portal_id", "task_notices", ["portal_id"])
    op.create_index("ix_task_notices_status", "task_notices", ["status"])
    op.create_table(
        "task_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        _portal_fk(),
        sa.Column("scanned_at", UtcDateTime(), nullable=False),
        sa.Column("data", JsonType, nullable=False),
        sa.UniqueConstraint("portal_id", name="uq_task_reports_portal"),
    )


def downgrade() -> None:
    op.drop_table("task_reports")
    op.drop_index("ix_task_notices_status", table_name="task_notices")
    op.drop_index("ix_task_notices_portal_id", table_name="task_notices")
    op.drop_table("task_notices")
