"""Importable helpers for tests (RQ workers import job functions by name)."""

from __future__ import annotations

from app.core.db import db
from app.core.models import Portal

CALLS: list[str] = []


def always_fails(label: str) -> None:
    """A job that fails every time."""
    CALLS.append(label)
    raise RuntimeError(f"boom {label}")


def remember(label: str) -> str:
    """A job that records that it ran."""
    CALLS.append(label)
    return label


def make_portal(external_id: str = "member-a", crm: str = Portal.BITRIX24, **fields: object) -> Portal:
    """Create and commit a portal row."""
    portal = Portal(
        crm=crm,
        external_id=external_id,
        domain=fields.pop("domain", f"{external_id}.bitrix24.test"),
        rest_base=fields.pop("rest_base", f"https://{external_id}.bitrix24.test/rest/"),
        settings=fields.pop("settings", {}),
        **fields,
    )
    db.session.add(portal)
    db.session.commit()
    return portal


def tick() -> None:
    """A periodic job body for tests."""
    CALLS.append("tick")


def deferred(retry_after: float) -> None:
    """A job whose portal is at its rate limit: it asks to be put back for `retry_after` seconds."""
    from app.core.queue import JobDeferred

    error = JobDeferred("at the limit")
    error.retry_after = retry_after
    raise error
