"""Shared steps of the lead exchange tests: a pool user in the portal, routing settings, API calls."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask.testing import FlaskClient

from app.core.db import db
from app.core.models import ExchangeLot, Portal
from app.core.security import Identity, issue_token
from app.domain import exchange
from sandbox.state import Portal as SandboxPortal
from tests.integration.b24 import B24

POOL = 12  # «Биржа лидов», a CRM user that holds pool deals
EXTRA_MANAGERS = tuple(range(20, 40))  # twenty more sales managers for the concurrency test


def add_user(portal: SandboxPortal, user_id: int, first: str, last: str, departments: tuple[int, ...] = (2,)) -> None:
    """A user appears in the portal (copied from a seeded manager)."""
    template = dict(portal.users[2])
    template.update(
        ID=user_id, NAME=first, LAST_NAME=last, UF_DEPARTMENT=list(departments), EMAIL=f"user{user_id}@example.test"
    )
    portal.users[user_id] = template


def add_people(b24: B24) -> None:
    add_user(b24.portal, POOL, "Биржа", "лидов", (1,))
    for user_id in EXTRA_MANAGERS:
        add_user(b24.portal, user_id, "Менеджер", str(user_id))


def configure_exchange(portal: Portal, pipeline: str = "0", **changes: Any) -> None:
    exchange.update_exchange_settings(
        portal, {"pipelines": {pipeline: {"mode": "exchange", "pool_user": str(POOL), **changes}}}
    )
    db.session.commit()


def token(portal_id: int, user_id: int | str, admin: bool = False) -> dict[str, str]:
    return {"X-RC-Token": issue_token(Identity(portal_id=portal_id, user_id=str(user_id), is_admin=admin))}


def responsible(b24: B24, deal_id: int) -> str:
    return str(b24.sandbox.deal(b24.portal, deal_id)["ASSIGNED_BY_ID"])


def lot_of(deal_id: int) -> ExchangeLot:
    db.session.expire_all()
    lot = db.session.scalar(sa.select(ExchangeLot).where(ExchangeLot.deal_id == str(deal_id)))
    assert lot is not None
    return lot


def create_incoming(
    b24: B24,
    creator: int = 2,
    source: str = "WEB",
    amount: str = "150000.00",
    category: str = "0",
    title: str = "Заявка",
) -> int:
    """A request arrives (a manager or a form creates the deal); the app sees it."""
    deal_id = b24.sandbox.act(b24.portal, creator).create_deal(
        TITLE=title,
        CATEGORY_ID=category,
        STAGE_ID="NEW" if category == "0" else f"C{category}:NEW",
        ASSIGNED_BY_ID=creator,
        OPPORTUNITY=amount,
        SOURCE_ID=source,
    )
    b24.settle()
    return deal_id


def open_deals(b24: B24, user_id: int, category: str = "0") -> int:
    status, body = b24.sandbox.call(
        b24.portal,
        "crm.deal.list",
        {"filter": {"ASSIGNED_BY_ID": user_id, "CATEGORY_ID": category, "CLOSED": "N"}, "select": ["ID"]},
    )
    assert status == 200
    return int(body["total"])


def claim(client: FlaskClient, portal_id: int, lot_id: int, user_id: int) -> Any:
    return client.post(f"/api/exchange/lots/{lot_id}/claim", headers=token(portal_id, user_id))
