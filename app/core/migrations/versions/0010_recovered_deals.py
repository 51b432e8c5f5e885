"""Deals returned to sales after a false refusal, followed to their end (won or lost, with the amount), and how long
each exchange deal waited before it was claimed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.core.models import UtcDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recovered_deals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("portal_id", sa.Integer(), sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("refusal_cases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("leaker_id", sa.String(64), nullable=False),
        sa.Column("manager_id", sa.String(64), nullable=False),
        sa.Column("returned_at", UtcDateTime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("closed_at", UtcDateTime()),
        sa.Column("amount", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.UniqueConstraint("case_id", name="uq_recovered_deals_case"),
    )
    for column in ("portal_id", "deal_id", "leaker_id", "returned_at", "closed_at"):
        op.create_index(f"ix_recovered_deals_{column}", "recovered_deals", [column])
    with op.batch_alter_table("exchange_claims") as batch:
        batch.add_column(sa.Column("waited_seconds", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("exchange_claims") as batch:
        batch.drop_column("waited_seconds")
    for column in reversed(("portal_id", "deal_id", "leaker_id", "returned_at", "closed_at")):
        op.drop_index(f"ix_recovered_deals_{column}", table_name="recovered_deals")
    op.drop_table("recovered_deals")
