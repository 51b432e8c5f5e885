"""«Отложено»: a returned deal's move to won is recorded on its postponement (when, and for how much).

Revision ID: 0017
Revises: 0012
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.core.models import UtcDateTime

revision = "0017"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("postponements") as table:
        table.add_column(sa.Column("won_at", UtcDateTime(), nullable=True))
        table.add_column(sa.Column("won_amount", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("postponements") as table:
        table.drop_column("won_amount")
        table.drop_column("won_at")
