"""Penalties: the append-only ledger of fines and their reversals.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.core.models import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "penalties",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("portal_id", sa.Integer(), sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("manager_id", sa.String(64), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("refusal_cases.id", ondelete="SET NULL")),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("reverses_id", sa.Integer(), sa.ForeignKey("penalties.id")),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("portal_id", "case_id", "kind", name="uq_penalties_portal_case_kind"),
        sa.UniqueConstraint("reverses_id", name="uq_penalties_reverses_id"),
    )
    op.create_index("ix_penalties_portal_id", "penalties", ["portal_id"])
    op.create_index("ix_penalties_manager_id", "penalties", ["manager_id"])
    op.create_index("ix_penalties_created_at", "penalties", ["created_at"])


def downgrade() -> None:
    op.drop_table("penalties")
