"""Moves refused for missing fields (app.domain.requirements), counted from the audit trail for the reports.

Kept apart from the rule itself so the reports can count them without importing the guard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry

ATTEMPTED = "enter stage"
OUTCOME = "reverted"


def refusal_counts(portal_id: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Moves refused for missing fields in [start, end): one row per manager and stage, the most refused
    first, with how often each field was missing (`fields`: {label: count}, most often first)."""
    rows = db.session.scalars(
        sa.select(AuditEntry).where(
            AuditEntry.portal_id == portal_id,
            AuditEntry.attempted == ATTEMPTED,
            AuditEntry.outcome == OUTCOME,
            AuditEntry.created_at >= start,
            AuditEntry.created_at < end,
        )
    )
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        details = row.details or {}
        manager = str(details.get("manager_id") or row.actor)
        stage_id = str(details.get("stage_id") or "")
        entry = grouped.setdefault(
            (manager, stage_id),
            {"manager_id": manager, "stage_id": stage_id, "pipeline_id": str(details.get("pipeline_id") or ""),
             "count": 0, "fields": {}},
        )  # fmt: skip
        entry["count"] += 1
        for label in details.get("missing_labels") or details.get("missing") or []:
            entry["fields"][str(label)] = entry["fields"].get(str(label), 0) + 1
    result = sorted(grouped.values(), key=lambda item: (-item["count"], item["manager_id"], item["stage_id"]))
    for item in result:
        item["fields"] = dict(sorted(item["fields"].items(), key=lambda pair: (-pair[1], pair[0])))
    return result


def refusals_by_manager(portal_id: int, start: datetime, end: datetime) -> dict[str, int]:
    """How many moves each manager had refused for missing fields in [start, end)."""
    counted: dict[str, int] = {}
    for item in refusal_counts(portal_id, start, end):
        counted[item["manager_id"]] = counted.get(item["manager_id"], 0) + item["count"]
    return counted
