"""Deals put off in «Отложено» with a reason and a return day, and how each stay ended.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.core.models import UtcDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEXED = ("portal_id", "deal_id", "manager_id", "due_date", "postponed_at", "state")


def upgrade() -> None:
    op.create_table(
        "postponements",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("portal_id", sa.Integer(), sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("pipeline_id", sa.String(64), nullable=False),
        sa.Column("manager_id", sa.String(64), nullable=False),
        sa.Column("postponed_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("postponed_at", UtcDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("ended_at", UtcDateTime()),
        sa.Column("ended_how", sa.String(32), nullable=False),
        sa.Column("amount", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
    )
    for column in INDEXED:
        op.create_index(f"ix_postponements_{column}", "postponements", [column])


def downgrade() -> None:
    for column in reversed(INDEXED):
        op.drop_index(f"ix_postponements_{column}", table_name="postponements")
    op.drop_table("postponements")
