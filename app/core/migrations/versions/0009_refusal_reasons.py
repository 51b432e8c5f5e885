"""Refusal reasons owned by the company: one row per reason and portal (Russian and English names, order,
retired flag, the CRM field's item id). The seven reasons of the fixed list are seeded for every existing portal
under their historic codes, with the item ids the installer recorded, so existing deals and cases keep decoding.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from app.core.models import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The fixed list as it was in app/domain/catalog.py at this revision (a migration never imports product code
# that may change later).
SEED: tuple[tuple[str, str, str], ...] = (
    ("not_interested", "Клиент не хочет", "Client does not want it"),
    ("price", "Дорого", "Price too high"),
    ("bought_elsewhere", "Купил в другом месте", "Bought elsewhere"),
    ("unavailable", "Товар недоступен", "Product unavailable"),
    ("no_budget", "Нет бюджета", "No budget"),
    ("not_relevant", "Неактуально", "No longer relevant"),
    ("other", "Другое", "Other"),
)


def _item_ids(settings: Any) -> dict[str, str]:
    """{code: the CRM item id} the installer stored for the reason field (Bitrix24 or amoCRM)."""
    if not isinstance(settings, dict):
        return {}
    for key in ("b24_fields", "amo_fields"):
        fields = settings.get(key)
        if isinstance(fields, dict) and isinstance(fields.get("refusal_reason"), dict):
            enum = fields["refusal_reason"].get("enum")
            if isinstance(enum, dict):
                return {str(code): str(item) for code, item in enum.items()}
    return {}


def upgrade() -> None:
    table = op.create_table(
        "refusal_reasons",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("portal_id", sa.Integer(), sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name_ru", sa.String(255), nullable=False),
        sa.Column("name_en", sa.String(255), nullable=False),
        sa.Column("sort", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("retired", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("crm_item_id", sa.String(64)),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("portal_id", "code", name="uq_refusal_reasons_portal_code"),
    )
    op.create_index("ix_refusal_reasons_portal_id", "refusal_reasons", ["portal_id"])
    bind = op.get_bind()
    portals = sa.table("portals", sa.column("id", sa.Integer()), sa.column("settings", sa.JSON()))
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    rows = []
    for portal_id, settings in bind.execute(sa.select(portals.c.id, portals.c.settings)).all():
        items = _item_ids(settings)
        for index, (code, ru, en) in enumerate(SEED):
            rows.append(
                {
                    "portal_id": portal_id,
                    "code": code,
                    "name_ru": ru,
                    "name_en": en,
                    "sort": (index + 1) * 10,
                    "retired": False,
                    "crm_item_id": items.get(code),
                    "created_at": now,
                    "updated_at": now,
                }
            )
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.drop_index("ix_refusal_reasons_portal_id", table_name="refusal_reasons")
    op.drop_table("refusal_reasons")
