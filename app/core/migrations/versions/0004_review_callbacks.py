"""QA review: scheduled client callbacks of refusal cases.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.core.models import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_callbacks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("portal_id", sa.Integer(), sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("refusal_cases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("assignee_id", sa.String(64), nullable=False),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("todo_id", sa.String(64)),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_review_callbacks_portal_id", "review_callbacks", ["portal_id"])
    op.create_index("ix_review_callbacks_case_id", "review_callbacks", ["case_id"])
    op.create_index("ix_review_callbacks_status", "review_callbacks", ["status"])


def downgrade() -> None:
    op.drop_table("review_callbacks")
