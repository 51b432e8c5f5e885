"""Guard: deal snapshots, refusal cases and their timeline, effects ledger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from app.core.models import UtcDateTime

JsonType = sa.JSON().with_variant(JSONB(), "postgresql")

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _portal_fk() -> sa.Column:
    return sa.Column("portal_id", sa.Integer(), sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "deal_snapshots",
        sa.Column("id", sa.Integer(), primary_key=True),
        _portal_fk(),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("pipeline_id", sa.String(64), nullable=False),
        sa.Column("stage_id", sa.String(64), nullable=False),
        sa.Column("stage_semantics", sa.String(16), nullable=False),
        sa.Column("responsible_id", sa.String(64), nullable=False),
        sa.Column("refusal_reason", sa.String(64)),
        sa.Column("refusal_comment", sa.Text(), nullable=False),
        sa.Column("modified_at", UtcDateTime()),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("portal_id", "deal_id", name="uq_deal_snapshots_portal_deal"),
    )
    op.create_index("ix_deal_snapshots_portal_id", "deal_snapshots", ["portal_id"])
    op.create_table(
        "refusal_cases",
        sa.Column("id", sa.Integer(), primary_key=True),
        _portal_fk(),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("deal_title", sa.String(255), nullable=False),
        sa.Column("pipeline_id", sa.String(64), nullable=False),
        sa.Column("manager_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("amount", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("qa_user_id", sa.String(64)),
        sa.Column("qa_task_id", sa.String(64)),
        sa.Column("previous_stage_id", sa.String(64), nullable=False),
        sa.Column("review_due_at", UtcDateTime()),
        sa.Column("opened_at", UtcDateTime(), nullable=False),
        sa.Column("closed_at", UtcDateTime()),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_refusal_cases_portal_id", "refusal_cases", ["portal_id"])
    op.create_index("ix_refusal_cases_deal_id", "refusal_cases", ["deal_id"])
    op.create_index("ix_refusal_cases_manager_id", "refusal_cases", ["manager_id"])
    op.create_index("ix_refusal_cases_state", "refusal_cases", ["state"])
    op.create_index(
        "uq_refusal_cases_open_deal",
        "refusal_cases",
        ["portal_id", "deal_id"],
        unique=True,
        sqlite_where=sa.text("closed_at IS NULL"),
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    op.create_table(
        "case_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        _portal_fk(),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("refusal_cases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("state_after", sa.String(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_case_events_portal_id", "case_events", ["portal_id"])
    op.create_index("ix_case_events_case_id", "case_events", ["case_id"])
    op.create_table(
        "effects",
        sa.Column("id", sa.Integer(), primary_key=True),
        _portal_fk(),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", JsonType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", sa.String(255), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("done_at", UtcDateTime()),
        sa.UniqueConstraint("portal_id", "key", name="uq_effects_portal_key"),
    )
    op.create_index("ix_effects_portal_id", "effects", ["portal_id"])
    op.create_index("ix_effects_deal_id", "effects", ["deal_id"])
    op.create_index("ix_effects_status", "effects", ["status"])


def downgrade() -> None:
    op.drop_table("effects")
    op.drop_table("case_events")
    op.drop_table("refusal_cases")
    op.drop_table("deal_snapshots")
