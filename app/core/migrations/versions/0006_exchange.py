"""Lead exchange: pool lots, claims, duty rota.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.core.models import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _portal_fk() -> sa.Column:
    return sa.Column("portal_id", sa.Integer(), sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "exchange_lots",
        sa.Column("id", sa.Integer(), primary_key=True),
        _portal_fk(),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("pipeline_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("amount", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("department_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("holder_id", sa.String(64)),
        sa.Column("pooled_at", UtcDateTime(), nullable=False),
        sa.Column("taken_at", UtcDateTime()),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("portal_id", "deal_id", name="uq_exchange_lots_portal_deal"),
    )
    op.create_index("ix_exchange_lots_portal_id", "exchange_lots", ["portal_id"])
    op.create_index("ix_exchange_lots_status", "exchange_lots", ["status"])
    op.create_table(
        "exchange_claims",
        sa.Column("id", sa.Integer(), primary_key=True),
        _portal_fk(),
        sa.Column("lot_id", sa.Integer(), sa.ForeignKey("exchange_lots.id", ondelete="CASCADE"), nullable=False),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("manager_id", sa.String(64), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("claimed_at", UtcDateTime(), nullable=False),
        sa.Column("ended_at", UtcDateTime()),
        sa.Column("outcome", sa.String(32)),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    op.create_index("ix_exchange_claims_portal_id", "exchange_claims", ["portal_id"])
    op.create_index("ix_exchange_claims_lot_id", "exchange_claims", ["lot_id"])
    op.create_index("ix_exchange_claims_manager_id", "exchange_claims", ["manager_id"])
    op.create_index("ix_exchange_claims_claimed_at", "exchange_claims", ["claimed_at"])
    op.create_index(
        "uq_exchange_claims_active_deal",
        "exchange_claims",
        ["portal_id", "deal_id"],
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_table(
        "duty_days",
        sa.Column("id", sa.Integer(), primary_key=True),
        _portal_fk(),
        sa.Column("department_id", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("portal_id", "department_id", "day", name="uq_duty_days_portal_dept_day"),
    )
    op.create_index("ix_duty_days_portal_id", "duty_days", ["portal_id"])


def downgrade() -> None:
    op.drop_table("duty_days")
    op.drop_table("exchange_claims")
    op.drop_table("exchange_lots")
