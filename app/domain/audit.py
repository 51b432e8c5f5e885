"""Audit rows: every decision of the app, who attempted what, what we did and why."""

from __future__ import annotations

import logging
from typing import Any

from app.core.db import db
from app.core.models import AuditEntry

log = logging.getLogger(__name__)


def record(
    portal_id: int,
    actor: str,
    attempted: str,
    outcome: str,
    reason: str = "",
    deal_id: str | None = None,
    **details: Any,
) -> AuditEntry:
    """Add an audit row to the current session (the caller commits with its own changes)."""
    entry = AuditEntry(
        portal_id=portal_id,
        deal_id=deal_id,
        actor=actor,
        attempted=attempted,
        outcome=outcome,
        reason=reason,
        details=details,
    )
    db.session.add(entry)
    log.info(
        "audit",
        extra={"portal_id": portal_id, "deal_id": deal_id, "actor": actor, "attempted": attempted, "outcome": outcome},
    )
    return entry
