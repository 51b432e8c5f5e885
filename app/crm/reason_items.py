"""The refusal reasons' CRM items as the app stored them: the one query both adapters decode reasons with."""

from __future__ import annotations

import sqlalchemy as sa

from app.core.db import db
from app.core.models import RefusalReason


def stored_reason_items(portal_id: int) -> list[tuple[str, str]]:
    """(reason code, CRM item id) of the portal's reasons that have an item in the CRM field."""
    rows = db.session.execute(
        sa.select(RefusalReason.code, RefusalReason.crm_item_id).where(
            RefusalReason.portal_id == portal_id, RefusalReason.crm_item_id.is_not(None)
        )
    ).all()
    return [(str(code), str(item)) for code, item in rows]
